"""Reading generation manifests and unlabelled pairs; every bad input names the file/row/key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import make_pairs, make_run, png_bytes
from prefdiff.label.errors import StudyError
from prefdiff.label.sources import collection_source, evaluation_source, read_manifest


def _rewrite(manifest: Path, index: int, **changes: object) -> None:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[index].update(changes)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_evaluation_pairs_by_prompt_and_image_index(tmp_path: Path) -> None:
    """Run A's image is image 0, run B's image 1; keys, seeds and models carried over."""
    prompts = ["a cat", "a dog"]
    run_a = make_run(tmp_path / "tuned", prompts, "sd", images_per_prompt=2)
    run_b = make_run(tmp_path / "base", prompts, "sd-base", images_per_prompt=2)
    _rewrite(run_a / "manifest.jsonl", 0, lora="dpo-lora")
    _rewrite(run_b / "manifest.jsonl", 0, unet="tuned-unet", note="kept")  # extra keys are fine
    source = evaluation_source(run_a, run_b)
    assert [(c.prompt_index, c.image_index) for c in source.comparisons] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    first = source.comparisons[0]
    assert (first.root_0, first.root_1, first.path_0) == (0, 1, "images/0000_0.png")
    assert (first.model_0, first.model_1, first.seed) == ("sd+dpo-lora", "sd-base+unet:tuned-unet", 1000)
    assert (source.run_a, source.run_b) == ("tuned", "base")


def test_evaluation_refuses_runs_sampled_differently_unless_allowed(tmp_path: Path) -> None:
    """A 4-step guidance-free run against a 25-step one is refused, naming the setting, unless
    the study asks for it."""
    run_a = make_run(tmp_path / "turbo", ["x"], "m")
    run_b = make_run(tmp_path / "base", ["x"], "m")
    _rewrite(run_a / "manifest.jsonl", 0, steps=4, guidance_scale=0.0)
    _rewrite(run_b / "manifest.jsonl", 0, steps=25, guidance_scale=0.0)
    with pytest.raises(
        StudyError, match=r"sampler setting 'steps' differs at .*\(0, 0\): 4 .* 25.*--allow-sampler-mismatch"
    ):
        evaluation_source(run_a, run_b)
    assert len(evaluation_source(run_a, run_b, allow_sampler_mismatch=True).comparisons) == 1


def test_evaluation_refuses_different_seeds(tmp_path: Path) -> None:
    """Same prompt, different seed: the error names the key and both seeds."""
    run_a = make_run(tmp_path / "a", ["x", "y"], "m")
    run_b = make_run(tmp_path / "b", ["x", "y"], "m")
    _rewrite(run_b / "manifest.jsonl", 1, seed=7)
    with pytest.raises(StudyError, match=r"seed differs at .*\(1, 0\): 1010 .* 7"):
        evaluation_source(run_a, run_b)


def test_evaluation_refuses_different_prompts(tmp_path: Path) -> None:
    """A different prompt at the same key is refused."""
    run_a = make_run(tmp_path / "a", ["x", "y"], "m")
    run_b = make_run(tmp_path / "b", ["x", "z"], "m")
    with pytest.raises(StudyError, match="prompt differs"):
        evaluation_source(run_a, run_b)


def test_evaluation_refuses_different_key_sets(tmp_path: Path) -> None:
    """Runs must hold the same (prompt_index, image_index) set."""
    run_a = make_run(tmp_path / "a", ["x", "y"], "m")
    run_b = make_run(tmp_path / "b", ["x"], "m")
    with pytest.raises(StudyError, match=r"only in A \[\(1, 0\)\]"):
        evaluation_source(run_a, run_b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"file": "../../etc/passwd"}, "must be relative and inside"),
        ({"file": "/etc/passwd"}, "must be relative and inside"),
        ({"file": "images/missing.png"}, "image file not found"),
        ({"seed": "12"}, "key 'seed' has the wrong type"),
        ({"prompt_index": True}, "key 'prompt_index' has the wrong type"),
        ({"category": 3}, "'category' must be a string or null"),
    ],
)
def test_manifest_row_errors(tmp_path: Path, change: dict, message: str) -> None:
    """Each malformed row is refused with the file and line number."""
    run = make_run(tmp_path / "a", ["x", "y"], "m")
    _rewrite(run / "manifest.jsonl", 1, **change)
    with pytest.raises(StudyError, match=f"manifest.jsonl:2: .*{message}"):
        read_manifest(run)


def test_manifest_missing_key_and_bad_json(tmp_path: Path) -> None:
    """A missing key and a line that is not JSON are both named."""
    run = make_run(tmp_path / "a", ["x"], "m")
    rows = json.loads((run / "manifest.jsonl").read_text())
    del rows["model"]
    (run / "manifest.jsonl").write_text(json.dumps(rows) + "\n")
    with pytest.raises(StudyError, match="manifest.jsonl:1: missing key 'model'"):
        read_manifest(run)
    (run / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(StudyError, match="manifest.jsonl:1: not valid JSON"):
        read_manifest(run)
    with pytest.raises(StudyError, match="file not found"):
        read_manifest(tmp_path / "nowhere")


def test_symlink_out_of_the_run_is_refused(tmp_path: Path) -> None:
    """An image that is a symlink to a file outside the run directory is refused."""
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes((1, 2, 3)))
    run = make_run(tmp_path / "a", ["x"], "m")
    (run / "images" / "0000_0.png").unlink()
    os.symlink(outside, run / "images" / "0000_0.png")
    with pytest.raises(StudyError, match="resolves outside"):
        read_manifest(run)


def test_pairs_file_accepts_both_key_styles(tmp_path: Path) -> None:
    """image_0/image_1 rows and chosen/rejected rows (the label is ignored)."""
    pairs = make_pairs(tmp_path / "pairs", 2)
    with pairs.open("a") as handle:
        handle.write(json.dumps({"prompt": "old", "chosen": "p0_1.png", "rejected": "p1_0.png"}) + "\n")
    source = collection_source(pairs)
    assert [c.path_0 for c in source.comparisons] == ["p0_0.png", "p1_0.png", "p0_1.png"]
    assert collection_source(tmp_path / "pairs").comparisons == source.comparisons  # folder with pairs.jsonl


def test_pairs_file_errors(tmp_path: Path) -> None:
    """Missing image key, same image twice, traversal: each names the line."""
    pairs = make_pairs(tmp_path / "pairs", 1)
    for row, message in [
        ({"prompt": "p", "image_0": "p0_0.png"}, "missing key 'image_1'"),
        ({"prompt": "p", "image_0": "p0_0.png", "image_1": "p0_0.png"}, "both images are the same"),
        ({"prompt": "p", "image_0": "../x.png", "image_1": "p0_0.png"}, "must be relative"),
    ]:
        pairs.write_text(json.dumps(row) + "\n")
        with pytest.raises(StudyError, match=f"pairs.jsonl:1: .*{message}"):
            collection_source(pairs)


def test_pairs_folder(tmp_path: Path) -> None:
    """One sub-folder per pair with prompt.txt and two images, in file-name order."""
    for k in range(2):
        sub = tmp_path / "folder" / f"pair{k}"
        sub.mkdir(parents=True)
        (sub / "prompt.txt").write_text(f"prompt {k}\n")
        (sub / "b.png").write_bytes(png_bytes((k, 0, 0)))
        (sub / "a.png").write_bytes(png_bytes((0, k, 0)))
    source = collection_source(tmp_path / "folder")
    assert [(c.prompt, c.path_0, c.path_1) for c in source.comparisons] == [
        ("prompt 0", "pair0/a.png", "pair0/b.png"),
        ("prompt 1", "pair1/a.png", "pair1/b.png"),
    ]
    (tmp_path / "folder" / "pair1" / "c.png").write_bytes(png_bytes((9, 9, 9)))
    with pytest.raises(StudyError, match="pair1: expected exactly two images, found 3"):
        collection_source(tmp_path / "folder")
