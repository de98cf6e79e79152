"""prefdiff.manifests: one generation manifest read and two runs paired, with errors that name
the file, the line or the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefdiff.errors import DataError
from prefdiff.manifests import (
    ManifestError,
    ManifestImage,
    UnpairedRunsError,
    pair_runs,
    read_manifest,
)


def write_run(run: Path, prompts: list[str], images_per_prompt: int = 2, seed_base: int = 100, **extra: object) -> Path:
    """A run as `prefdiff generate` writes it (the images are empty files named .png)."""
    (run / "images").mkdir(parents=True)
    rows = []
    for p, prompt in enumerate(prompts):
        for i in range(images_per_prompt):
            file = f"images/{p}_{i}.png"
            (run / file).write_bytes(b"")
            rows.append({"prompt": prompt, "prompt_index": p, "image_index": i, "seed": seed_base + 10 * p + i,
                         "file": file, "category": None, "model": "m", "lora": None, **extra})  # fmt: skip
    (run / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run


def test_read_manifest_keys_each_image(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", ["x", "y"], unet="tuned", steps=30)
    images = read_manifest(run)
    assert sorted(images) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert images[(1, 0)] == ManifestImage("y", 1, 0, 110, "images/1_0.png", None, "m", None, "tuned")
    assert images[(1, 0)].key == (1, 0) and images[(1, 0)].model_label == "m+unet:tuned"


def test_read_manifest_errors_name_the_line(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", ["x"], images_per_prompt=1)
    row = json.loads((run / "manifest.jsonl").read_text())
    (run / "manifest.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: duplicate \(prompt_index, image_index\) = \(0, 0\)"):
        read_manifest(run)
    (run / "manifest.jsonl").write_text(json.dumps({**row, "seed": 1.5}) + "\n")
    with pytest.raises(ManifestError, match="manifest.jsonl:1: key 'seed' has the wrong type"):
        read_manifest(run)
    with pytest.raises(DataError, match="file not found: .*no manifest.jsonl"):
        read_manifest(tmp_path)


def test_pair_runs_pairs_by_key_in_key_order(tmp_path: Path) -> None:
    run_a, run_b = write_run(tmp_path / "a", ["x", "y"]), write_run(tmp_path / "b", ["x", "y"])
    pairs = pair_runs(run_a, run_b)
    assert [(a.key, b.key) for a, b in pairs] == [
        ((0, 0), (0, 0)),
        ((0, 1), (0, 1)),
        ((1, 0), (1, 0)),
        ((1, 1), (1, 1)),
    ]


def test_pair_runs_refuses_a_different_prompt(tmp_path: Path) -> None:
    run_a, run_b = write_run(tmp_path / "a", ["x", "y"]), write_run(tmp_path / "b", ["x", "z"])
    with pytest.raises(
        UnpairedRunsError, match=r"not paired: image \(1, 0\) has prompt 'y' in A and 'z' in B"
    ) as caught:
        pair_runs(run_a, run_b)
    error = caught.value
    assert (error.key, error.field, error.value_a, error.value_b) == ((1, 0), "prompt", "y", "z")


def test_pair_runs_refuses_a_different_seed_or_key_set(tmp_path: Path) -> None:
    run_a = write_run(tmp_path / "a", ["x", "y"])
    with pytest.raises(UnpairedRunsError, match=r"image \(0, 0\) has seed 100 in A and 7 in B"):
        pair_runs(run_a, write_run(tmp_path / "b", ["x", "y"], seed_base=7))
    with pytest.raises(UnpairedRunsError, match=r"only in A \[\(1, 0\), \(1, 1\)\], only in B \[\]"):
        pair_runs(run_a, write_run(tmp_path / "c", ["x"]))


def test_layout_runs_pair_on_the_layouts_content_and_sampler_defaults(tmp_path: Path) -> None:
    """Image-to-image runs: the same layout content stored in two places pairs, another layout
    is refused naming it; an explicit zero_terminal_snr=false equals the key's absence."""
    a = write_run(tmp_path / "a", ["x"], init_image="/data/one/l.png", init_image_sha256="ab", strength=0.8)
    b = write_run(tmp_path / "b", ["x"], init_image="/copy/l.png", init_image_sha256="ab", strength=0.8,
                  zero_terminal_snr=False)  # fmt: skip
    assert len(pair_runs(a, b)) == 2
    c = write_run(tmp_path / "c", ["x"], init_image="/data/one/l.png", init_image_sha256="cd", strength=0.8)
    with pytest.raises(UnpairedRunsError, match=r"init_image \(content\) 'ab' in A and 'cd' in B"):
        pair_runs(a, c)
    d = write_run(tmp_path / "d", ["x"], init_image="/data/one/l.png", init_image_sha256="ab", strength=0.6)
    with pytest.raises(UnpairedRunsError, match="sampler setting 'strength' 0.8 in A and 0.6 in B"):
        pair_runs(a, d)
    assert len(pair_runs(a, d, allow_sampler_mismatch=True)) == 2
