"""Generation on prompt sets: paired seeds, batching, resume, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prefdiff.errors import ConfigError, DataError
from prefdiff.evaluate.generate import SamplerSettings, generate_pngs, generate_prompt_set, paired_seed
from prefdiff.manifests import UnpairedRunsError, pair_runs


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


def test_unset_steps_and_guidance_are_each_pipelines_own(tiny_sd, tiny_sdxl, tiny_sd3, tiny_flux, tmp_path):
    """Read from the pipelines' own signatures: SDXL's base samples alone (no refiner) at 50 steps
    and guidance 5.0; what the user gives is kept."""
    defaults = {
        model: (settings.steps, settings.guidance_scale)
        for model in (tiny_sd, tiny_sdxl, tiny_sd3, tiny_flux)
        for settings in [SamplerSettings().with_pipeline_defaults(model)]
    }
    assert defaults == {tiny_sd: (50, 7.5), tiny_sdxl: (50, 5.0), tiny_sd3: (28, 7.0), tiny_flux: (28, 3.5)}
    given = SamplerSettings(steps=3, guidance_scale=None).with_pipeline_defaults(tiny_sdxl)
    assert (given.steps, given.guidance_scale) == (3, 5.0)
    generate_pngs(tiny_sdxl, ["a red circle"], [1], tmp_path / "xl", settings=SamplerSettings(guidance_scale=2.0))
    record = json.loads((tmp_path / "xl" / "manifest.jsonl").read_text())
    assert (record["steps"], record["guidance_scale"], record["resolution"]) == (50, 2.0, 64)  # its native size


def test_width_and_height_make_images_that_are_not_square(tiny_sd, tmp_path):
    wide = SamplerSettings(steps=2, resolution=32, width=48)
    paths = generate_pngs(tiny_sd, PROMPTS[:1], [1], tmp_path / "wide", settings=wide)
    assert Image.open(paths[0]).size == (48, 32)
    record = json.loads((tmp_path / "wide" / "manifest.jsonl").read_text())
    assert (record["width"], record.get("height"), record["resolution"]) == (48, None, 32)
    layout = _layouts(tmp_path / "layouts", 1)[0]
    for strength in (0.0, 0.5):  # the layout itself, resized; and SDEdit from it
        tall = SamplerSettings(steps=2, width=32, height=40, strength=strength)
        out = generate_pngs(tiny_sd, PROMPTS[:1], [1], tmp_path / f"tall_{strength}", settings=tall, init_images=layout)
        assert Image.open(out[0]).size == (32, 40)
    square = generate_pngs(
        tiny_sd, PROMPTS[:1], [1], tmp_path / "square", settings=SamplerSettings(2, width=32, height=32)
    )
    record = json.loads((tmp_path / "square" / "manifest.jsonl").read_text())
    assert Image.open(square[0]).size == (32, 32) and record["resolution"] == 32 and "width" not in record
    generate_pngs(tiny_sd, PROMPTS[:1], [1], tmp_path / "plain", settings=SamplerSettings(2, resolution=32))
    pair_runs(tmp_path / "square", tmp_path / "plain")  # the same square images however asked for
    with pytest.raises(DataError, match="sampler setting 'width'"):
        pair_runs(tmp_path / "wide", tmp_path / "plain")
    with pytest.raises(ConfigError, match="--height must be a multiple of 8"):
        generate_pngs(tiny_sd, PROMPTS[:1], [1], tmp_path / "odd", settings=SamplerSettings(2, height=30))


def test_an_sdxl_refiner_directory_is_refused_for_the_base(tmp_path):
    from prefdiff.errors import ModelLoadError

    refiner = tmp_path / "refiner"
    refiner.mkdir()
    index = {"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None]}
    (refiner / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="SDXL refiner's class; prefdiff tunes and samples the SDXL base"):
        SamplerSettings().with_pipeline_defaults(refiner)


def test_a_rerun_asking_for_other_settings_is_refused_before_it_mixes_two_runs(tiny_sd, tmp_path, monkeypatch):
    settings = SamplerSettings(steps=2, guidance_scale=3.0, resolution=32)
    generate_pngs(tiny_sd, PROMPTS, [1], tmp_path / "run", settings=settings)
    (tmp_path / "run" / "p0001_s1.png").unlink()
    with pytest.raises(ConfigError, match=r"already holds images made with steps=2 .* asks for steps=3: .* --steps"):
        generate_pngs(tiny_sd, PROMPTS, [1], tmp_path / "run", settings=SamplerSettings(3, 3.0, 32))
    with pytest.raises(ConfigError, match=r"made with lora=None .* --lora as before"):
        generate_pngs(tiny_sd, PROMPTS, [1], tmp_path / "run", lora=tmp_path, settings=settings)
    assert not (tmp_path / "run" / "p0001_s1.png").exists()
    monkeypatch.chdir(tiny_sd.parent)  # the same model spelt another way finishes the run
    generate_pngs(Path(tiny_sd.name), PROMPTS, [1], tmp_path / "run", settings=settings)
    assert (tmp_path / "run" / "p0001_s1.png").is_file()


PROMPTS = ["a red circle", "a blue square"]


def _layouts(folder, count, size=40):
    """``count`` colour layouts: a plain field with one coloured square each."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        pixels = np.full((size, size, 3), 200, dtype=np.uint8)
        pixels[5 + k : 20 + k, 8:30] = (30 * k % 255, 40, 160)
        path = folder / f"layout_{k}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("family", ["tiny_sd", "tiny_sdxl", "tiny_sd3", "tiny_flux"])
def test_layouts_give_the_same_image_at_batch_sizes_1_and_4(family, request, tmp_path):
    """SDEdit on the family's image-to-image pipeline: the same seed and layout give the same
    image however the run is batched, the layout changes the image, and the manifest records
    the layout and the strength."""
    model = request.getfixturevalue(family)
    layouts = _layouts(tmp_path / "layouts", 2)
    mapping = tmp_path / "layouts.jsonl"
    rows = [{"prompt": p, "image": f"layouts/{path.name}"} for p, path in zip(PROMPTS, layouts, strict=True)]
    mapping.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = SamplerSettings(steps=4, guidance_scale=3.0, resolution=32, strength=0.75)
    one = generate_prompt_set(model, None, 2, tmp_path / "one", settings=settings, batch_size=1, init_images=mapping)
    four = generate_prompt_set(
        model, mapping, 2, tmp_path / "four", settings=settings, batch_size=4, init_images=mapping
    )
    for a, b in zip(one, four, strict=True):
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 1
    assert Image.open(one[0]).size == (32, 32)
    records = [json.loads(line) for line in (tmp_path / "one" / "manifest.jsonl").read_text().splitlines()]
    assert [r["init_image"] for r in records] == [str(layouts[0].resolve())] * 2 + [str(layouts[1].resolve())] * 2
    assert {r["strength"] for r in records} == {0.75} and records[2]["prompt"] == "a blue square"
    # one layout for every prompt: prompt 1 now starts from layout 0, so its images change
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    same = generate_prompt_set(model, prompts, 2, tmp_path / "same", settings=settings, init_images=layouts[0])
    assert np.abs(_pixels(same[0]) - _pixels(one[0])).max() <= 1
    assert np.abs(_pixels(same[2]) - _pixels(one[2])).max() > 1
    # text-to-image from the same seeds is another image again, and its manifest has no layout keys
    plain = generate_prompt_set(model, prompts, 2, tmp_path / "plain", settings=SamplerSettings(steps=4, resolution=32))
    assert np.abs(_pixels(plain[0]) - _pixels(one[0])).max() > 1
    assert "init_image" not in json.loads((tmp_path / "plain" / "manifest.jsonl").read_text().splitlines()[0])


def test_strength_0_returns_the_layout(tiny_sd, tmp_path):
    (layout,) = _layouts(tmp_path / "layouts", 1, size=32)
    settings = SamplerSettings(steps=4, resolution=32, strength=0.0)
    (path,) = generate_pngs(tiny_sd, ["a red circle"], [3], tmp_path / "out", settings=settings, init_images=layout)
    assert np.array_equal(_pixels(path), _pixels(layout))


def test_missing_or_unreadable_layouts_are_named(tiny_sd, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    settings = SamplerSettings(steps=4, resolution=32, strength=0.5)
    with pytest.raises(DataError, match=r"--init-images .*nowhere.png: no such file"):
        generate_prompt_set(
            tiny_sd, prompts, 1, tmp_path / "a", settings=settings, init_images=tmp_path / "nowhere.png"
        )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read layout image .*broken.png"):
        generate_prompt_set(tiny_sd, prompts, 1, tmp_path / "b", settings=settings, init_images=broken)
    mapping = tmp_path / "layouts.jsonl"
    mapping.write_text(json.dumps({"prompt": "a red circle", "image": "gone.png"}) + "\n")
    with pytest.raises(DataError, match=r"layouts.jsonl:1: layout image not found: .*gone.png"):
        generate_prompt_set(tiny_sd, None, 1, tmp_path / "c", settings=settings, init_images=mapping)
    folder = tmp_path / "folder"
    _layouts(folder, 3)
    with pytest.raises(DataError, match=r"3 image\(s\) for 2 prompt\(s\)"):
        generate_prompt_set(tiny_sd, prompts, 1, tmp_path / "d", settings=settings, init_images=folder)
    with pytest.raises(ConfigError, match=r"--strength 0.1 with --steps 4 runs no denoising step"):
        generate_prompt_set(tiny_sd, prompts, 1, tmp_path / "e", settings=SamplerSettings(steps=4, strength=0.1),
                            init_images=folder)  # fmt: skip
    with pytest.raises(ConfigError, match="--init-images and --strength go together"):
        generate_prompt_set(
            tiny_sd, prompts, 1, tmp_path / "f", settings=SamplerSettings(steps=4), init_images=broken.parent / "folder"
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything was written


def test_few_step_runs_record_their_sampler_and_compare_refuses_a_mismatch(tiny_sd, tmp_path):
    """A 4-step guidance-free run with trailing spacing records its settings; pairing it with a
    run sampled otherwise is refused (naming the setting) unless allowed."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    turbo = SamplerSettings(steps=4, guidance_scale=0.0, resolution=32, timestep_spacing="trailing")
    generate_prompt_set(tiny_sd, prompts, 2, tmp_path / "turbo", settings=turbo)
    row = json.loads((tmp_path / "turbo" / "manifest.jsonl").read_text().splitlines()[0])
    assert (row["steps"], row["guidance_scale"], row["timestep_spacing"]) == (4, 0.0, "trailing")
    generate_prompt_set(tiny_sd, prompts, 2, tmp_path / "again", settings=turbo, lora=None)
    assert len(pair_runs(tmp_path / "turbo", tmp_path / "again")) == 2
    generate_prompt_set(
        tiny_sd, prompts, 2, tmp_path / "leading", settings=SamplerSettings(steps=4, guidance_scale=0.0, resolution=32)
    )
    with pytest.raises(
        UnpairedRunsError,
        match="sampler setting 'timestep_spacing' 'trailing' in A and None in B.*--allow-sampler-mismatch",
    ):
        pair_runs(tmp_path / "turbo", tmp_path / "leading")
    assert len(pair_runs(tmp_path / "turbo", tmp_path / "leading", allow_sampler_mismatch=True)) == 2
    with pytest.raises(ConfigError, match="--timestep-spacing 'sideways'"):
        generate_prompt_set(tiny_sd, prompts, 1, tmp_path / "x", settings=SamplerSettings(timestep_spacing="sideways"))


def test_zero_terminal_snr_errors_name_the_flag(tiny_sd, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    with pytest.raises(ConfigError, match=r"^--zero-terminal-snr: .*predicts epsilon"):
        generate_prompt_set(tiny_sd, prompts, 1, tmp_path / "a", settings=SamplerSettings(zero_terminal_snr=True))


def test_device_auto_and_cpu_agree_here_and_an_absent_gpu_is_one_line(tiny_sd, tmp_path):
    import torch
    from typer.testing import CliRunner

    from prefdiff.cli import app
    from prefdiff.evaluate.generate import Placement

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    settings = SamplerSettings(steps=2, guidance_scale=3.0, resolution=32)
    runs = {}
    for device in ("cpu", "auto"):
        runs[device] = generate_prompt_set(
            tiny_sd, prompts, 2, tmp_path / device, settings=settings, placement=Placement(device=device)
        )
    for a, b in zip(runs["cpu"], runs["auto"], strict=True):
        assert np.array_equal(_pixels(a), _pixels(b))
    record = json.loads((tmp_path / "auto" / "manifest.jsonl").read_text().splitlines()[0])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert record["device"] == expected and record["dtype"] == "fp32"
    pair_runs(tmp_path / "cpu", tmp_path / "auto")  # device and precision do not unpair runs
    if not torch.cuda.is_available():
        command = ["generate", "--model", str(tiny_sd), "--out", str(tmp_path / "x"), "--prompt", "a"]
        result = CliRunner().invoke(app, [*command, "--device", "cuda"])
        assert result.exit_code != 0 and "--device cuda: no CUDA device is available" in str(result.exception)
        assert not (tmp_path / "x").exists()
        result = CliRunner().invoke(app, [*command, "--dtype", "fp16"])
        assert result.exit_code != 0 and "--dtype fp16 needs a GPU" in str(result.exception)
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        Placement(device="tpu").resolve()


def test_bf16_generation_on_the_cpu_stays_close_to_fp32_with_the_memory_savers(tiny_sd, tmp_path):
    from prefdiff.evaluate.generate import Placement

    settings = SamplerSettings(steps=2, guidance_scale=3.0, resolution=32)
    full = generate_pngs(tiny_sd, ["a red circle"], [1], tmp_path / "fp32", settings=settings)
    half = generate_pngs(
        tiny_sd,
        ["a red circle"],
        [1],
        tmp_path / "bf16",
        settings=settings,
        placement=Placement(dtype="bf16", attention_slicing=True, vae_tiling=True),
    )
    difference = np.abs(_pixels(full[0]) - _pixels(half[0]))
    assert difference.mean() < 12  # the same noise: bf16 rounding, not another image
    assert json.loads((tmp_path / "bf16" / "manifest.jsonl").read_text())["dtype"] == "bf16"


@pytest.mark.slow
def test_two_processes_write_the_same_images_and_one_manifest(tiny_sd, tmp_path):
    import os
    import subprocess
    import sys

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green triangle\n")
    common = ["generate", "--model", str(tiny_sd), "--prompts", str(prompts), "--images-per-prompt", "3"]
    common += ["--steps", "2", "--resolution", "32", "--batch-size", "2"]
    one = subprocess.run([sys.executable, "-m", "prefdiff", *common, "--out", str(tmp_path / "one")], check=False)
    assert one.returncode == 0
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2"]
    launch += ["--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "-m", "prefdiff"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*launch, *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.png")) and len(names) == 9
    for name in names:
        assert np.abs(_pixels(tmp_path / "one" / name) - _pixels(tmp_path / "two" / name)).max() <= 1
    rows = {
        run: [json.loads(line) for line in (tmp_path / run / "manifest.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    }
    assert [(r["prompt_index"], r["image_index"], r["seed"]) for r in rows["two"]] == [
        (r["prompt_index"], r["image_index"], r["seed"]) for r in rows["one"]
    ]
    pair_runs(tmp_path / "one", tmp_path / "two")
    # compare scores across the two processes the same way: the same scores, one summary
    scorer = tmp_path / "redness.py"
    scorer.write_text("def score(image, prompt):\n    return float(sum(image.convert('RGB').getpixel((16, 16))))\n")
    compare = ["compare", str(tmp_path / "one"), str(tmp_path / "two"), "--scorer", f"python:{scorer}:score"]
    compare += ["--batch-size", "2"]
    single = subprocess.run([sys.executable, "-m", "prefdiff", *compare, "--out", str(tmp_path / "c1")], check=False)
    assert single.returncode == 0
    double = subprocess.run([*launch, *compare, "--out", str(tmp_path / "c2")], env=env, capture_output=True, text=True)
    assert double.returncode == 0, double.stderr[-3000:]
    assert (tmp_path / "c1" / "scores.jsonl").read_text() == (tmp_path / "c2" / "scores.jsonl").read_text()
    assert not list((tmp_path / "c2").glob(".scores_*"))
    # label-ai generates and scores its share on each process; the main one writes the same parquet
    # (one image per pipeline call and one thread on both sides, so the images match to the bit)
    label = ["label-ai", "--model", str(tiny_sd), "--prompts", str(prompts), "--scorer", f"python:{scorer}:score"]
    label += ["--steps", "2", "--resolution", "32", "--batch-size", "1", "--score-batch-size", "2"]
    alone = subprocess.run(
        [sys.executable, "-m", "prefdiff", *label, "--out", str(tmp_path / "l1")], env=env, check=False
    )
    assert alone.returncode == 0
    shared = subprocess.run([*launch, *label, "--out", str(tmp_path / "l2")], env=env, capture_output=True, text=True)
    assert shared.returncode == 0, shared.stderr[-3000:]
    import pyarrow.parquet as pq

    columns = ["caption", "label_0", "score_0", "score_1", "image_0_uid"]
    tables = [pq.read_table(tmp_path / run / "pairs.parquet", columns=columns).to_pylist() for run in ("l1", "l2")]
    assert tables[0] == tables[1] and len(tables[0]) == 3
    assert not list((tmp_path / "l2").glob(".label_scores_*"))
    # a rerun on two processes makes nothing and keeps the manifest
    again = subprocess.run([*launch, *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert again.returncode == 0
    assert [json.loads(line) for line in (tmp_path / "two" / "manifest.jsonl").read_text().splitlines()] == rows["two"]
