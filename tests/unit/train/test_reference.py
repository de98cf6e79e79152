import math

import pytest
import torch

from prefdiff.config import LoraConfig
from prefdiff.models import DenoisingProblem, load_backbone
from prefdiff.models.lora import add_lora
from prefdiff.objectives import DPOObjective
from prefdiff.train.reference import AdapterDisabledReference, FrozenCopyReference


def _problem(backbone) -> DenoisingProblem:
    torch.manual_seed(0)
    latents = torch.randn(4, 4, 16, 16)  # [w1, w2; l1, l2]
    draw = backbone.draw_noise([0, 1], seed=0, latent_shape=(4, 16, 16))
    noise, t = draw.noise.repeat(2, 1, 1, 1), draw.timesteps.repeat(2)
    noisy, target = backbone.noisy_input_and_target(latents, noise, t)
    cond = backbone.encode_prompts(["a", "b"])
    cond = {k: v.repeat(2, 1, 1) for k, v in cond.items()}
    return DenoisingProblem(noisy, target, t, cond, num_pairs=2)


def test_lora_and_frozen_copy_references_agree_while_lora_is_zero(tiny_sd):
    """With B = 0 the adapted UNet is the base: the adapter-disabled reference, a frozen copy,
    and the policy all give the same errors, and DPO's loss is ln 2 under both reference modes."""
    lora_backbone = load_backbone(tiny_sd)
    full_backbone = load_backbone(tiny_sd)
    add_lora(lora_backbone.denoiser, LoraConfig(rank=4, alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    lora_ref = AdapterDisabledReference(lora_backbone.denoiser)
    frozen_ref = FrozenCopyReference(full_backbone.denoiser, torch.float32)
    problem = _problem(lora_backbone)
    ref_lora = lora_ref.errors(lora_backbone, problem)
    ref_full = frozen_ref.errors(full_backbone, problem)
    assert torch.allclose(ref_lora, ref_full, atol=1e-6)
    objective = DPOObjective(beta=5000.0)
    for backbone, ref in ((lora_backbone, ref_lora), (full_backbone, ref_full)):
        policy = backbone.errors(backbone.denoiser, problem)
        loss = objective(policy[:2], policy[2:], ref[:2], ref[2:]).loss
        assert loss.item() == pytest.approx(math.log(2), abs=1e-5)


def test_disabled_adapters_ignore_a_nonzero_lora(tiny_sd):
    """Once the LoRA is non-zero the policy moves but the reference stays the base model."""
    backbone = load_backbone(tiny_sd)
    base = FrozenCopyReference(backbone.denoiser, torch.float32)
    add_lora(backbone.denoiser, LoraConfig(rank=4, alpha=4), backbone.lora_target_modules)
    with torch.no_grad():
        for name, param in backbone.denoiser.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    problem = _problem(backbone)
    policy = backbone.errors(backbone.denoiser, problem)
    ref = AdapterDisabledReference(backbone.denoiser).errors(backbone, problem)
    assert torch.allclose(ref, base.errors(backbone, problem), atol=1e-6)
    assert not torch.allclose(policy, ref, atol=1e-4)
    # the adapters are switched on again afterwards: the network gives the policy's errors again
    assert torch.allclose(backbone.errors(backbone.denoiser, problem), policy)


def test_lr_schedule_warmup_then_constant_or_cosine():
    """warm-up 2 of 6 steps: (s+1)/2 for s < 2; constant: 1; cosine: 0.5(1+cos(pi*(s-2)/4))."""
    from prefdiff.train.optim import lr_lambda

    assert [lr_lambda(s, 2, 6, "constant") for s in range(6)] == [0.5, 1, 1, 1, 1, 1]
    cosine = [lr_lambda(s, 2, 6, "cosine") for s in range(7)]
    assert cosine == pytest.approx([0.5, 1.0, 1.0, 0.853553, 0.5, 0.146447, 0.0], abs=1e-6)
