"""Fault injection on the trainer: a run directory reused, two trainers on one directory, a run
that diverges, a non-finite config value. Each asserts the error (or the documented behaviour),
and that nothing earlier is lost."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from prefdiff.config import load_config
from prefdiff.errors import ConfigError
from prefdiff.train.checkpoint import list_checkpoints
from prefdiff.train.loop import TrainingDiverged, train
from prefdiff.train.run_dir import LOCK_FILE

from ..integration_helpers import lora_weights, metrics, tiny_config


def test_a_finished_run_is_not_overwritten_by_a_rerun(tiny_sd, shapes_parquet, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1")
    train(config)
    weights = lora_weights(run)
    with pytest.raises(ConfigError, match=r"output_dir .*run holds a finished run \(config.yaml, .*--overwrite"):
        train(config)
    assert all(torch.equal(weights[k], v) for k, v in lora_weights(run).items())  # nothing lost
    assert [r["step"] for r in metrics(run)] == [1, 2]
    (run / "notes.txt").write_text("mine")  # not a run's output: --overwrite keeps it
    train(tiny_config(tiny_sd, shapes_parquet, run, "train.max_steps=1", "train.checkpoint_every=1"), overwrite=True)
    assert [r["step"] for r in metrics(run)] == [1]  # the old run is gone, not appended to
    assert [p.name for p in list_checkpoints(run)] == ["step_0000001"]
    assert (run / "notes.txt").read_text() == "mine"


def test_an_unfinished_run_points_at_resume(tiny_sd, shapes_parquet, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1", "train.max_steps=1"))
    (run / "lora").rename(run / "lora_moved")  # as if killed after its checkpoint, before the result
    with pytest.raises(ConfigError, match=r"an unfinished run \(1 checkpoint\(s\)\).*--resume latest"):
        train(tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1"))
    train(tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1"), resume="latest")
    assert [r["step"] for r in metrics(run)] == [1, 2]


def test_a_second_trainer_is_refused_and_a_stale_lock_taken_over(tiny_sd, shapes_parquet, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-12-03T10:00:00"}
        (run / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(ConfigError, match=rf"being trained by pid {holder.pid} \(since 2026-12-03T10:00:00\)"):
            train(tiny_config(tiny_sd, shapes_parquet, run))
        assert not (run / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    (run / LOCK_FILE).write_text(json.dumps(lock))  # its process is dead now: a stale lock
    train(tiny_config(tiny_sd, shapes_parquet, run))
    assert not (run / LOCK_FILE).exists()  # released at the end
    (run / LOCK_FILE).write_text(json.dumps({**lock, "host": "elsewhere"}))
    with pytest.raises(ConfigError, match=r"locked by pid \d+ on host elsewhere.*delete .*\.prefdiff\.lock"):
        train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "run"), overwrite=True)
    assert (run / "lora").is_dir() and metrics(run)  # refused before --overwrite removed anything


def test_a_lock_is_released_when_training_fails(tiny_sd, shapes_parquet, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged):
        train(tiny_config(tiny_sd, shapes_parquet, run, "optim.lr=1e4", "train.max_steps=4"))
    assert not (run / LOCK_FILE).exists()


@pytest.mark.parametrize("value", ["inf", "-inf", ".nan", "nan"])
def test_non_finite_numbers_are_refused_in_the_config(value):
    with pytest.raises(ConfigError, match=r"config key 'optim.lr': expected a finite number"):
        load_config(None, [f"optim.lr={value}"])
    with pytest.raises(ConfigError, match=r"config key 'objective.beta'"):
        load_config(None, [f"objective.beta={value}"])


def test_a_diverged_run_stops_before_the_update_and_keeps_its_last_checkpoint(tiny_sd, shapes_parquet, tmp_path):
    """lr 10 on the tiny UNet: the gradient norm turns nan at step 4. The run stops there with an
    error naming the step and the metric; its checkpoints hold finite weights; no result."""
    run = tmp_path / "run"
    config = tiny_config(tiny_sd, shapes_parquet, run, "optim.lr=10", "train.max_steps=8", "train.checkpoint_every=1")
    with pytest.raises(TrainingDiverged, match=r"step (\d+): (loss|grad_norm) is nan.*the last checkpoint, .*step_"):
        train(config)
    assert not (run / "lora").exists()
    last = list_checkpoints(run)[-1]
    from safetensors.torch import load_file

    adapter = load_file(str(last / "lora_adapter.safetensors"))
    assert adapter and all(bool(torch.isfinite(v).all()) for v in adapter.values())
    assert all(r["step"] <= int(last.name.split("_")[1]) + 1 for r in metrics(run))


def test_skip_step_drops_the_bad_updates_and_finishes_finite(tiny_sd, shapes_parquet, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_sd, shapes_parquet, run, "optim.lr=10", "train.max_steps=8", "train.on_nonfinite=skip_step"))
    rows = metrics(run)
    assert rows[-1]["skipped_steps"] >= 1 and len(rows) == 8
    assert all(bool(torch.isfinite(v).all()) for v in lora_weights(run).values())


def test_the_cli_reports_a_reused_run_directory_in_one_line(tiny_sd, shapes_parquet, tmp_path):
    run = tmp_path / "run"
    args = [f"model.path={tiny_sd}", f"data.path={shapes_parquet}", f"output_dir={run}", "data.resolution=32",
            "train.max_steps=1", "train.report_to=none"]  # fmt: skip
    train(load_config(None, args))
    result = subprocess.run([sys.executable, "-m", "prefdiff", "train", *args], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds a finished run" in result.stderr and "--overwrite" in result.stderr


def test_a_recipe_that_is_not_utf8_is_one_clear_error(tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 16"):
        load_config(recipe)


def test_high_bit_depth_and_transparent_images_are_converted_not_saturated():
    """A 16-bit greyscale ramp keeps its values (scaled by 1/257), where PIL's convert('RGB')
    turns it white; RGBA is composited onto white; a float image is refused by name."""
    import numpy as np
    from PIL import Image

    from prefdiff.data.schema import to_rgb

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    sixteen = Image.fromarray(ramp)
    assert sixteen.mode == "I;16"
    assert np.asarray(sixteen.convert("RGB")).mean() > 250  # the bug: saturated
    converted = np.asarray(to_rgb(sixteen), dtype=np.float64)
    assert converted.shape == (64, 64, 3)
    assert abs(converted.mean() - ramp.mean() / 257) < 0.6 and converted.min() == 0 and converted.max() == 255
    half_red = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    assert to_rgb(half_red).getpixel((0, 0)) == (255, 127, 127)
    with pytest.raises(ValueError, match=r"frame\.tif: floating-point image \(mode F\)"):
        to_rgb(Image.new("F", (4, 4)), "frame.tif")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("lora.rank=4", "lora.rank"),
        ("train.batch_size=1", "train.batch_size"),
        ("objective.name=sft", "objective.name"),
    ],
)
def test_resuming_with_a_changed_key_names_it(tiny_sd, shapes_parquet, tmp_path, override, key):
    run = tmp_path / "run"
    train(tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1", "train.max_steps=1"))
    with pytest.raises(ConfigError, match=rf"config key '{key}': .*config.yaml records .* but the resumed run has"):
        train(tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1", override), resume="latest")


def test_resuming_from_a_truncated_checkpoint_is_one_clear_error(tiny_sd, shapes_parquet, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1", "train.max_steps=1"))
    optimizer = list_checkpoints(run)[-1] / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"--resume .*step_0000001: the checkpoint cannot be loaded"):
        train(tiny_config(tiny_sd, shapes_parquet, run, "train.checkpoint_every=1"), resume="latest")
    assert not (run / LOCK_FILE).exists()


@pytest.fixture
def small_mount(tmp_path):
    """A tmpfs mount (root only; skipped otherwise): ``mount(options)`` returns its folder."""
    mounted = []

    def mount(options: str):
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], capture_output=True)


def _train_cli(tiny_sd, shapes_parquet, out, *extra):
    args = [f"model.path={tiny_sd}", f"data.path={shapes_parquet}", f"output_dir={out}", "data.resolution=32",
            "train.max_steps=2", "train.report_to=none", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "prefdiff", "train", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_a_read_only_output_directory_is_one_line(tiny_sd, shapes_parquet, small_mount):
    read_only = small_mount("ro,size=1m")
    result = _train_cli(tiny_sd, shapes_parquet, read_only / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"error: cannot write {read_only / 'run'}: read-only file system"


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tiny_sd, shapes_parquet, small_mount):
    full = small_mount("size=96k")
    result = _train_cli(tiny_sd, shapes_parquet, full / "run", "train.checkpoint_every=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and ("no space left on device" in errors[0] or "disk space" in errors[0]), errors
    checkpoints = full / "run" / "checkpoints"
    partial = [p for p in checkpoints.iterdir() if not (p / "COMPLETE").exists()] if checkpoints.is_dir() else []
    assert partial == []
    assert not (full / "run" / LOCK_FILE).exists()


def test_cache_and_label_export_to_a_read_only_directory_are_one_line(tiny_sd, shapes_parquet, small_mount, tmp_path):
    read_only = small_mount("ro,size=1m")
    cache = subprocess.run(
        [sys.executable, "-m", "prefdiff", "cache", "--model", str(tiny_sd), "--data", str(shapes_parquet),
         "--out", str(read_only / "cache"), "--resolution", "32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cache.returncode == 2 and "Traceback" not in cache.stderr, cache.stderr[-2000:]
    assert cache.stderr.strip().splitlines()[-1] == f"error: cannot write {read_only / 'cache'}: read-only file system"
    db = tmp_path / "label.db"
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "a.png").write_bytes(_png())
    (pairs / "b.png").write_bytes(_png())
    (pairs / "pairs.jsonl").write_text(json.dumps({"prompt": "x", "image_0": "a.png", "image_1": "b.png"}) + "\n")
    label = [sys.executable, "-m", "prefdiff.label"]
    create = ["create-study", "--db", str(db), "--name", "s", "--kind", "collection", "--pairs", str(pairs)]
    for args in (["init", "--db", str(db)], create):
        assert subprocess.run([*label, *args], capture_output=True, text=True, timeout=120).returncode == 0
    export = subprocess.run([*label, "export", "--db", str(db), "--study", "s", "--out", str(read_only / "out")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert export.returncode == 2 and "Traceback" not in export.stderr, export.stderr[-2000:]
    assert export.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {read_only / 'out'}")


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()
