"""Implicit reward accuracy on held-out labelled pairs (the paper's Table: 72% for DPO-SDXL on
Pick-a-Pic): the fraction of pairs where the tuned model lowers the winner's denoising error,
relative to the base, by more than the loser's, i.e. where DPO's ``inside > 0``.

The pairs come from a latent cache (``prefdiff cache``); each pair is judged over several noise
draws whose DPO ``inside`` terms are averaged before taking the sign, which is closer to the
expectation the implicit reward stands for than one draw is.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from prefdiff.config import Config, DataConfig
from prefdiff.models.base import Backbone, Denoiser
from prefdiff.train.components import build_components
from prefdiff.train.reference import AdapterDisabledReference, ModuleReference, Reference
from prefdiff.train.step import StepContext, micro_batch_loss


def _policy_and_reference(
    backbone: Backbone, lora: Path | None, denoiser: Path | None
) -> tuple[Denoiser, Reference, Any]:
    """The tuned denoiser, the base as its reference, and the pipeline holding a loaded LoRA
    (to unload afterwards; None for a full denoiser)."""
    if lora is not None:
        pipe = backbone.pipeline()
        pipe.load_lora_weights(str(lora))
        return backbone.denoiser, AdapterDisabledReference(backbone.denoiser, nullcontext), pipe
    assert denoiser is not None
    return backbone.load_denoiser(denoiser).eval(), ModuleReference(backbone.denoiser), None


@torch.no_grad()
def implicit_accuracy(
    backbone: Backbone,
    cache_dir: Path,
    data: DataConfig,
    lora: Path | None = None,
    denoiser: Path | None = None,
    beta: float = 5000.0,
    draws: int = 4,
    batch_size: int = 32,
    seed: int = 1234,
    device: str = "auto",
    dtype: str = "fp32",
) -> dict[str, float]:
    """``{"implicit_accuracy", "reward_margin", "pairs"}`` of the model given by ``lora`` (loaded
    into ``backbone``'s denoiser) or ``denoiser`` (a tuned denoiser directory, UNet or transformer)
    against the base, over the pairs of ``cache_dir``, on ``device`` (auto: the GPU when there is
    one; the noise is drawn on the CPU either way). ``dtype`` bf16 or fp16 runs the denoisers
    under autocast (the weights stay fp32; the errors and margins are summed in fp32 and fp64).
    Ties (``inside == 0``) count half."""
    from prefdiff.config import merge_into
    from prefdiff.data.cache import CachedPairStream, collate_cached
    from prefdiff.devices import resolve_device, resolve_dtype

    if (lora is None) == (denoiser is None):
        raise ValueError("give exactly one of lora= or denoiser=")
    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
    autocast = nullcontext() if precision == torch.float32 else torch.autocast(where.type, dtype=precision)
    config = Config()
    merge_into(config, {"objective": {"name": "dpo", "beta": beta}})
    objective = build_components(config, backbone).objective
    policy, reference, pipe = _policy_and_reference(backbone, lora, denoiser)
    try:
        backbone.to(where, torch.float32)
        policy.to(where)
        stream = CachedPairStream(cache_dir, seed, data, backbone)
        with autocast:
            inside = pair_margins(
                backbone,
                objective,
                policy,
                reference,
                stream,
                collate_cached,
                data.resolution,
                draws,
                batch_size,
                seed,
                where,
            )
    finally:
        if pipe is not None:
            pipe.unload_lora_weights()
    return {"implicit_accuracy": accuracy_of(inside), "reward_margin": float(inside.mean()), "pairs": len(inside)}


@torch.no_grad()
def pair_margins(
    backbone: Backbone,
    objective: Any,
    policy: Denoiser,
    reference: Reference,
    stream: Any,
    collate: Any,
    resolution: int,
    draws: int,
    batch_size: int,
    seed: int,
    device: torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """DPO's ``inside`` (``r_w - r_l``) of every pair of the slot-indexed ``stream``, averaged over
    ``draws`` noise draws (draw ``k`` with seed ``seed + k``, so the same pairs always meet the same
    noise): a float64 tensor, one value per pair."""
    from tqdm.auto import tqdm

    size = len(stream)
    inside_sum = torch.zeros(size, dtype=torch.float64)
    bar = tqdm(
        total=draws * size, desc="implicit accuracy", unit="pair", disable=not progress or draws * size <= batch_size
    )
    for draw in range(draws):
        ctx = StepContext(backbone, objective, reference, seed + draw, resolution, device or torch.device("cpu"))
        for start in range(0, size, batch_size):
            slots = list(range(start, min(size, start + batch_size)))
            out = micro_batch_loss(ctx, policy, collate([stream[s] for s in slots]))
            assert out.reward_margin_per_pair is not None
            inside_sum[start : start + len(slots)] += out.reward_margin_per_pair.detach().double().cpu()
            bar.update(len(slots))
    bar.close()
    return inside_sum / draws


def accuracy_of(inside: torch.Tensor) -> float:
    """Share of pairs whose implicit reward prefers the winner (``inside > 0``); ties count half."""
    return float(((inside > 0).double() + 0.5 * (inside == 0).double()).mean())
