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

import torch

from prefdiff.config import DataConfig, ObjectiveConfig
from prefdiff.models.base import Backbone
from prefdiff.objectives import build_objective
from prefdiff.train.step import StepContext, micro_batch_loss


class _BaseUNetReference:
    """The untuned UNet as the reference of a fully fine-tuned one."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet

    @torch.no_grad()
    def errors(self, backbone, noisy, timesteps, cond, target):  # noqa: ANN001 - Reference protocol
        return backbone.denoising_errors(self.unet, noisy, timesteps, cond, target)


@torch.no_grad()
def implicit_accuracy(
    backbone: Backbone,
    cache_dir: Path,
    data: DataConfig,
    lora: Path | None = None,
    unet: Path | None = None,
    beta: float = 5000.0,
    draws: int = 4,
    batch_size: int = 32,
    seed: int = 1234,
) -> dict[str, float]:
    """``{"implicit_accuracy", "reward_margin", "pairs"}`` of the model given by ``lora`` (loaded
    into ``backbone``'s UNet) or ``unet`` (a tuned UNet directory) against the base, over the
    pairs of ``cache_dir``. Ties (``inside == 0``) count half."""
    from diffusers import UNet2DConditionModel
    from tqdm.auto import tqdm

    from prefdiff.data.cache import CachedPairStream, collate_cached
    from prefdiff.train.reference import AdapterDisabledReference

    if (lora is None) == (unet is None):
        raise ValueError("give exactly one of lora= or unet=")
    if lora is not None:
        pipe = backbone.pipeline()
        pipe.load_lora_weights(str(lora))
        policy = backbone.unet
        reference = AdapterDisabledReference(policy, nullcontext)
    else:
        policy = UNet2DConditionModel.from_pretrained(str(unet)).eval()
        reference = _BaseUNetReference(backbone.unet)
    try:
        objective = build_objective(ObjectiveConfig(name="dpo", beta=beta))
        stream = CachedPairStream(cache_dir, seed, data, backbone)
        size = len(stream)
        inside_sum = torch.zeros(size, dtype=torch.float64)
        bar = tqdm(total=draws * size, desc="implicit accuracy", unit="pair", disable=draws * size <= batch_size)
        for draw in range(draws):
            ctx = StepContext(backbone, objective, reference, seed + draw, data.resolution, torch.device("cpu"))
            for start in range(0, size, batch_size):
                slots = list(range(start, min(size, start + batch_size)))
                batch = collate_cached([stream[s] for s in slots])
                out = micro_batch_loss(ctx, policy, batch)
                inside_sum[start : start + len(slots)] += out.reward_margin_per_pair.double()
                bar.update(len(slots))
        bar.close()
        inside = inside_sum / draws
        accuracy = ((inside > 0).double() + 0.5 * (inside == 0).double()).mean()
    finally:
        if lora is not None:
            pipe.unload_lora_weights()
    return {"implicit_accuracy": float(accuracy), "reward_margin": float(inside.mean()), "pairs": size}
