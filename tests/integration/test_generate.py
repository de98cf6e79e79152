"""Generation on prompt sets: paired seeds, batching, resume, manifest."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from prefdiff.evaluate.generate import SamplerSettings, generate_prompt_set, paired_seed


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_prompt_set_is_paired_batched_and_resumable(tiny_sd, tmp_path):
    prompts = tmp_path / "prompts.tsv"
    prompts.write_text("Prompt\tCategory\na red circle\tshapes\na blue square\tshapes\n")
    settings = SamplerSettings(steps=2, guidance_scale=3.0, resolution=32, scheduler="ddim")
    one = generate_prompt_set(tiny_sd, prompts, 2, tmp_path / "one", settings=settings, batch_size=1)
    four = generate_prompt_set(tiny_sd, prompts, 2, tmp_path / "four", settings=settings, batch_size=4)
    assert [p.name for p in one] == ["p00000_i000.png", "p00000_i001.png", "p00001_i000.png", "p00001_i001.png"]
    for a, b in zip(one, four, strict=True):  # the seed, not the batch, fixes the starting noise
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 1
    assert np.abs(_pixels(one[0]) - _pixels(one[1])).max() > 0  # two images of a prompt differ

    records = [json.loads(line) for line in (tmp_path / "one" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["prompt_index"], r["image_index"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert records[3]["seed"] == paired_seed(0, 1, 1) and records[3]["category"] == "shapes"
    assert records[0]["scheduler"] == "ddim" and records[0]["steps"] == 2 and records[0]["resolution"] == 32

    # resume: existing images are kept as they are, missing ones are made
    (tmp_path / "one" / "p00001_i001.png").unlink()
    before = (tmp_path / "one" / "p00000_i000.png").stat().st_mtime_ns
    again = generate_prompt_set(tiny_sd, prompts, 2, tmp_path / "one", settings=settings, batch_size=4)
    assert all(p.exists() for p in again)
    assert (tmp_path / "one" / "p00000_i000.png").stat().st_mtime_ns == before
    assert np.abs(_pixels(again[3]) - _pixels(four[3])).max() <= 1
