"""`prefdiff quickstart --out DIR [overrides]`: the whole Diffusion-DPO loop in the toy world.

on-policy pairs from the shipped base model (training captions) -> five simulated raters vote
-> a Pick-a-Pic-format parquet -> latent cache -> Diffusion-DPO and the SFT-on-winners baseline
-> paired generation on held-out captions -> win rates by the raters and by the oracle ->
DIR/summary.json and DIR/report.html. ``toy.family=sd3`` runs the same stages on the shipped
SD3-style flow base: Flow-DPO and flow SFT with that family's recipe, every image sampled with
the pipeline's own FlowMatchEulerDiscreteScheduler.

Every stage goes through the same code as real data (data readers, cache, trainer, generator,
compare; the oracle is a ``python:`` scorer). Each stage records the settings it ran with in
``stage.json`` and is reused when they match; a stage whose settings changed is redone, and so
is everything after it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import typer

from prefdiff.config import (
    Config,
    ModelConfig,
    ReferenceConfig,
    load_config,
    merge_into,
    parse_overrides,
    to_dict,
    validate,
)
from prefdiff.digest import weights_digest
from prefdiff.errors import ConfigError, PrefdiffError
from prefdiff.evaluate.generate import TIMESTEP_SPACINGS, SamplerSettings
from prefdiff.toy.config import ToyConfig
from prefdiff.toy.entries import TRAIN_RECORD, Entry, entry_config, parse_entries
from prefdiff.toy.world import HELD_OUT, caption_for, training_combos

ASSETS = Path(__file__).parent / "assets"
SHIPPED_BASES = {"sd": ASSETS / "base", "sd3": ASSETS / "base_sd3"}  # toy.family -> the pretrained toy base
SHIPPED_BASE = SHIPPED_BASES["sd"]
COMMON_RECIPE: dict[str, Any] = {
    "data": {"resolution": 32, "random_flip": True},
    "optim": {"warmup_steps": 20, "weight_decay": 0.0},
    "train": {
        "max_steps": 400,
        "batch_size": 16,
        "eval_every": 0,
        "checkpoint_every": 200,
        "keep_last": 1,
        "report_to": "none",
        "log_every": 5,
    },
}
# Per family: the LoRA, beta, lr and length chosen on that family's toy base (docs/tastes.md for the
# UNet base's, by the worst case over the tuning tastes; docs/toy.md for the flow base's).
# Flow-DPO's beta is on the scale of velocity errors: the flow base's per-sample errors are
# about 5x the UNet base's epsilon errors (0.30 against 0.063 on the training pairs),
# so beta 100 pulls as hard as the UNet's 500 does; 30 lets the policy move far enough to beat
# SFT on winners for every taste (beta 100 does not).
FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    "sd": {
        "lora": {"enabled": True, "rank": 16, "alpha": 16.0},
        "objective": {"beta": 200.0},
        "optim": {"lr": 1e-3},
        # chosen by the worst case over the tuning tastes (docs/tastes.md): 600 steps at beta 200; the
        # validation curve is recorded every 200 steps (train.select_step=one_se|best choose from it)
        "train": {"max_steps": 600, "eval_every": 200},
    },
    "sd3": {"lora": {"enabled": True, "rank": 16, "alpha": 16.0}, "objective": {"beta": 30.0}, "optim": {"lr": 1e-3}},
}


def recipe_for(family: str) -> dict[str, Any]:
    """The quickstart's training settings for ``family``: the common ones, then the family's."""
    recipe = copy.deepcopy(COMMON_RECIPE)
    for section, values in FAMILY_RECIPES[family].items():
        recipe.setdefault(section, {}).update(values)
    return recipe


STAGE_FORMAT = 2  # bump when a stage's output changes meaning, so older outputs are redone (2: soft labels)
OWNED_KEYS = {
    "objective.name": "it trains every objective of toy.objectives",
    "model.path": "use toy.base=DIR for another base",
    "data.path": "the data are the votes it collects",
    "output_dir": "use --out",
    "train.eval_data": "it is the validation pairs (toy.validation_pairs)",
}


VALIDATION_PLACEHOLDER = "<the quickstart's validation pairs>"
PAIR_SEED_OFFSETS = {"train": 0, "heldout": 1, "validation": 4}  # toy.seed + offset; 2 and 3 are the evaluation's


TOY_ALIASES = {"toy.sampler_steps": "toy.sample_steps", "toy.guidance": "toy.guidance_scale"}


def split_overrides(overrides: list[str]) -> tuple[ToyConfig, Config]:
    """``toy.*`` overrides into a ToyConfig, the rest into the training config (both strict)."""
    toy, train_overrides = ToyConfig(), []
    toy_updates: dict[str, Any] = {}
    for item in overrides:
        item = item.strip()
        key = item.split("=", 1)[0]
        if key in TOY_ALIASES:
            item, key = TOY_ALIASES[key] + item[len(key) :], TOY_ALIASES[key]
        if key in ("toy.oracle", "toy.base", "toy.family") and "=" in item:
            toy_updates[key[len("toy.") :]] = item.split("=", 1)[1]  # a name or path, never YAML (12:30 is not 750)
        elif item.startswith("toy."):
            toy_updates.update(parse_overrides([item[len("toy.") :]]))
        elif key in OWNED_KEYS:
            raise ConfigError(f"override '{key}' is set by the quickstart itself ({OWNED_KEYS[key]})")
        else:
            train_overrides.append(item)
    try:
        merge_into(toy, toy_updates)
    except ConfigError as err:
        raise ConfigError(str(err).replace("config key '", "config key 'toy.")) from None
    if toy.family not in FAMILY_RECIPES:
        raise ConfigError(f"config key 'toy.family': expected one of {', '.join(FAMILY_RECIPES)} (got {toy.family!r})")
    config = load_config()
    merge_into(config, recipe_for(toy.family))
    merge_into(config, parse_overrides(train_overrides))
    checks = [
        (getattr(toy, name) >= 1, name, "must be >= 1")
        for name in (
            "train_pairs",
            "heldout_pairs",
            "eval_images_per_caption",
            "sample_steps",
            "generate_batch",
            "raters",
        )
    ]
    checks += [
        (0.5 < toy.rater_agreement <= 1.0, "rater_agreement", "must be in (0.5, 1]: 0.5 is a coin flip"),
        (toy.seed >= 0, "seed", "must be >= 0"),
        (toy.validation_pairs >= 0, "validation_pairs", "must be >= 0"),
        (
            toy.validation_pairs > 0 or not config.train.eval_every,
            "validation_pairs",
            "must be >= 1 while train.eval_every is set (the evaluations are on them)",
        ),
        (toy.guidance_scale >= 0, "guidance_scale", "must be >= 0"),
        (toy.layouts_per_caption >= 0, "layouts_per_caption", "must be >= 0 (0: no layout section)"),
        (0 < toy.layout_strength <= 1, "layout_strength", "must be in (0, 1]"),
        (
            toy.timestep_spacing in ("auto", *TIMESTEP_SPACINGS),
            "timestep_spacing",
            f"must be auto or one of {', '.join(TIMESTEP_SPACINGS)}",
        ),
    ]
    for ok, name, rule in checks:
        if not ok:
            raise ConfigError(f"config key 'toy.{name}': {rule} (got {getattr(toy, name)})")
    if config.train.eval_every:
        config.train.eval_data = VALIDATION_PLACEHOLDER  # each run's own cache/validation, set per run
    validate(config)
    if toy.layouts_per_caption and int(toy.sample_steps * toy.layout_strength) < 1:
        raise ConfigError(
            f"config key 'toy.layout_strength': {toy.layout_strength} of {toy.sample_steps} sampler steps is no step; "
            "raise it or toy.sample_steps"
        )
    for entry in parse_entries(toy.objectives):  # every entry's settings, before any work
        entry_config(config, entry)
    return toy, config


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stage:
    """A directory whose contents were made with the settings ``key``: reused when the key
    matches (``done`` once finished), wiped and redone when it does not."""

    def __init__(self, out: Path, name: str, key: dict[str, Any]) -> None:
        self.dir = out / name
        self.name = f"{out.name}/{name}" if out.name == "samples" else name
        self.key = {"stage": self.name, "format": STAGE_FORMAT, **key}
        self.digest = _digest(self.key)

    def _record(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / "stage.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @property
    def done(self) -> bool:
        record = self._record()
        return bool(record and record.get("digest") == self.digest and record.get("finished"))

    def begin(self) -> None:
        record = self._record()
        if self.dir.exists() and record is None and any(self.dir.iterdir()):
            raise ConfigError(
                f"{self.dir} exists and was not made by the quickstart (no stage.json): choose another --out"
            )
        if self.dir.exists() and (record is None or record.get("digest") != self.digest):
            shutil.rmtree(self.dir)  # made with other settings (or by an older version): redo
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "stage.json").write_text(
            json.dumps({"digest": self.digest, "key": self.key, "finished": False}, indent=2, default=str)
        )

    def finish(self) -> None:
        (self.dir / "stage.json").write_text(
            json.dumps({"digest": self.digest, "key": self.key, "finished": True}, indent=2, default=str)
        )


def _write_prompts(path: Path, prompts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + "\n" for p in prompts))
    return path


def _training_config(config: Config, entry: Entry, base: Path, cache: Path, run_dir: Path) -> Config:
    """An entry's run: trained on ``cache/train``, evaluated (with train.eval_every) on ``cache/validation``."""
    run = entry_config(config, entry)
    merge_into(
        run,
        {
            "model": {"path": str(base)},
            "data": {"path": str(cache / "train")},
            "output_dir": str(run_dir),
        },
    )
    if run.train.eval_every and run.data.unpaired:  # per-image objectives: implicit accuracy is on pairs
        run.train.eval_every, run.train.eval_data, run.train.select_step = 0, "", "last"
    elif run.train.eval_every:
        run.train.eval_data = str(cache / "validation")
    validate(run)
    return run


def _training_key(run: Config) -> dict[str, Any]:
    """The settings a training run depends on (not where it reads and writes; an objective's
    key holds only its own fields)."""
    key = to_dict(run)
    key.pop("output_dir")
    key["data"].pop("path")
    key["model"].pop("path")
    key["train"].pop("eval_data")
    for section in ("data", "model", "train"):
        _drop_unset_later_keys(key[section], section)
    if key.get("reference") == to_dict(ReferenceConfig()):  # a section added after STAGE_FORMAT 2
        key.pop("reference")
    return key


LATER_KEYS: dict[str, dict[str, Any]] = {
    "data": {"unpaired": False, "allow_outside_paths": False},
    "model": {"zero_terminal_snr": False, "timestep_spacing": None},
    "train": {
        "timesteps": None,
        "compile": False,
        "eval_every": 0,
        "eval_draws": 4,
        "select_step": "last",
    },
}
"""Config keys added after STAGE_FORMAT 2, with their defaults, by section."""


def _drop_unset_later_keys(values: dict[str, Any], section: str = "data") -> None:
    """Keys added after STAGE_FORMAT 2 (:data:`LATER_KEYS`) enter a stage's key only when set, so
    outputs made before them stay valid."""
    for key, default in LATER_KEYS[section].items():
        if values.get(key, default) == default:
            values.pop(key, None)


def sampler_for(toy: ToyConfig, config: Config) -> SamplerSettings:
    """Every generated image's sampler: ``toy.sample_steps`` and ``toy.guidance_scale``, with the
    trailing spacing of few-step models when ``toy.timestep_spacing`` is auto and the run trains
    on ``train.timesteps``, and the zero-terminal-SNR schedule when the runs train with it."""
    spacing: str | None = toy.timestep_spacing
    if spacing == "auto":  # the flow families have no spacing (and refuse train.timesteps)
        spacing = "trailing" if config.train.timesteps is not None and toy.family == "sd" else None
    return SamplerSettings(
        steps=toy.sample_steps,
        guidance_scale=toy.guidance_scale,
        timestep_spacing=spacing,
        zero_terminal_snr=config.model.zero_terminal_snr,  # sample with the schedule the runs train on
    )


class StageRunner:
    """Runs or reuses ``total`` numbered stages, timing each into ``seconds``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []

    def __call__(self, number: int, stage: Stage, label: str, what: str, work: Callable[[], object]) -> Stage:
        start = time.perf_counter()
        if stage.done:
            typer.echo(f"[{number}/{self.total}] {stage.name}: reusing {stage.dir}")
            self.reused.append(stage.name)
        else:
            typer.echo(f"[{number}/{self.total}] {what} -> {stage.dir}")
            stage.begin()
            work()
            stage.finish()
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
        return stage


def _train_or_resume(run: Config, stage_dir: Path) -> None:
    """Train ``run``, resuming from its latest checkpoint when an interrupted attempt left one;
    writes its seconds and peak memory growth to ``TRAIN_RECORD`` (so a reused stage has them)."""
    from prefdiff.rss import RssSampler
    from prefdiff.train.checkpoint import list_checkpoints
    from prefdiff.train.loop import train

    start, sampler = time.perf_counter(), RssSampler(interval=0.01)
    try:
        # an attempt killed before its first checkpoint left a partial run in the stage: redo it
        resume = "latest" if list_checkpoints(stage_dir) else None
        train(run, resume=resume, overwrite=resume is None)
    finally:
        growth = sampler.stop()
    record = {"train_seconds": round(time.perf_counter() - start, 2), "peak_memory_mb": round(growth / 2**20, 1)}
    (stage_dir / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def run_quickstart(out: Path, overrides: list[str]) -> dict[str, Any]:
    """Run (or reuse) every stage into ``out``; returns the summary written to summary.json."""
    from prefdiff.data.cache import CacheSettings, build_cache, finish_cache
    from prefdiff.evaluate.generate import generate_prompt_set
    from prefdiff.evaluate.scorers import load_mixed
    from prefdiff.models import load_backbone
    from prefdiff.objectives.base import OBJECTIVES, objective_help
    from prefdiff.toy.evaluation import evaluate_layouts, evaluate_quickstart, tuned_weights
    from prefdiff.toy.oracle import oracle_fingerprint, oracle_spec
    from prefdiff.toy.report import write_quickstart_report
    from prefdiff.toy.votes import label_pairs

    toy, config = split_overrides(overrides)
    base = Path(toy.base) if toy.base else SHIPPED_BASES[toy.family]
    family = load_backbone(base).family  # a clear error for a bad base before any work
    if family != toy.family:
        raise ConfigError(f"config key 'toy.base': {base} is an {family} pipeline; set toy.family={family}")
    if config.model != ModelConfig() or config.train.timesteps is not None:  # and for model.* / train.timesteps
        load_backbone(base, config.model).use_timesteps(config.train.timesteps)
    spec = oracle_spec(toy.oracle)
    try:
        scorer = load_mixed(spec)  # and for a bad oracle
    except PrefdiffError as err:
        raise ConfigError(f"config key 'toy.oracle': {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    sampler = sampler_for(toy, config)
    entries = parse_entries(toy.objectives)
    run_stage = StageRunner(total=5 + len(entries) + (1 if toy.layouts_per_caption else 0))

    # ---- 1. on-policy pairs: two images per prompt from the base model
    combos = training_combos()
    pair_prompts = {
        "train": [caption_for(*combos[i % len(combos)]) for i in range(toy.train_pairs)],
        "heldout": [caption_for(*HELD_OUT[i % len(HELD_OUT)]) for i in range(toy.heldout_pairs)],
    }
    validating = bool(toy.validation_pairs and config.train.eval_every)  # made only when something evaluates on them
    if validating:  # the training captions, other seeds: pairs like the training ones, never trained on
        pair_prompts["validation"] = [caption_for(*combos[i % len(combos)]) for i in range(toy.validation_pairs)]
    base_key = {
        "base": str(base.resolve()),
        "weights": weights_digest(base, "*/*"),
        "sampler": sampler.recorded(),  # the few-step keys only when set: older outputs stay valid
        "seed": toy.seed,
    }
    counts = {"train": toy.train_pairs, "heldout": toy.heldout_pairs}
    if validating:  # in the key only when there are some: outputs made before them stay valid
        counts["validation"] = toy.validation_pairs
    pairs = Stage(out, "pairs", {**base_key, **counts})

    def make_pairs() -> None:
        for name, prompts in pair_prompts.items():
            prompts_file = _write_prompts(pairs.dir / f"{name}_prompts.txt", prompts)
            generate_prompt_set(
                base,
                prompts_file,
                2,
                pairs.dir / name,
                settings=sampler,
                base_seed=toy.seed + PAIR_SEED_OFFSETS[name],
                batch_size=toy.generate_batch,
            )

    run_stage(
        1,
        pairs,
        "pairs",
        f"on-policy pairs from the base model: {toy.train_pairs} training + "
        f"{toy.validation_pairs if validating else 0} validation + {toy.heldout_pairs} held-out",
        make_pairs,
    )

    # ---- 2. votes: five raters per pair, calibrated to the oracle
    oracle_key = {"spec": spec, "source": oracle_fingerprint(spec)}
    votes = Stage(
        out,
        "votes",
        {"pairs": pairs.digest, "oracle": oracle_key, "agreement": toy.rater_agreement, "raters": toy.raters},
    )
    what = f"votes by {toy.raters} simulated raters ({toy.oracle}, single-rater agreement {toy.rater_agreement})"
    run_stage(2, votes, "votes", what, lambda: label_pairs(pairs.dir, votes.dir, scorer, toy))
    vote_stats = json.loads((votes.dir / "votes.json").read_text())

    # ---- 3. cache: latents and text conditioning of both pair sets, once
    data_key = asdict(config.data)
    data_key.pop("path")
    _drop_unset_later_keys(data_key)
    cache = Stage(out, "cache", {"votes": votes.digest, "data": data_key})

    def make_cache() -> None:
        backbone = load_backbone(base)
        for name in pair_prompts:
            data = copy.deepcopy(config.data)
            data.path = str(votes.dir / f"{name}.parquet")
            settings = CacheSettings(resolution=config.data.resolution, flip_copies=config.data.random_flip)
            finish_cache(cache.dir / name, build_cache(backbone, data, cache.dir / name, settings))

    run_stage(3, cache, "cache", "encoding every pair once (VAE latents, text conditioning)", make_cache)

    # ---- 4 .. 3+E. every objective of toy.objectives (Diffusion-DPO and SFT on winners by default)
    trained: dict[str, Stage] = {}
    run_entries: dict[str, tuple[str, Config]] = {}  # run directory name -> (entry, training config)
    for number, entry in enumerate(entries, start=4):
        run = _training_config(config, entry, base, cache.dir, out / entry.dir_name)
        run_entries[entry.dir_name] = (entry.text, run)
        stage = Stage(out, entry.dir_name, {"cache": cache.digest, "config": _training_key(run)})
        what = (
            f"{entry.text}: {objective_help(OBJECTIVES.get(entry.objective))}, {run.train.max_steps} steps of "
            f"{run.train.batch_size} {'images' if run.data.unpaired else 'pairs'}"
        )
        run_stage(number, stage, entry.dir_name, what, functools.partial(_train_or_resume, run, stage.dir))
        trained[entry.dir_name] = stage
    runs = {name: stage.dir for name, stage in trained.items()}

    # ---- 4+E. paired generation on the held-out captions
    eval_prompts = _write_prompts(out / "eval_prompts.txt", [caption_for(*combo) for combo in HELD_OUT])
    samples: dict[str, Path] = {}
    for name in ("base", *runs):
        upstream = trained[name].digest if name in trained else ""
        stage = Stage(out / "samples", name, {**base_key, "model": upstream, "n": toy.eval_images_per_caption})
        what = f"{name}: {toy.eval_images_per_caption} paired seeds on each of {len(HELD_OUT)} held-out captions"
        weights = tuned_weights(runs.get(name))
        run_stage(
            4 + len(entries),
            stage,
            "generate",
            what,
            functools.partial(
                generate_prompt_set,
                base,
                eval_prompts,
                toy.eval_images_per_caption,
                stage.dir,
                settings=sampler,
                base_seed=toy.seed + 2,
                batch_size=toy.generate_batch,
                lora=weights.get("lora"),
                denoiser=weights.get("denoiser"),
            ),
        )
        samples[name] = stage.dir

    # ---- 5+E. the same held-out captions from colour layouts (SDEdit), base and DPO from the same seeds
    layout_samples: dict[str, Path] = {}
    if toy.layouts_per_caption:
        layout_samples = layout_stage(
            out, run_stage, base, base_key, trained["dpo"], tuned_weights(runs["dpo"]), toy, sampler
        )

    # ---- last: win rates, faithfulness, implicit accuracy, the report
    start = time.perf_counter()
    typer.echo(
        f"[{run_stage.total}/{run_stage.total}] scoring: raters' majority and the oracle, faithfulness, "
        "implicit accuracy"
    )
    summary = evaluate_quickstart(
        out, base, samples, runs, cache.dir / "heldout", scorer, spec, vote_stats, toy, config, run_entries
    )
    summary["from_layouts"] = (
        evaluate_layouts(layout_samples, scorer, float(vote_stats["temperature"]), toy) if layout_samples else None
    )
    summary["sampler"] = sampler.recorded()
    run_stage.seconds["evaluate"] = time.perf_counter() - start
    summary["family"] = toy.family
    summary["recipe"] = {
        "lora": {"enabled": config.lora.enabled, "rank": config.lora.rank, "alpha": config.lora.alpha},
        "objective": {"beta": config.objective.beta},
        "optim": {"lr": config.optim.lr},
        "train": {
            "max_steps": config.train.max_steps,
            "batch_size": config.train.batch_size,
            "eval_every": config.train.eval_every,
            "select_step": config.train.select_step,
        },
    }
    summary["selected_step"] = summary["objectives"]["dpo"]["selected_step"]
    summary["stage_seconds"] = {k: round(v, 2) for k, v in run_stage.seconds.items()}
    summary["total_seconds"] = round(sum(run_stage.seconds.values()), 2)
    summary["reused_stages"] = run_stage.reused
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = write_quickstart_report(out, summary, samples, runs, layout_samples)
    typer.echo(
        f"DPO vs base on held-out captions: {summary['win_rate_vs_base']:.1%} by the raters' majority "
        f"(95% CI {summary['win_rate_vs_base_ci'][0]:.1%}-{summary['win_rate_vs_base_ci'][1]:.1%}), "
        f"{summary['oracle_win_rate_vs_base']:.1%} by the oracle; SFT vs base {summary['sft_win_rate_vs_base']:.1%}\n"
        f"report: {report}\nsummary: {out / 'summary.json'}"
    )
    return summary


def layout_stage(
    out: Path,
    run_stage: StageRunner,
    base: Path,
    base_key: dict[str, Any],
    dpo: Stage,
    dpo_weights: dict[str, Path],
    toy: ToyConfig,
    sampler: SamplerSettings,
) -> dict[str, Path]:
    """Draw ``toy.layouts_per_caption`` colour layouts per held-out caption and edit each with the
    base and the DPO model (SDEdit at ``toy.layout_strength``, the same seed for both); returns
    the two runs, ``{"base": DIR, "dpo": DIR}``."""
    from prefdiff.evaluate.generate import generate_prompt_set
    from prefdiff.toy.layouts import LAYOUTS_FILE, write_layouts

    number = run_stage.total - 1
    layouts = Stage(out, "layouts", {"per_caption": toy.layouts_per_caption, "seed": toy.seed})
    what = f"{toy.layouts_per_caption} colour layouts per held-out caption"
    run_stage(number, layouts, "layouts", what, lambda: write_layouts(layouts.dir, toy.layouts_per_caption, toy.seed))
    settings = replace(sampler, strength=toy.layout_strength)
    runs: dict[str, Path] = {}
    for name, upstream, weights in (("base", "", {}), ("dpo", dpo.digest, dpo_weights)):
        # the layouts' place too: the manifests name them by path, so a moved --out redoes these
        key = {**base_key, "sampler": settings.recorded(), "model": upstream, "layouts": layouts.digest}
        key["layouts_dir"] = str(layouts.dir.resolve())
        stage = Stage(out / "samples", f"layouts_{name}", key)
        what = f"{name} from each layout (SDEdit, strength {toy.layout_strength})"
        work = functools.partial(
            generate_prompt_set,
            base,
            None,
            1,
            stage.dir,
            settings=settings,
            base_seed=toy.seed + 3,
            batch_size=toy.generate_batch,
            init_images=layouts.dir / LAYOUTS_FILE,
            lora=weights.get("lora"),
            denoiser=weights.get("denoiser"),
        )
        run_stage(number, stage, "layouts", what, work)
        runs[name] = stage.dir
    return runs
