"""Reference errors computed once (`prefdiff reference`) and read in training
(reference.mode=cached): equal to the live reference, refused when the run differs, resumable."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from prefdiff.errors import ConfigError
from prefdiff.train import loop
from prefdiff.train.components import build_components, build_pair_data
from prefdiff.train.loop import train
from prefdiff.train.reference import ModuleReference
from prefdiff.train.reference_cache import CachedReference, compute_reference

from ..integration_helpers import assert_same_weights, lora_weights, metrics, tiny_config

RTOL = 1e-5  # fp32; the pass batches 3 pairs where the check batches 4, so kernels sum in another order


def live_and_cached(config, directory, slots):
    """Errors ``[winners; losers]`` of ``slots`` from the base denoiser run live, and read back
    from ``directory``."""
    backbone = build_components(config).backbone
    stream, collate = build_pair_data(config.data, config.train.seed, backbone)
    problem = backbone.denoising_problem(
        collate([stream[s] for s in slots]), config.train.seed, config.data.resolution, torch.device("cpu")
    )
    live = ModuleReference(backbone.denoiser).errors(backbone, problem)
    cached = CachedReference.open(directory, config, processes=1).errors(backbone, problem)
    return live, cached


@pytest.mark.parametrize("family", ["tiny_sd", "tiny_sdxl", "tiny_sd3"])
def test_cached_errors_equal_the_live_reference(family, request, shapes_parquet, tmp_path):
    """Every slot of a 3-step run at batch 2 x accumulation 2 (12 slots), batched by 3 in the pass
    and by 4 here, with random flips: the same errors to fp32 precision."""
    model = request.getfixturevalue(family)
    config = tiny_config(model, shapes_parquet, tmp_path / "run", "train.max_steps=3", "train.grad_accum_steps=2",
                         "data.random_flip=true")  # fmt: skip
    done = compute_reference(config, tmp_path / "ref", batch_size=3, shard_slots=5, progress=False)
    assert done["slots"] == 12 and done["shards"] == 3
    live, cached = live_and_cached(config, tmp_path / "ref", [11, 4, 5, 0])
    assert live.shape == cached.shape == (8,)
    torch.testing.assert_close(cached, live, rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_cached_reference_trains_like_the_live_one(tiny_sd, shapes_parquet, tmp_path, lora, monkeypatch):
    """3 DPO steps with the reference run live and read from `prefdiff reference`: the same loss
    at every step and the same weights to float noise. The pass batches pairs as the run does
    (2): DPO multiplies reference-error round-off by beta/2, and a pass batched otherwise moves
    the first loss by ~1e-5 (see the test above for errors batched otherwise). The full
    fine-tune with a cached reference builds no frozen copy of the UNet."""
    common = ("train.max_steps=3", f"lora.enabled={str(lora).lower()}", "objective.beta=500", "optim.eps=1e-2")
    common += () if lora else ("optim.lr=1e-4",)
    # parameters of the UNets each run made, once its reference is built; the UNets alive before a
    # run are kept alive (in `kept`) so that no new one can reuse their ids
    held, before, kept = [], set(), []
    original = loop._reference

    def unets():
        gc.collect()
        return [m for m in gc.get_objects() if isinstance(m, UNet2DConditionModel)]

    def counting(*args, **kwargs):
        built = original(*args, **kwargs)
        held.append(sum(p.numel() for unet in unets() if id(unet) not in before for p in unet.parameters()))
        return built

    monkeypatch.setattr(loop, "_reference", counting)
    live = tiny_config(tiny_sd, shapes_parquet, tmp_path / "live", *common)
    kept.extend(unets())
    before.update(id(unet) for unet in kept)
    train(live)
    compute_reference(live, tmp_path / "ref", batch_size=2, progress=False)
    if not lora:
        from prefdiff.train import reference

        def no_copy(*args, **kwargs):
            raise AssertionError("a frozen copy of the denoiser was built")

        monkeypatch.setattr(reference.FrozenCopyReference, "__init__", no_copy)
    cached_dir = tmp_path / "cached"
    kept.extend(unets())
    before.update(id(unet) for unet in kept)
    train(tiny_config(tiny_sd, shapes_parquet, cached_dir, *common, "reference.mode=cached",
                      f"reference.path={tmp_path / 'ref'}"))  # fmt: skip
    if not lora:  # the live run held the policy and its frozen copy, the cached run the policy alone
        assert held[0] == 2 * held[1] > 0
    for a, b in zip(metrics(cached_dir), metrics(tmp_path / "live"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["ref_err_w"] == pytest.approx(b["ref_err_w"], rel=1e-5)
    if lora:
        assert_same_weights(lora_weights(cached_dir), lora_weights(tmp_path / "live"), atol=1e-6)
    else:
        a, b = (
            load_file(str(run / "unet" / "diffusion_pytorch_model.safetensors"))
            for run in (cached_dir, tmp_path / "live")
        )
        assert_same_weights(a, b, atol=1e-6)


def test_a_resumed_cached_run_equals_an_uninterrupted_one(tiny_sd, shapes_parquet, tmp_path):
    common = ("train.checkpoint_every=2", "reference.mode=cached", f"reference.path={tmp_path / 'ref'}")
    compute_reference(tiny_config(tiny_sd, shapes_parquet, tmp_path / "x", "train.max_steps=4"), tmp_path / "ref",
                      progress=False)  # fmt: skip
    train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "straight", "train.max_steps=4", *common))
    train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=2", *common))
    train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=4", *common), resume="latest")
    assert_same_weights(lora_weights(tmp_path / "resumed"), lora_weights(tmp_path / "straight"), atol=1e-7)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.seed=1", r"seed=0.*has 1"),
        ("data.resolution=16", r"data.resolution=32.*has 16"),
        ("data.random_flip=true", r"data.random_flip=False.*has True"),
        ("train.timesteps=[249,499,749,999]", r"timesteps=None.*has \[249, 499, 749, 999\]"),
        ("train.max_steps=3", r"visits 6 slots .*holds 4"),
        ("train.mixed_precision=bf16", r"mixed_precision='no'.*has 'bf16'"),
    ],
)
def test_a_cached_reference_refuses_a_run_it_was_not_computed_for(tiny_sd, shapes_parquet, tmp_path, override, named):
    base = tiny_config(tiny_sd, shapes_parquet, tmp_path / "run")
    compute_reference(base, tmp_path / "ref", progress=False)
    changed = tiny_config(tiny_sd, shapes_parquet, tmp_path / "run", override)
    with pytest.raises(ConfigError, match=named):
        CachedReference.open(tmp_path / "ref", changed, processes=1)
    with pytest.raises(ConfigError, match=r"visits 8 slots"):  # two processes visit twice the slots
        CachedReference.open(tmp_path / "ref", base, processes=2)


def test_a_cached_reference_refuses_another_model_or_data(tiny_sd, tiny_sd_v, shapes_parquet, tmp_path):
    base = tiny_config(tiny_sd, shapes_parquet, tmp_path / "run")
    compute_reference(base, tmp_path / "ref", progress=False)
    with pytest.raises(ConfigError, match=r"model.path=.*has .*tiny_sd_v|model.weights"):
        CachedReference.open(tmp_path / "ref", tiny_config(tiny_sd_v, shapes_parquet, tmp_path / "run"), processes=1)
    other = tmp_path / "other.parquet"
    other.write_bytes(shapes_parquet.read_bytes())
    with pytest.raises(ConfigError, match=r"computed with data.source.(path|mtime_ns|size)="):
        CachedReference.open(tmp_path / "ref", tiny_config(tiny_sd, other, tmp_path / "run"), processes=1)
    with pytest.raises(ConfigError, match="holds no reference errors"):
        CachedReference.open(tmp_path / "nothing", base, processes=1)


def test_a_killed_pass_resumes_without_redoing_finished_shards(tiny_sd, shapes_parquet, tmp_path):
    config = tiny_config(tiny_sd, shapes_parquet, tmp_path / "run", "train.max_steps=5")  # 10 slots
    out = tmp_path / "ref"
    compute_reference(config, out, shard_slots=4, progress=False)
    shards = sorted(out.glob("errors_*.safetensors"))
    assert len(shards) == 3
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    whole = [load_file(str(p))["errors"] for p in shards]
    shards[1].unlink()  # killed while it was being written: the rename never happened
    (out / "reference_info.json").unlink()
    with pytest.raises(ConfigError, match="is incomplete"):
        CachedReference.open(out, config, processes=1)
    again = compute_reference(config, out, shard_slots=4, progress=False)
    assert again["computed"] == 4  # the missing shard alone
    for p in (shards[0], shards[2]):
        assert p.stat().st_mtime_ns == before[p.name]
    torch.testing.assert_close(load_file(str(shards[1]))["errors"], whole[1])
    with pytest.raises(ConfigError, match="holds reference errors for other settings: seed was 0, now 3"):
        compute_reference(tiny_config(tiny_sd, shapes_parquet, tmp_path / "run", "train.max_steps=5", "train.seed=3"),
                          out, shard_slots=4, progress=False)  # fmt: skip


@pytest.mark.slow
def test_two_processes_compute_the_same_reference(tiny_sd, shapes_parquet, tmp_path):
    """`accelerate launch -m prefdiff reference` with two processes: each computes every other
    shard, and the errors equal a one-process pass."""
    args = ["reference", f"model.path={tiny_sd}", f"data.path={shapes_parquet}", "data.resolution=32",
            "train.max_steps=4", "train.batch_size=2", "--shard-slots", "3"]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
              "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "-m", "prefdiff"]  # fmt: skip
    for name, command in (("one", [sys.executable, "-m", "prefdiff"]), ("two", launch)):
        result = subprocess.run([*command, *args, "--out", str(tmp_path / name)], capture_output=True, text=True,
                                timeout=600, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    for k in range(3):  # 8 slots in shards of 3
        one, two = (load_file(str(tmp_path / n / f"errors_{k:06d}.safetensors")) for n in ("one", "two"))
        torch.testing.assert_close(two["errors"], one["errors"], rtol=RTOL, atol=1e-7)
        assert torch.equal(two["slots"], one["slots"])


def test_train_compile_compiles_the_denoiser_and_reports_the_first_step(tiny_sd, shapes_parquet, tmp_path, monkeypatch):
    """train.compile=true: the denoiser's forward is compiled in place (here with dynamo's eager
    backend: inductor's code generation takes minutes on CPU, see docs/benchmarks.md), the first
    step's seconds are logged apart, and training matches the uncompiled run."""
    compiled = []
    original = torch.nn.Module.compile

    def compile_eagerly(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        return original(module, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)
    plain = tiny_config(tiny_sd, shapes_parquet, tmp_path / "plain", "objective.beta=500", "optim.eps=1e-2")
    train(plain)
    fast = tiny_config(tiny_sd, shapes_parquet, tmp_path / "fast", "objective.beta=500", "optim.eps=1e-2",
                       "train.compile=true")  # fmt: skip
    train(fast)
    assert compiled == ["UNet2DConditionModel"]
    rows = metrics(tmp_path / "fast")
    assert rows[0]["first_step_seconds"] > 0 and "first_step_seconds" not in rows[1]
    for a, b in zip(rows, metrics(tmp_path / "plain"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert_same_weights(lora_weights(tmp_path / "fast"), lora_weights(tmp_path / "plain"), atol=1e-6)
