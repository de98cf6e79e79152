"""The scale of the denoising errors Diffusion-DPO sees, for choosing a family's beta.

    python benchmarks/toy_error_scale.py runs/quickstart [runs/quickstart_sd3 ...]

For each quickstart directory, over the pairs of its held-out cache (4 noise draws each, the
draws of ``implicit_accuracy``), with the base as reference and the DPO LoRA as policy:

- ``err``: the per-sample error ``e`` (mean over C,H,W of the squared error; epsilon for sd,
  velocity for sd3), of the reference, median over samples;
- ``ref_gap``: ``|e_ref_w - e_ref_l|``, how much two images of one prompt differ in error at
  the same noise draw (the scale of the pair-to-pair noise), median over pairs;
- ``margin``: ``|(e_w - e_ref_w) - (e_l - e_ref_l)|``, the policy-minus-reference difference
  DPO's ``inside = -0.5 beta margin`` is made of, after training (0 at initialisation, where
  the LoRA's up-projection is zero), median over pairs;
- ``inside``: ``0.5 * beta * margin`` with the run's beta: about 1 or more saturates the sigmoid.

The same numbers for a fresh policy of the trained run's LoRA shape are all 0 by construction,
so "at init" is the reference's ``err`` and ``ref_gap``.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class Recorder:
    """Wraps an objective and keeps the per-pair errors it is called with."""

    objective: Any
    errors: list[torch.Tensor]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.objective, name)

    def __call__(
        self,
        policy_w: torch.Tensor,
        policy_l: torch.Tensor,
        ref_w: torch.Tensor,
        ref_l: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """Record the ``[P]`` errors as one ``[P, 4]`` row block, then run the objective."""
        self.errors.append(torch.stack([policy_w, policy_l, ref_w, ref_l], dim=1).double())
        return self.objective(policy_w, policy_l, ref_w, ref_l, labels)


@torch.no_grad()
def error_scale(run: Path, draws: int = 4, seed: int = 1234) -> dict[str, float]:
    """The medians described in the module docstring for the quickstart directory ``run``."""
    from prefdiff.config import Config, merge_into
    from prefdiff.data.cache import CachedPairStream, collate_cached
    from prefdiff.models import load_backbone
    from prefdiff.train.components import build_components
    from prefdiff.train.reference import AdapterDisabledReference
    from prefdiff.train.step import StepContext, micro_batch_loss

    stage = json.loads((run / "dpo" / "stage.json").read_text())["key"]["config"]
    summary = json.loads((run / "summary.json").read_text())
    base = Path(json.loads((run / "pairs" / "stage.json").read_text())["key"]["base"])
    beta = float(stage["objective"]["beta"])
    backbone = load_backbone(base)
    config = Config()
    merge_into(config, {"objective": {"name": "dpo", "beta": beta}, "data": stage["data"]})
    recorder = Recorder(build_components(config, backbone).objective, [])
    pipe = backbone.pipeline()
    pipe.load_lora_weights(str(run / "dpo" / "lora"))
    reference = AdapterDisabledReference(backbone.denoiser, nullcontext)
    stream = CachedPairStream(run / "cache" / "heldout", seed, config.data, backbone)
    for draw in range(draws):
        ctx = StepContext(backbone, recorder, reference, seed + draw, config.data.resolution, torch.device("cpu"))
        for start in range(0, len(stream), 32):
            slots = list(range(start, min(len(stream), start + 32)))
            micro_batch_loss(ctx, backbone.denoiser, collate_cached([stream[s] for s in slots]))
    pipe.unload_lora_weights()
    errors = torch.cat(recorder.errors)  # [pairs * draws, 4]: policy w, policy l, ref w, ref l
    policy_w, policy_l, ref_w, ref_l = errors.unbind(1)
    margin = ((policy_w - ref_w) - (policy_l - ref_l)).abs()
    return {
        "family": summary.get("family", "sd"),
        "beta": beta,
        "err": float(torch.cat([ref_w, ref_l]).median()),
        "ref_gap": float((ref_w - ref_l).abs().median()),
        "margin": float(margin.median()),
        "inside": float(0.5 * beta * margin.median()),
        "policy_change": float(torch.cat([policy_w - ref_w, policy_l - ref_l]).abs().median()),
    }


def main(runs: list[str]) -> None:
    for run in runs:
        print(json.dumps({"run": run, **error_scale(Path(run))}))


if __name__ == "__main__":
    main(sys.argv[1:])
