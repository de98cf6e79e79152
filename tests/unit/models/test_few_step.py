"""Few-step training: a discrete timestep set (train.timesteps) and zero-terminal-SNR rescaling
(model.zero_terminal_snr)."""

from __future__ import annotations

import math

import pytest
import torch

from prefdiff.config import Config, ModelConfig, load_config, merge_into
from prefdiff.errors import ConfigError
from prefdiff.models import load_backbone
from prefdiff.train.components import build_components

TURBO = [249, 499, 749, 999]


def test_every_drawn_timestep_is_in_the_set_one_draw_per_pair(tiny_sd):
    backbone = load_backbone(tiny_sd)
    backbone.use_timesteps(TURBO)
    draw = backbone.draw_noise(list(range(400)), seed=0, latent_shape=(4, 4, 4))
    assert draw.timesteps.shape == (400,)
    assert set(draw.timesteps.tolist()) == set(TURBO)  # each of the four is drawn, nothing else
    counts = torch.bincount(torch.tensor([TURBO.index(t) for t in draw.timesteps.tolist()]), minlength=4)
    assert counts.min() > 60  # uniform over the set: about 100 each of 400
    # One draw per pair, keyed by its slot: the same pair gets the same timestep in any batch.
    alone = backbone.draw_noise([17], seed=0, latent_shape=(4, 4, 4))
    assert alone.timesteps[0] == draw.timesteps[17] and torch.equal(alone.noise[0], draw.noise[17])


def test_the_set_replaces_only_the_timestep_draw(tiny_sd):
    """The timestep is the first of four draws from a pair's generator either way, so the noise
    and the latent-sampling noise of a pair do not change when a set is chosen."""
    backbone = load_backbone(tiny_sd)
    full = backbone.draw_noise([3, 4], seed=5, latent_shape=(4, 4, 4))
    backbone.use_timesteps(TURBO)
    few = backbone.draw_noise([3, 4], seed=5, latent_shape=(4, 4, 4))
    assert torch.equal(full.noise, few.noise) and torch.equal(full.latent_eps_l, few.latent_eps_l)
    backbone.use_timesteps(None)
    assert torch.equal(backbone.draw_noise([3, 4], seed=5, latent_shape=(4, 4, 4)).timesteps, full.timesteps)


def test_the_set_is_checked_against_the_schedule(tiny_sd, tiny_sd3):
    backbone = load_backbone(tiny_sd)
    with pytest.raises(ConfigError, match=r"train.timesteps.*\[1000\] outside \[0, 1000\)"):
        backbone.use_timesteps([999, 1000])
    with pytest.raises(ConfigError, match="train.timesteps.*sd3 draws continuous noise levels"):
        load_backbone(tiny_sd3).use_timesteps(TURBO)
    for bad in ("[]", "[-1, 5]", "[5, 5]"):
        with pytest.raises(ConfigError, match="train.timesteps"):
            load_config(None, [f"train.timesteps={bad}"])


def test_build_components_applies_the_configured_set(tiny_sd):
    config = Config()
    merge_into(config, {"model": {"path": str(tiny_sd)}, "train": {"timesteps": TURBO}})
    assert build_components(config).backbone.timestep_set == tuple(TURBO)
    merge_into(config, {"train": {"timesteps": None}})
    assert build_components(config).backbone.timestep_set is None


def test_zero_terminal_snr_matches_lin_et_al(tiny_sd_v):
    """Lin et al. 2023, Algorithm 1, on sqrt(abar_t) = s_t: s'_t = (s_t - s_T) * s_1 / (s_1 - s_T),
    so the first timestep keeps its SNR and the last has abar_T = 0 (SNR 0). By hand on the tiny
    scheduler (scaled_linear betas 0.00085..0.012, 1000 steps): s_1 = sqrt(1 - 0.00085) = 0.999575,
    s_T = 0.068265 (abar_T = 0.0046602), so abar'_T is 0 and abar'_1 stays 0.99915."""
    plain = load_backbone(tiny_sd_v).noise_scheduler.alphas_cumprod.double()
    rescaled = load_backbone(tiny_sd_v, ModelConfig(zero_terminal_snr=True)).noise_scheduler.alphas_cumprod.double()
    assert plain[0].item() == pytest.approx(1 - 0.00085, abs=1e-7)
    assert plain[-1].item() == pytest.approx(0.0046602, rel=1e-3)
    assert rescaled[0].item() == pytest.approx(plain[0].item(), abs=1e-6)  # the first SNR is kept
    assert rescaled[-1].item() == pytest.approx(0.0, abs=1e-12)  # the last is pure noise
    s = plain.sqrt()
    s_first, s_last = s[0].item(), s[-1].item()
    for t in (1, 250, 500, 750, 998):
        expected = ((s[t].item() - s_last) * s_first / (s_first - s_last)) ** 2
        assert rescaled[t].item() == pytest.approx(expected, rel=1e-4), t
    assert math.isclose(s_first, 0.999575, abs_tol=1e-6) and math.isclose(s_last, 0.068265, abs_tol=1e-5)


def test_zero_terminal_snr_reaches_the_sampler_and_needs_v_prediction(tiny_sd_v, tiny_sd, tiny_sd3):
    backbone = load_backbone(tiny_sd_v, ModelConfig(zero_terminal_snr=True))
    assert backbone.pipeline().scheduler.config.rescale_betas_zero_snr is True
    with pytest.raises(ConfigError, match="zero_terminal_snr.*predicts epsilon.*v_prediction"):
        load_backbone(tiny_sd, ModelConfig(zero_terminal_snr=True))
    with pytest.raises(ConfigError, match="zero_terminal_snr.*flow family"):
        load_backbone(tiny_sd3, ModelConfig(zero_terminal_snr=True))


def test_model_timestep_spacing_reaches_the_validation_sampler(tiny_sd, tiny_sd3):
    """model.timestep_spacing=trailing: the pipeline's DDIM samples 4 steps at Turbo's timesteps;
    the default keeps the scheduler's own (leading with steps_offset 1: 751, 501, 251, 1)."""
    scheduler = load_backbone(tiny_sd, ModelConfig(timestep_spacing="trailing")).pipeline().scheduler
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 749, 499, 249] == sorted(TURBO, reverse=True)
    plain = load_backbone(tiny_sd).pipeline().scheduler
    plain.set_timesteps(4)
    assert plain.timesteps.tolist() == [751, 501, 251, 1]
    with pytest.raises(ConfigError, match="model.timestep_spacing.*sd3"):
        load_backbone(tiny_sd3, ModelConfig(timestep_spacing="trailing"))
