"""The winner guard (Diffusion-SDPO, Fu et al. 2025, "Safeguarded Direct Preference Optimization
for Diffusion Models"), usable with any paired objective (``objective.winner_guard=true``).

A paired objective's update moves each pair along ``-(a grad e_w - b grad e_l)`` with ``a, b >= 0``
(DPO: ``a = b``). The loser's part can raise the winner's error too, when the two gradients
point the same way. The guard scales the loser's gradient by ``lambda`` so that, to first
order, the winner's error falls by at least ``mu`` of what its own gradient would take off:

    (-grad A + lambda grad B) . grad A <= -mu |grad A|^2
    =>  lambda = min(1, (1 - mu) |grad A|^2 / (grad B . grad A))   when grad B . grad A > 0, else 1

with ``A = e_w``, ``B = e_l``. As in the authors' code the gradients are taken in output space,
with respect to the predictions: ``grad A = 2 r_w / n`` and ``grad B = 2 r_l / n`` with the
residuals ``r = prediction - target`` (the winner and the loser share noise and timestep, so
their outputs live on the same coordinates), hence

    lambda = min(1, (1 - mu) sum(r_w^2) / sum(r_w r_l))

prefdiff computes one ``lambda`` per pair, where the authors' code computes one per micro-batch:
per pair keeps the update independent of how pairs are split into micro-batches and processes
(the accumulation-invariance tests hold with the guard on) and applies the first-order argument
to each pair's own gradients. ``lambda`` changes the loser's gradient only, never a loss value:
``e_l' = e_l.detach() + lambda (e_l - e_l.detach())``.
"""

from __future__ import annotations

import torch


def guard_scale(residual_w: torch.Tensor, residual_l: torch.Tensor, mu: float) -> torch.Tensor:
    """``lambda [P]`` from the residuals ``[P,C,h,w]`` of winners and losers (detached)."""
    r_w = residual_w.detach().float().flatten(1)
    r_l = residual_l.detach().float().flatten(1)
    own = r_w.pow(2).sum(dim=1)  # |grad A|^2 up to the common factor (2/n)^2
    shared = (r_w * r_l).sum(dim=1)  # grad B . grad A, same factor
    capped = (1.0 - mu) * own / shared.clamp_min(torch.finfo(shared.dtype).tiny)
    return torch.where(shared > 0, capped.clamp(0.0, 1.0), torch.ones_like(own))


def scale_gradient(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``values`` unchanged, with their gradient multiplied by ``scale`` (same shape)."""
    frozen = values.detach()
    return frozen + scale.to(values) * (values - frozen)
