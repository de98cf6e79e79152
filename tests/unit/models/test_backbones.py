import json

import pytest
import torch

from prefdiff.config import ModelConfig
from prefdiff.errors import ModelLoadError
from prefdiff.models import SDBackbone, SDXLBackbone, load_backbone


def test_sd_backbone_loads_and_encodes(tiny_sd):
    backbone = load_backbone(tiny_sd)
    assert isinstance(backbone, SDBackbone) and backbone.prediction_type == "epsilon"
    cond = backbone.encode_prompts(["a red circle", "a blue square"])
    assert cond["encoder_hidden_states"].shape == (2, 77, 32)
    mean, std = backbone.latent_distribution(torch.zeros(2, 3, 32, 32))
    assert mean.shape == std.shape == (2, 4, 4, 4)
    assert backbone.latent_shape(32) == (4, 4, 4)


def test_v_prediction_target_is_velocity(tiny_sd_v):
    """v = sqrt(a_t) * eps - sqrt(1 - a_t) * x0 (the scheduler's get_velocity)."""
    backbone = load_backbone(tiny_sd_v)
    assert backbone.prediction_type == "v_prediction"
    x0, eps, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor([500])
    _, target = backbone.noisy_input_and_target(x0, eps, t)
    alpha_bar = backbone.noise_scheduler.alphas_cumprod[500]
    expected = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    assert torch.allclose(target, expected, atol=1e-5)
    _, eps_target = load_backbone(tiny_sd_v, ModelConfig(prediction_type="epsilon")).noisy_input_and_target(x0, eps, t)
    assert torch.equal(eps_target, eps)


def test_sdxl_backbone_conditioning(tiny_sdxl):
    backbone = load_backbone(tiny_sdxl)
    assert isinstance(backbone, SDXLBackbone)
    cond = backbone.encode_prompts(["a red circle"])
    assert cond["encoder_hidden_states"].shape == (1, 77, 64)  # two encoders of width 32, concatenated
    assert cond["text_embeds"].shape == (1, 32)
    original_size, crop_top_left = torch.tensor([[600, 800], [512, 512]]), torch.tensor([[0, 44], [3, 0]])
    per_image = backbone.image_conditioning(cond, original_size, crop_top_left, resolution=32)
    assert per_image["encoder_hidden_states"].shape[0] == 2
    # each image's own original size and crop box: (orig_h, orig_w, top, left, target_h, target_w)
    assert per_image["time_ids"].tolist() == [[600, 800, 0, 44, 32, 32], [512, 512, 3, 0, 32, 32]]


def test_noise_is_shared_per_pair_and_keyed_by_slot(tiny_sd):
    backbone = load_backbone(tiny_sd)
    draw = backbone.draw_noise([5, 6], seed=3, latent_shape=(4, 8, 8))
    again = backbone.draw_noise([6], seed=3, latent_shape=(4, 8, 8))
    assert torch.equal(draw.noise[1], again.noise[0]) and draw.timesteps[1] == again.timesteps[0]
    assert not torch.equal(draw.noise[0], draw.noise[1])
    other_seed = backbone.draw_noise([6], seed=4, latent_shape=(4, 8, 8))
    assert not torch.equal(other_seed.noise[0], again.noise[0])


def test_not_a_pipeline_directory_says_what_it_found(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"no model_index.json \(found: weights.bin\)"):
        load_backbone(tmp_path)
    with pytest.raises(ModelLoadError, match="not found"):
        load_backbone(tmp_path / "missing")


@pytest.mark.parametrize("pipeline_class", ["PixArtAlphaPipeline", "SanaPipeline"])
def test_unsupported_pipeline_class_is_named(tmp_path, pipeline_class):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline_class}))
    with pytest.raises(ModelLoadError) as err:
        load_backbone(tmp_path)
    message = str(err.value)
    assert f"{pipeline_class!r}" in message
    for family, pipeline in [
        ("sd", "StableDiffusionPipeline"),
        ("sdxl", "StableDiffusionXLPipeline"),
        ("sd3", "StableDiffusion3Pipeline"),
        ("flux", "FluxPipeline"),
    ]:
        assert f"{family} ({pipeline})" in message


def test_missing_component_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelLoadError, match="lacks the 'unet' sub-folder"):
        load_backbone(tmp_path)


# ------------------------------------------------------------------ the flow families


def test_flow_input_is_the_straight_line_and_target_the_velocity(tiny_sd3):
    """x_t = (1 - sigma) x0 + sigma noise, target noise - x0; sigma = timestep / 1000."""
    backbone = load_backbone(tiny_sd3)
    x0, noise = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    timesteps = torch.tensor([250.0, 1000.0])
    noisy, target = backbone.noisy_input_and_target(x0, noise, timesteps)
    assert torch.allclose(noisy[0], 0.75 * x0[0] + 0.25 * noise[0], atol=1e-6)
    assert torch.allclose(noisy[1], noise[1])  # sigma 1: pure noise
    assert torch.equal(target, noise - x0)


def test_sd3_sigmas_carry_the_static_shift(tiny_sd3):
    """The scheduler's shift s maps u to s u / (1 + (s - 1) u) (to the table's 1/1000 grid)."""
    backbone = load_backbone(tiny_sd3, ModelConfig(timestep_sampling="uniform"))
    shift = backbone.noise_scheduler.config.shift
    assert shift == 3.0
    u = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.999])
    sigmas = backbone.sigmas_for(u, (16, 4, 4))
    # index 0 of the table is sigma 1: u indexes the descending grid (1 - u) as diffusers' scripts do
    grid = 1.0 - (u * 1000).long().float() / 1000
    expected = shift * grid / (1 + (shift - 1) * grid)
    assert torch.allclose(sigmas, expected, atol=1e-5)
    assert sigmas[0] == 1.0 and (sigmas[:-1] > sigmas[1:]).all()


def test_flux_sigmas_shift_with_the_token_count(tiny_flux):
    """Dynamic shifting: sigma' = e^mu / (e^mu + 1/sigma - 1), mu linear in the image tokens."""
    import math

    backbone = load_backbone(tiny_flux, ModelConfig(timestep_sampling="uniform"))
    assert backbone.noise_scheduler.config.use_dynamic_shifting
    u = torch.tensor([0.5])
    small, large = backbone.sigmas_for(u, (16, 4, 4)), backbone.sigmas_for(u, (16, 128, 128))
    mu_small = 0.5 + (1.15 - 0.5) / (4096 - 256) * (4 - 256)  # 4 tokens
    expected = math.exp(mu_small) / (math.exp(mu_small) + 1 / 0.5 - 1)
    assert small.item() == pytest.approx(expected, abs=1e-5)
    assert large.item() > small.item()  # 4096 tokens shift toward more noise


def test_flow_density_and_loss_weighting_are_config_keys(tiny_sd3):
    slots = list(range(400))
    uniform = load_backbone(tiny_sd3, ModelConfig(timestep_sampling="uniform")).draw_noise(slots, 0, (16, 2, 2))
    logit = load_backbone(tiny_sd3, ModelConfig(timestep_sampling="logit_normal", logit_std=0.3)).draw_noise(
        slots, 0, (16, 2, 2)
    )
    # a narrow logit-normal concentrates u near 0.5, the uniform spreads it: compare the spread of the sigmas
    assert logit.timesteps.std() < 0.6 * uniform.timesteps.std()
    plain = load_backbone(tiny_sd3)
    assert plain.loss_weight(torch.tensor([500.0])) is None
    cosmap = load_backbone(tiny_sd3, ModelConfig(loss_weighting="cosmap"))
    weight = cosmap.loss_weight(torch.tensor([500.0, 1000.0]))
    assert weight is not None
    assert torch.allclose(weight, 2 / (torch.pi * torch.tensor([0.5, 1.0])), atol=1e-5)  # 2 / (pi (1 - 2s + 2s^2))


def test_flow_prompt_length_is_a_config_key(tiny_sd3, tiny_flux):
    sd3 = load_backbone(tiny_sd3, ModelConfig(max_sequence_length=16))
    cond = sd3.encode_prompts(["a red circle"])
    assert cond["encoder_hidden_states"].shape == (1, 77 + 16, 64)  # CLIP tokens, then T5 tokens
    assert cond["pooled_projections"].shape == (1, 64)
    assert load_backbone(tiny_sd3).encode_prompts(["a"])["encoder_hidden_states"].shape[1] == 77 + 256
    flux = load_backbone(tiny_flux, ModelConfig(max_sequence_length=24))
    cond = flux.encode_prompts(["a red circle", "a blue square"])
    assert cond["encoder_hidden_states"].shape == (2, 24, 64) and cond["pooled_projections"].shape == (2, 32)
    assert sd3.encoding_settings() == {"max_sequence_length": 16}


def test_flux_guidance_is_fed_to_a_guidance_distilled_transformer(tiny_flux):
    """The tiny FLUX transformer has a guidance embedding: model.guidance changes its output."""
    from prefdiff.models.base import DenoisingProblem

    outputs = []
    for guidance in (1.0, 3.5):
        backbone = load_backbone(tiny_flux, ModelConfig(guidance=guidance, max_sequence_length=8))
        cond = backbone.encode_prompts(["a red circle"])
        torch.manual_seed(0)
        noisy = torch.randn(1, 16, 4, 4)
        problem = DenoisingProblem(noisy, noisy, torch.tensor([500.0]), cond, 1)
        with torch.no_grad():
            outputs.append(backbone.predict(backbone.denoiser, problem))
    assert outputs[0].shape == (1, 16, 4, 4)
    assert not torch.allclose(outputs[0], outputs[1])


def test_fp16_keeps_the_t5_encoder_in_fp32_and_casts_the_clip_encoders(tiny_sd3):
    backbone = load_backbone(tiny_sd3).to(torch.device("cpu"), torch.float16)
    assert backbone.components["text_encoder_3"].dtype == torch.float32
    assert backbone.components["text_encoder"].dtype == torch.float16
    bf16 = load_backbone(tiny_sd3).to(torch.device("cpu"), torch.bfloat16)
    assert bf16.components["text_encoder_3"].dtype == torch.bfloat16
