"""Every registered objective keeps the seam's promises, checked from the registry so that a
new objective is covered without being listed here. Hand-worked values live beside each
objective's own test file; these are the properties every objective shares."""

from __future__ import annotations

import re

import pytest
import torch

from prefdiff.config import load_config
from prefdiff.errors import ConfigError
from prefdiff.models import load_backbone
from prefdiff.objectives import OBJECTIVES, build_objective
from prefdiff.objectives.base import is_unpaired
from prefdiff.train.reference import ModuleReference
from prefdiff.train.step import StepContext, micro_batch_loss

from .batches import cached_images, cached_pairs

NAMES = OBJECTIVES.names()


@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_through_the_config(name):
    config = load_config(None, [f"objective.name={name}"])
    objective = build_objective(config.objective)
    assert type(objective) is OBJECTIVES.get(name)
    assert all(ok for ok, _, _ in objective.checks()), "the defaults pass the objective's own checks"


@pytest.mark.parametrize("name", NAMES)
def test_value_at_the_reference_and_metrics(name):
    """With the policy equal to the reference an objective that needs one gives its documented
    loss_at_reference (ln 2 for DPO); every metric is a detached scalar and 'loss' is the loss."""
    objective = OBJECTIVES.get(name)()
    torch.manual_seed(0)
    err_w = torch.rand(5, requires_grad=True)
    err_l = torch.rand(5, requires_grad=True)
    ref_w, ref_l = err_w.detach().clone(), err_l.detach().clone()
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]) if is_unpaired(objective) else torch.ones(5)
    out = objective(err_w, err_l if objective.needs_losers else None, ref_w, ref_l, labels)
    assert out.loss_per_pair.shape == (5,)
    if objective.needs_reference:
        assert out.loss.item() == pytest.approx(type(objective).loss_at_reference, abs=1e-6)
    assert out.metrics["loss"].item() == pytest.approx(out.loss.item())
    assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())
    out.loss.backward()
    assert err_w.grad is not None and torch.isfinite(err_w.grad).all()


class _Refusing:
    def errors(self, backbone, problem):
        raise AssertionError("the reference was asked for")


@pytest.mark.parametrize("name", NAMES)
def test_loop_runs_only_what_the_objective_declares(name, tiny_sd):
    """No reference forward when needs_reference is false; losers through the policy only when
    needs_losers is true (counted at the denoiser's input)."""
    backbone = load_backbone(tiny_sd)
    objective = OBJECTIVES.get(name)()
    if is_unpaired(objective):  # two single images, one desirable and one not
        batch = cached_images(backbone, [0, 1], ["a", "b"], ["b", "a"], labels=[1.0, 0.0])
    else:
        batch = cached_pairs(backbone, ["a", "b"])
    seen: list[int] = []
    handle = backbone.denoiser.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    reference = ModuleReference(backbone.denoiser) if objective.needs_reference else _Refusing()
    ctx = StepContext(backbone, objective, reference, 0, 32, torch.device("cpu"))
    micro_batch_loss(ctx, backbone.denoiser, batch)
    handle.remove()
    images = 4 if objective.needs_losers else 2
    assert seen == [images] * (2 if objective.needs_reference else 1)


def test_another_objectives_key_is_accepted_and_said_unused(caplog):
    """``objective.name=sft objective.beta=500`` ran before objectives owned their keys: it still
    does, with a warning, and the sft run's config holds no beta."""
    config = load_config(None, ["objective.name=sft", "objective.beta=500"])
    assert config.objective.name == "sft" and "beta" not in config.objective.as_dict()
    assert re.search(r"objective.beta' belongs to objectives dpo, (\w+, )*ipo(, \w+)*, not 'sft': ignored", caplog.text)


def test_an_unknown_objective_or_key_is_named():
    with pytest.raises(ConfigError, match=r"config key 'objective.name': unknown objective 'dpx' \(known: .*dpo.*sft"):
        load_config(None, ["objective.name=dpx"])
    with pytest.raises(
        ConfigError, match=r"unknown config key 'objective.betta'.*'dpo' takes name and its own keys: .*\bbeta\b"
    ):
        load_config(None, ["objective.betta=3"])
    with pytest.raises(
        ConfigError, match=r"unknown config key 'objective.betta'.*'sft' takes name and its own keys: none"
    ):
        load_config(None, ["objective.name=sft", "objective.betta=3"])
    with pytest.raises(ConfigError, match=r"config key 'objective.beta' must be > 0"):
        load_config(None, ["objective.beta=-1"])
