"""Diffusion-KTO against values worked by hand, its refusals, and the reference point."""

import pytest
import torch

from prefdiff.models import load_backbone
from prefdiff.objectives.kto import KTOObjective
from prefdiff.train.reference import ModuleReference
from prefdiff.train.step import StepContext, micro_batch_loss, step_reference_point

from .batches import cached_images, cached_pairs

ERR = torch.tensor([0.100, 0.300], dtype=torch.float64)
REF = torch.tensor([0.101, 0.299], dtype=torch.float64)
LABELS = torch.tensor([1.0, 0.0], dtype=torch.float64)


def test_kto_values_worked_by_hand():
    """beta = 2000, e = (0.100, 0.300), e_ref = (0.101, 0.299), desirable then undesirable, z = 0.25.

    r = -0.5 * 2000 * (e - e_ref) = -1000 * (-0.001, 0.001) = (1.0, -1.0)
    u = s (r - z) = (+1 (1.0 - 0.25), -1 (-1.0 - 0.25)) = (0.75, 1.25)
    sigmoid(u) = (0.6791787, 0.7772999); loss = 1 - sigmoid(u) = (0.3208213, 0.2227001), mean 0.2717607
    grad_factor = 0.5 beta s w sigmoid(u)(1 - sigmoid(u)) = (217.8950, -173.1048)
    With undesirable_weight 2: losses (0.3208213, 0.4454002), mean 0.3831108; grad factors
    (217.8950, -346.2096), mean -64.1573.
    """
    z = torch.tensor(0.25)
    out = KTOObjective(beta=2000.0)(ERR, None, REF, None, LABELS, reference_point=z)
    assert out.loss_per_pair.tolist() == pytest.approx([0.3208213, 0.2227001], abs=1e-7)
    assert out.metrics["reward_margin"].item() == pytest.approx(1.0, abs=1e-6)
    assert out.metrics["implicit_acc"].item() == 1.0
    assert out.metrics["reward_desirable"].item() == pytest.approx(1.0, abs=1e-6)
    assert out.metrics["reward_undesirable"].item() == pytest.approx(-1.0, abs=1e-6)
    assert out.metrics["reference_point"].item() == pytest.approx(0.25)
    assert out.metrics["desirable_share"].item() == 0.5
    weighted = KTOObjective(beta=2000.0, undesirable_weight=2.0)(ERR, None, REF, None, LABELS, reference_point=z)
    assert weighted.loss.item() == pytest.approx(0.3831108, abs=1e-7)
    assert weighted.metrics["grad_factor"].item() == pytest.approx(-64.1573, abs=1e-3)


def test_kto_grad_factor_is_the_derivative_and_the_start_is_half():
    """At the reference (e = e_ref, z = 0) every image's loss is w / 2 with gradient factor
    s w beta / 8; away from it grad_factor is d loss / d e by autograd."""
    objective = KTOObjective(beta=300.0, desirable_weight=1.5)
    torch.manual_seed(0)
    err = (torch.rand(8, dtype=torch.float64) * 0.2 + 0.05).requires_grad_(True)
    labels = torch.tensor([1.0, 0.0] * 4, dtype=torch.float64)
    start = objective(err, None, err.detach(), None, labels)
    assert start.loss_per_pair.tolist() == pytest.approx([0.75, 0.5] * 4)
    assert start.metrics["grad_factor"].item() == pytest.approx((1.5 - 1.0) * 300 / 8 / 2)
    ref = err.detach() + 0.01 * torch.randn(8, dtype=torch.float64)
    out = objective(err, None, ref, None, labels, reference_point=torch.tensor(0.3))
    (grad,) = torch.autograd.grad(out.loss_per_pair.sum(), err)
    assert out.metrics["grad_factor"].item() == pytest.approx(grad.mean().item(), rel=1e-6)
    desirable = labels == 1
    assert (grad[desirable] > 0).all() and (grad[~desirable] < 0).all(), "desirable errors are pushed down"


def test_kto_refuses_pairs_soft_labels_and_no_reference():
    objective = KTOObjective()
    with pytest.raises(ValueError, match="takes no loser errors"):
        objective(ERR, ERR, REF, REF, LABELS)
    with pytest.raises(ValueError, match="per-image labels"):
        objective(ERR, None, REF, None, torch.tensor([0.8, 1.0]))
    with pytest.raises(ValueError, match="per-image labels"):
        objective(ERR, None, REF, None, None)
    with pytest.raises(ValueError, match="needs reference errors"):
        objective(ERR, None, None, None, LABELS)


def test_reference_point_is_the_mean_floored_at_zero():
    assert KTOObjective.reference_point_value(torch.tensor(3.0), torch.tensor(4.0)).item() == 0.75
    kl = KTOObjective.reference_point_value(torch.tensor(-3.0), torch.tensor(4.0))
    out = KTOObjective(beta=2000.0)(ERR, None, REF, None, LABELS, reference_point=kl)
    assert out.metrics["kl_estimate"].item() == -0.75 and out.metrics["reference_point"].item() == 0.0
    assert out.loss.item() == pytest.approx(KTOObjective(beta=2000.0)(ERR, None, REF, None, LABELS).loss.item())
    total, count = KTOObjective(beta=2000.0).reference_point(ERR, REF)
    assert (total.item(), count) == (pytest.approx(0.0, abs=1e-9), 2)  # r = +1 and -1


def test_step_reference_point_uses_mismatched_prompts_over_the_whole_step(tiny_sd):
    """The KL estimate from two micro-batches equals mean r over their four images under the
    mismatched prompts, computed directly (the matched prompts would give another value); the
    loss floors it at 0 to make z."""
    backbone = load_backbone(tiny_sd)
    policy = backbone.denoiser
    reference = ModuleReference(load_backbone(tiny_sd).denoiser)
    with torch.no_grad():  # a policy that differs from the reference
        for param in policy.parameters():
            param.add_(0.02 * torch.randn_like(param))
    objective = KTOObjective(beta=50.0)
    ctx = StepContext(backbone, objective, reference, 0, 32, torch.device("cpu"))
    batches = [
        cached_images(backbone, [0, 1], ["red circle", "blue square"], ["blue square", "green dot"]),
        cached_images(backbone, [2, 3], ["green dot", "big star"], ["big star", "red circle"]),
    ]
    z = step_reference_point(ctx, policy, batches)
    rewards = []
    matched = []
    for batch in batches:
        for b, into in ((batch.mismatched(), rewards), (batch, matched)):
            problem = backbone.denoising_problem(b, 0, 32, torch.device("cpu"), False)
            with torch.no_grad():
                into.append(-0.5 * 50.0 * (backbone.errors(policy, problem) - reference.errors(backbone, problem)))
    expected = torch.cat(rewards).double().mean().item()
    assert z.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert torch.cat(matched).mean().item() != pytest.approx(torch.cat(rewards).mean().item(), rel=1e-3)
    out = micro_batch_loss(ctx, policy, batches[0], z)
    assert out.metrics["reference_point"].item() == pytest.approx(max(0.0, z.item()))
    assert out.metrics["kl_estimate"].item() == pytest.approx(z.item())


def test_a_paired_batch_is_refused_by_kto_and_an_unpaired_one_by_dpo(tiny_sd):
    from prefdiff.objectives.dpo import DPOObjective

    backbone = load_backbone(tiny_sd)
    reference = ModuleReference(backbone.denoiser)
    unpaired = cached_images(backbone, [0, 1], ["a", "b"], ["b", "a"])
    ctx = StepContext(backbone, DPOObjective(), reference, 0, 32, torch.device("cpu"))
    with pytest.raises(ValueError, match="trains on pairs, got single labelled images"):
        micro_batch_loss(ctx, backbone.denoiser, unpaired)
    paired = cached_pairs(backbone, ["a", "b"])
    ctx = StepContext(backbone, KTOObjective(), reference, 0, 32, torch.device("cpu"))
    with pytest.raises(ValueError, match="trains on single labelled images, got pairs"):
        micro_batch_loss(ctx, backbone.denoiser, paired)
