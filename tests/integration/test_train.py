"""The training loop on the tiny pipeline: LoRA updates, invariances, resume, outputs."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from prefdiff.errors import ConfigError
from prefdiff.models import load_backbone
from prefdiff.models.lora import lora_state_dict
from prefdiff.objectives import OBJECTIVES
from prefdiff.train.loop import train

from ..integration_helpers import assert_same_weights, lora_weights, metrics, tiny_config, write_images_jsonl


def test_one_dpo_step_changes_lora_and_not_base(tiny_sd, shapes_parquet, tmp_path):
    backbone = load_backbone(tiny_sd)
    base_before = {k: v.clone() for k, v in backbone.unet.state_dict().items()}
    config = tiny_config(tiny_sd, shapes_parquet, tmp_path / "run", "train.max_steps=1")
    result = train(config, backbone=backbone)
    unet = backbone.unet
    lora = lora_state_dict(unet)
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in lora.items()), "B moved off zero"
    base_after = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}
    assert base_after.keys() == base_before.keys()
    for key, value in base_before.items():
        assert torch.equal(value, base_after[key]), f"base weight {key} changed"
    row = metrics(result.run_dir)[0]
    assert row["loss"] == pytest.approx(0.693147, abs=1e-4)  # ln 2 at initialisation
    for key in (
        "implicit_acc",
        "reward_margin",
        "winner_term",
        "loser_term",
        "policy_err_w",
        "ref_err_l",
        "grad_norm",
        "lr",
    ):
        assert key in row


@pytest.mark.parametrize("objective", ["dpo", "sft"])
def test_grad_accumulation_1x8_2x4_8x1_give_the_same_update(tiny_sd, shapes_parquet, tmp_path, objective):
    """Eight pairs per optimizer step, split 1x8, 2x4 or 8x1: the same gradient (logged norm) and
    the same weights. Adam's eps is raised to 1e-2 so that its update is a smooth function of the
    gradient: with eps=1e-8, coordinates whose gradient is ~1e-8 turn float round-off (summation
    order) into sign flips of a full lr-sized step, which would hide real differences in noise.
    beta is 500: DPO multiplies a difference of two ~1.1 errors by beta/2, so fp32 round-off that
    depends on the batch shape (~1e-7) is amplified by beta; at 5000 it reaches 1e-4 in step 2."""
    runs = {}
    for batch, accum in ((1, 8), (2, 4), (8, 1)):
        out = tmp_path / f"b{batch}a{accum}"
        config = tiny_config(
            tiny_sd,
            shapes_parquet,
            out,
            f"train.batch_size={batch}",
            f"train.grad_accum_steps={accum}",
            f"objective.name={objective}",
            "optim.eps=1e-2",
            "objective.beta=500",
        )
        train(config)
        runs[(batch, accum)] = (lora_weights(out), metrics(out))
    reference_weights, reference_metrics = runs[(8, 1)]
    for key in ((1, 8), (2, 4)):
        weights, rows = runs[key]
        assert_same_weights(weights, reference_weights, atol=2e-6)
        for a, b in zip(rows, reference_metrics, strict=True):
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


MENU = [
    name
    for name in OBJECTIVES.names()
    if name not in ("dpo", "sft") and not getattr(OBJECTIVES.get(name), "needs_unpaired", False)
]
VARIANTS = [(name, ()) for name in MENU] + [
    ("dpo", ("objective.winner_guard=true",)),
    ("dpo", ("objective.label_smoothing=0.1",)),
    ("dpo", ("objective.beta=auto",)),
    ("kto", ("data.unpaired=true",)),  # the reference point is taken over the whole step
]


@pytest.mark.parametrize(("objective", "extra"), VARIANTS, ids=[f"{n}{''.join(e)}" for n, e in VARIANTS])
def test_every_objective_accumulates_1x8_as_8x1(tiny_sd, shapes_parquet, tmp_path, objective, extra):
    """The accumulation invariance for the rest of the menu, the winner guard (one scale per pair,
    so batch-independent), label smoothing and beta=auto (chosen from the same first pairs however
    they are batched), with the settings of the test above (two steps)."""
    runs = {}
    for batch, accum in ((1, 8), (8, 1)):
        out = tmp_path / f"b{batch}a{accum}"
        beta = (
            [] if objective == "mapo" or any(e.startswith("objective.beta") for e in extra) else ["objective.beta=500"]
        )
        config = tiny_config(
            tiny_sd,
            shapes_parquet,
            out,
            f"train.batch_size={batch}",
            f"train.grad_accum_steps={accum}",
            f"objective.name={objective}",
            "optim.eps=1e-2",
            "train.max_steps=2",
            *beta,
            *extra,
        )
        train(config)
        runs[batch] = (lora_weights(out), metrics(out))
    assert_same_weights(runs[1][0], runs[8][0], atol=2e-6)
    for a, b in zip(runs[1][1], runs[8][1], strict=True):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        if "guard_scale" in b:
            assert a["guard_scale"] == pytest.approx(b["guard_scale"], rel=1e-4) and b["guard_scale"] <= 1.0


def test_kto_trains_on_an_images_jsonl(tiny_sd, shapes_parquet, tmp_path):
    """Likes and dislikes in an images.jsonl: KTO starts at loss 0.5 with z = 0, moves the LoRA,
    and logs its own terms."""
    images = write_images_jsonl(shapes_parquet, tmp_path / "likes")
    config = tiny_config(tiny_sd, images, tmp_path / "run", "objective.name=kto", "train.max_steps=3")
    result = train(config)
    rows = metrics(result.run_dir)
    assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-5) and rows[0]["reference_point"] == 0.0
    for key in ("kl_estimate", "reward_desirable", "reward_undesirable", "desirable_share", "implicit_acc"):
        assert key in rows[-1]
    assert any(v.abs().max() > 0 for k, v in lora_weights(result.run_dir).items() if "lora.up" in k)


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streaming"])
def test_resumed_run_equals_uninterrupted(tiny_sd, shapes_parquet, tmp_path, streaming):
    """4 steps straight vs 2 steps, stop, resume to 4: same weights. LoRA dropout makes the
    torch RNG matter, warm-up makes the scheduler state matter, the data stream the position
    (streamed: a resumed run reads only the window that holds its next slot)."""
    common = (
        "train.checkpoint_every=2",
        "lora.dropout=0.1",
        "optim.warmup_steps=3",
        "data.random_flip=true",
        f"data.streaming={str(streaming).lower()}",
        "data.shuffle_buffer=8",
    )
    straight = tiny_config(tiny_sd, shapes_parquet, tmp_path / "straight", "train.max_steps=4", *common)
    train(straight)
    first = tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=2", *common)
    train(first)
    # a crash after step 3 was logged but before its checkpoint: that row is logged again on resume
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 99.0}\n')
    second = tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=4", *common)
    result = train(second, resume="latest")
    assert result.state.global_step == 4 and result.state.next_slot == 8
    assert_same_weights(lora_weights(tmp_path / "resumed"), lora_weights(tmp_path / "straight"), atol=1e-7)
    resumed_rows = metrics(tmp_path / "resumed")
    assert [r["step"] for r in resumed_rows] == [1, 2, 3, 4]
    assert resumed_rows[-1]["loss"] == pytest.approx(metrics(tmp_path / "straight")[-1]["loss"], rel=1e-6)
    # keep_last: only the newest checkpoints stay
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]


def test_full_finetune_saves_unet_and_moves_weights(tiny_sd, shapes_parquet, tmp_path):
    from diffusers import UNet2DConditionModel

    # beta 500: grad-enabled and no-grad forwards may take different CPU kernels (~1e-7 apart),
    # which beta 5000 would lift into the 4th digit of the initial loss
    config = tiny_config(
        tiny_sd, shapes_parquet, tmp_path / "full", "lora.enabled=false", "optim.lr=1e-4", "objective.beta=500"
    )
    result = train(config)
    assert result.final_weights.name == "unet"
    tuned = UNet2DConditionModel.from_pretrained(str(result.final_weights))
    base = UNet2DConditionModel.from_pretrained(str(tiny_sd), subfolder="unet")
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed, "full fine-tuning changed no weight"
    assert metrics(result.run_dir)[0]["loss"] == pytest.approx(0.693147, abs=1e-4)


def test_saved_lora_loads_with_load_lora_weights_and_changes_output(tiny_sd, shapes_parquet, tmp_path):
    from diffusers import StableDiffusionPipeline

    config = tiny_config(tiny_sd, shapes_parquet, tmp_path / "run", "train.max_steps=3", "optim.lr=1e-2")
    train(config)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    pipe.set_progress_bar_config(disable=True)

    def sample():
        return pipe(
            "a red circle",
            num_inference_steps=2,
            height=32,
            width=32,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images

    before = sample()
    pipe.load_lora_weights(str(tmp_path / "run" / "lora"))
    after = sample()
    assert abs(after - before).max() > 1e-4


def test_run_directory_records_config_version_and_commit(tiny_sd, shapes_parquet, tmp_path):
    import json

    import yaml

    config = tiny_config(tiny_sd, shapes_parquet, tmp_path / "run", "train.max_steps=1", "objective.beta=2500")
    train(config)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["objective"]["beta"] == 2500.0 and saved["model"]["path"] == str(tiny_sd)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["prefdiff_version"] and "git_commit" in info


def test_empty_dataset_is_a_clear_error(tiny_sd, tmp_path):
    from prefdiff.errors import DataError
    from prefdiff.toy.synthetic import write_shapes_parquet

    only_ties = write_shapes_parquet(tmp_path / "ties.parquet", num_rows=4, size=32, tie_fraction=1.0)
    with pytest.raises(DataError, match=r"no usable pairs \(kept 0, dropped 4 \(tie"):
        train(tiny_config(tiny_sd, only_ties, tmp_path / "run"))


def test_v_prediction_bf16_checkpointing_adafactor_cosine(tiny_sd_v, shapes_parquet, tmp_path):
    """The less-travelled options run together: v-prediction target, bf16 autocast with frozen
    weights in bf16, gradient checkpointing, Adafactor and a cosine schedule after warm-up."""
    config = tiny_config(
        tiny_sd_v,
        shapes_parquet,
        tmp_path / "run",
        "train.max_steps=3",
        "train.mixed_precision=bf16",
        "train.gradient_checkpointing=true",
        "optim.name=adafactor",
        "optim.scheduler=cosine",
        "optim.warmup_steps=1",
        "train.validation_prompts=[a red circle]",
        "train.validation_steps=2",
    )
    result = train(config)
    assert len(list((result.run_dir / "validation").rglob("*.png"))) == 1  # decoding under bf16 works
    rows = metrics(result.run_dir)
    assert rows[0]["loss"] == pytest.approx(0.693147, abs=1e-3)
    # warm-up 1 of 3 steps, then cosine over the remaining 2: multipliers 1, 1, 0.5
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 1e-3, 5e-4], abs=1e-9)
    assert all(torch.isfinite(v).all() for v in lora_weights(result.run_dir).values())


def test_missing_optional_packages_are_clear_errors(tiny_sd, shapes_parquet, tmp_path, monkeypatch):
    """Whether or not bitsandbytes and wandb are installed here, an environment without them
    (a None entry in sys.modules makes the import fail) gets a clear error naming the extra."""
    import sys

    from prefdiff.errors import ConfigError

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"adamw8bit needs bitsandbytes: pip install 'prefdiff\[bnb\]'"):
        train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "a", "optim.name=adamw8bit"))
    with pytest.raises(ConfigError, match=r"report_to=wandb needs wandb: pip install 'prefdiff\[wandb\]'"):
        train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "b", "train.report_to=wandb"))


def test_exported_lora_with_alpha_not_rank_reproduces_the_trained_unet(tiny_sd, shapes_parquet, tmp_path):
    """alpha / rank = 4: load_lora_weights must apply the same scale the trainer used."""
    from diffusers import StableDiffusionPipeline

    backbone = load_backbone(tiny_sd)
    config = tiny_config(
        tiny_sd, shapes_parquet, tmp_path / "run", "train.max_steps=3", "optim.lr=1e-2", "lora.rank=4", "lora.alpha=16"
    )
    train(config, backbone=backbone)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    pipe.load_lora_weights(str(tmp_path / "run" / "lora"))
    torch.manual_seed(0)
    noisy, t, cond = torch.randn(1, 4, 4, 4), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        trained = backbone.unet.eval()(noisy, t, encoder_hidden_states=cond).sample
        loaded = pipe.unet(noisy, t, encoder_hidden_states=cond).sample
        base = StableDiffusionPipeline.from_pretrained(str(tiny_sd)).unet(noisy, t, encoder_hidden_states=cond).sample
    assert (trained - base).abs().max() > 1e-3  # the adapter does something
    assert torch.allclose(trained, loaded, atol=1e-5)


def test_full_finetune_bf16_reference_equals_policy_at_start(tiny_sd, shapes_parquet, tmp_path):
    """The frozen copy keeps its norm layers in fp32 like the policy, so step 0 is ln 2 under bf16."""
    config = tiny_config(
        tiny_sd,
        shapes_parquet,
        tmp_path / "run",
        "train.max_steps=1",
        "lora.enabled=false",
        "train.mixed_precision=bf16",
        "objective.beta=500",
    )
    rows = metrics(train(config).run_dir)
    assert rows[0]["loss"] == pytest.approx(0.693147, abs=2e-3)
    assert rows[0]["policy_err_w"] == pytest.approx(rows[0]["ref_err_w"], rel=1e-3)


def test_resuming_from_an_older_checkpoint_abandons_later_ones(tiny_sd, shapes_parquet, tmp_path):
    from prefdiff.train.checkpoint import list_checkpoints

    run = tmp_path / "run"
    train(
        tiny_config(tiny_sd, shapes_parquet, run, "train.max_steps=3", "train.checkpoint_every=1", "train.keep_last=3")
    )
    older = run / "checkpoints" / "step_0000001"
    train(
        tiny_config(tiny_sd, shapes_parquet, run, "train.max_steps=2", "train.checkpoint_every=1", "train.keep_last=3"),
        resume=str(older),
    )
    assert [p.name for p in list_checkpoints(run)] == ["step_0000001", "step_0000002"]


def test_a_timestep_set_survives_resume(tiny_sd, shapes_parquet, tmp_path):
    """train.timesteps: 4 steps straight equal 2 + resume to 4, the run directory records the set,
    and a resume that drops the set is refused (it would train the rest on other timesteps)."""
    common = ("train.checkpoint_every=2", "train.timesteps=[249,499,749,999]")
    straight = tiny_config(tiny_sd, shapes_parquet, tmp_path / "straight", "train.max_steps=4", *common)
    train(straight)
    train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=2", *common))
    recorded = yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())
    assert recorded["train"]["timesteps"] == [249, 499, 749, 999]
    dropped = tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=4")
    with pytest.raises(ConfigError, match=r"train.timesteps.*records \[249, 499, 749, 999\].*None"):
        train(dropped, resume="latest")
    reordered = ("train.checkpoint_every=2", "train.timesteps=[999,749,499,249]")  # the same set: accepted
    train(tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=4", *reordered), resume="latest")
    assert_same_weights(lora_weights(tmp_path / "resumed"), lora_weights(tmp_path / "straight"), atol=1e-7)
    full_range = tiny_config(tiny_sd, shapes_parquet, tmp_path / "full", "train.max_steps=4")
    train(full_range)
    with pytest.raises(AssertionError):  # the set changed the updates
        assert_same_weights(lora_weights(tmp_path / "full"), lora_weights(tmp_path / "straight"), atol=1e-7)


def test_held_out_evaluation_selects_a_step_and_survives_resume(tiny_sd, shapes_parquet, tmp_path):
    """Implicit accuracy on held-out pairs every 2 steps and at the last; select_step=best keeps
    that step's adapters as the result; a resumed run's curve equals the uninterrupted one's."""
    common = (
        f"train.eval_data={shapes_parquet}",
        "train.eval_every=2",
        "train.eval_draws=2",
        "train.select_step=best",
        "train.checkpoint_every=2",
        "optim.lr=3e-2",
    )
    straight = tiny_config(tiny_sd, shapes_parquet, tmp_path / "straight", "train.max_steps=5", *common)
    train(straight)
    run = tmp_path / "straight"
    rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 5]
    assert all(0.0 <= r["eval_implicit_acc"] <= 1.0 and r["eval_pairs"] > 0 for r in rows)
    assert sorted(p.name for p in (run / "steps").iterdir()) == ["step_0000002", "step_0000004", "step_0000005"]
    selection = json.loads((run / "selection.json").read_text())
    best = max(rows, key=lambda r: r["eval_implicit_acc"])
    assert selection["step"] == best["step"] and selection["rule"] == "best"
    assert_same_weights(lora_weights(run), lora_weights(run / "steps" / f"step_{best['step']:07d}"), atol=0)
    # the same run interrupted after step 2 and resumed: the same curve
    first = tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=2", *common)
    train(first)
    second = tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=5", *common)
    train(second, resume="latest")
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [2, 4, 5]
    for a, b in zip(resumed, rows, strict=True):
        assert a["eval_implicit_acc"] == pytest.approx(b["eval_implicit_acc"], abs=1e-9)
    assert json.loads((tmp_path / "resumed" / "selection.json").read_text())["step"] == selection["step"]
    assert_same_weights(lora_weights(tmp_path / "resumed"), lora_weights(run), atol=1e-7)
    # going on past a last step that was not a multiple of eval_every: step 5 stays a candidate, once
    longer = tiny_config(tiny_sd, shapes_parquet, tmp_path / "resumed", "train.max_steps=6", *common)
    train(longer, resume="latest")
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "eval.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # resumed from the step-4 checkpoint: 5 belonged to the abandoned end
    assert (tmp_path / "resumed" / "steps" / "step_0000006").is_dir()


def test_held_out_evaluation_settings_are_checked(tiny_sd, shapes_parquet, tmp_path):
    with pytest.raises(ConfigError, match="train.eval_every"):
        tiny_config(tiny_sd, shapes_parquet, tmp_path / "a", f"train.eval_data={shapes_parquet}")
    with pytest.raises(ConfigError, match="train.select_step"):
        tiny_config(tiny_sd, shapes_parquet, tmp_path / "b", "train.select_step=one_se")
    with pytest.raises(ConfigError, match="full fine-tune keeps no live reference"):
        tiny_config(
            tiny_sd,
            shapes_parquet,
            tmp_path / "d",
            f"train.eval_data={shapes_parquet}",
            "train.eval_every=1",
            "lora.enabled=false",
            "objective.name=sft",
        )
    config = tiny_config(
        tiny_sd, shapes_parquet, tmp_path / "c", f"train.eval_data={tmp_path / 'missing'}", "train.eval_every=1"
    )
    with pytest.raises(ConfigError, match="train.eval_data"):
        train(config)
