"""The quickstart's last stage: paired held-out comparisons decided by the raters and by the
oracle, faithfulness of each model, the DPO model's implicit accuracy on held-out pairs, the
side-by-side compare report for DPO vs base, and the leaderboard of every trained objective
(``summary["objectives"]``)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from prefdiff.config import Config
from prefdiff.evaluate.compare import write_comparison
from prefdiff.evaluate.winrate import Comparison, decide
from prefdiff.manifests import ImageKey, ManifestImage, pair_runs, read_manifest
from prefdiff.stats import LOSS, TIE, WIN, win_rate
from prefdiff.toy.config import ToyConfig
from prefdiff.toy.entries import TRAIN_RECORD
from prefdiff.toy.oracle import faithfulness
from prefdiff.toy.raters import panel_verdicts
from prefdiff.toy.votes import score_files
from prefdiff.toy.world import parse_caption, perceive

_FROM_LABEL = {1.0: WIN, 0.0: LOSS, 0.5: TIE}


def _model_scores(
    run: Path, keys: list[ImageKey], records: dict[ImageKey, ManifestImage], scorer: Any, name: str
) -> dict[str, Any]:
    ordered = [records[k] for k in keys]
    scores = score_files(run, ordered, scorer, desc=f"oracle ({name})")
    from PIL import Image

    seen = [perceive(Image.open(run / r.file)) for r in ordered]
    wanted = [parse_caption(r.prompt) for r in ordered]
    return {
        "scores": np.asarray(scores),
        "faithfulness": float(np.mean([faithfulness(s, r.prompt) for s, r in zip(seen, ordered, strict=True)])),
        "colour_match": float(np.mean([s.colour == w[0] for s, w in zip(seen, wanted, strict=True)])),
        "shape_match": float(np.mean([s.shape == w[1] for s, w in zip(seen, wanted, strict=True)])),
        "radius_mean": float(np.mean([s.radius for s in seen])),
        "centre_distance_mean": float(np.mean([np.hypot(s.cx - 0.5, s.cy - 0.5) for s in seen])),
        "background_mean": float(np.mean([s.background_level for s in seen])),
    }


def _head_to_head(a: np.ndarray, b: np.ndarray, temperature: float, toy: ToyConfig, seed: int) -> dict[str, Any]:
    """A vs B over paired images: by the raters' majority (fresh votes) and by the raw oracle."""
    verdicts = panel_verdicts(a, b, temperature, seed=seed, raters=toy.raters)
    raters = win_rate(_FROM_LABEL[v.label_0] for v in verdicts).as_json()
    oracle = win_rate(decide(float(x), float(y)) for x, y in zip(a, b, strict=True)).as_json()
    return {"raters": raters, "oracle": oracle}


def versus_base(
    samples: Path, base_samples: Path, scorer: Any, temperature: float, toy: ToyConfig, seed: int
) -> dict[str, Any]:
    """One model's images against the base's from the same prompts and seeds: win rates by fresh
    rater votes (``seed``) and by the oracle, and both models' faithfulness and mean oracle score
    (what ``benchmarks/bench_tastes.py`` measures at every snapshot of a run)."""
    pairs = pair_runs(samples, base_samples)
    keys = [a.key for a, _ in pairs]
    model = _model_scores(samples, keys, {a.key: a for a, _ in pairs}, scorer, samples.name)
    base = _model_scores(base_samples, keys, {b.key: b for _, b in pairs}, scorer, "base")
    result = _head_to_head(model["scores"], base["scores"], temperature, toy, seed)
    return {
        "win_rate_vs_base": result["raters"]["win_rate"],
        "win_rate_vs_base_ci": result["raters"]["win_rate_ci"],
        "oracle_win_rate_vs_base": result["oracle"]["win_rate"],
        "faithfulness": model["faithfulness"],
        "faithfulness_base": base["faithfulness"],
        "oracle_score": float(model["scores"].mean()),
        "oracle_score_base": float(base["scores"].mean()),
        "comparisons": len(keys),
    }


def evaluate_quickstart(
    out: Path,
    base: Path,
    samples: dict[str, Path],
    runs: dict[str, Path],
    heldout_cache: Path,
    scorer: Any,
    spec: str,
    vote_stats: dict[str, Any],
    toy: ToyConfig,
    config: Config,
    entries: dict[str, tuple[str, Config]],
) -> dict[str, Any]:
    """Every field of summary.json except stage_seconds; ``objectives`` holds one leaderboard
    row per run of ``runs``, whose ``entries`` give its ``toy.objectives`` text and training
    config."""
    from prefdiff.evaluate.implicit import implicit_accuracy
    from prefdiff.models import load_backbone

    manifests = {name: read_manifest(run) for name, run in samples.items()}
    keys = sorted(manifests["base"])
    models = {name: _model_scores(samples[name], keys, manifests[name], scorer, name) for name in samples}
    temperature = float(vote_stats["temperature"])
    seed = toy.seed * 1000 + 100
    dpo_base = _head_to_head(models["dpo"]["scores"], models["base"]["scores"], temperature, toy, seed + 1)
    sft_base = _head_to_head(models["sft"]["scores"], models["base"]["scores"], temperature, toy, seed + 2)
    dpo_sft = _head_to_head(models["dpo"]["scores"], models["sft"]["scores"], temperature, toy, seed + 3)

    # The ordinary compare report (oracle scores) for DPO vs base, beside the quickstart's own.
    pairs = pair_runs(samples["dpo"], samples["base"])
    comparisons = [
        Comparison(k[0], k[1], float(sa), float(sb), manifests["base"][k].prompt)
        for k, sa, sb in zip(keys, models["dpo"]["scores"], models["base"]["scores"], strict=True)
    ]
    compare_dir = out / "compare" / "dpo_vs_base"
    write_comparison(compare_dir, samples["dpo"], samples["base"], pairs, comparisons, spec)

    heldout_data = copy.deepcopy(config.data)
    heldout_data.max_pairs = None  # a cap on training pairs must not shrink the held-out set
    backbone = load_backbone(base, config.model)
    backbone.use_timesteps(config.train.timesteps)  # a few-step run is judged on the timesteps it trained on
    beta = config.objective.beta if isinstance(config.objective.beta, int | float) else 1.0  # the sign is beta-free
    implicit_of = {}
    for name, run in runs.items():
        weights = tuned_weights(run)
        implicit_of[name] = implicit_accuracy(
            backbone,
            heldout_cache,
            heldout_data,
            lora=weights.get("lora"),
            denoiser=weights.get("denoiser"),
            beta=beta,
        )
    implicit = implicit_of["dpo"]
    head_to_head = {"dpo_vs_base": dpo_base, "sft_vs_base": sft_base, "dpo_vs_sft": dpo_sft}
    objectives = {
        name: {
            "entry": entries[name][0],
            **_leaderboard_row(name, run, models, head_to_head, implicit_of[name], temperature, toy, seed),
            "beta": _beta_used(run, entries[name][1]),
            **_selection(run),
        }
        for name, run in runs.items()
    }
    train_votes = vote_stats["train"]
    return {
        "win_rate_vs_base": dpo_base["raters"]["win_rate"],
        "win_rate_vs_base_ci": dpo_base["raters"]["win_rate_ci"],
        "oracle_win_rate_vs_base": dpo_base["oracle"]["win_rate"],
        "sft_win_rate_vs_base": sft_base["raters"]["win_rate"],
        "sft_win_rate_vs_base_ci": sft_base["raters"]["win_rate_ci"],
        "sft_oracle_win_rate_vs_base": sft_base["oracle"]["win_rate"],
        "dpo_win_rate_vs_sft": dpo_sft["raters"]["win_rate"],
        "dpo_oracle_win_rate_vs_sft": dpo_sft["oracle"]["win_rate"],
        "rater_oracle_agreement": train_votes["majority_agreement"],
        "single_rater_oracle_agreement": train_votes["single_rater_agreement"],
        "faithfulness_base": models["base"]["faithfulness"],
        "faithfulness_dpo": models["dpo"]["faithfulness"],
        "faithfulness_sft": models["sft"]["faithfulness"],
        "oracle_score_base": float(models["base"]["scores"].mean()),
        "oracle_score_dpo": float(models["dpo"]["scores"].mean()),
        "oracle_score_sft": float(models["sft"]["scores"].mean()),
        "implicit_accuracy_heldout": implicit["implicit_accuracy"],
        "heldout_pairs": implicit["pairs"],
        "comparisons": len(keys),
        "oracle": spec,
        "rater_temperature": temperature,
        "votes": vote_stats,
        "head_to_head": head_to_head,
        "models": {name: {k: v for k, v in m.items() if k != "scores"} for name, m in models.items()},
        "compare_report": str(compare_dir / "report.html"),
        "objectives": objectives,
    }


def _layout_kept(run: Path, records: list[ManifestImage]) -> dict[str, float]:
    """How far the images moved from their layouts, as :func:`perceive` reads both: the mean
    distance between the object's centre and the blob's (a fraction of the side), and the mean
    change of radius (positive: drawn larger than the blob)."""
    from PIL import Image

    shifts, growth = [], []
    for record in records:
        assert record.init_image is not None
        with Image.open(record.init_image) as drawn, Image.open(run / record.file) as made:
            layout, image = perceive(drawn), perceive(made)
        shifts.append(float(np.hypot(image.cx - layout.cx, image.cy - layout.cy)))
        growth.append(image.radius - layout.radius)
    return {"layout_centre_shift": float(np.mean(shifts)), "layout_radius_change": float(np.mean(growth))}


def evaluate_layouts(samples: dict[str, Path], scorer: Any, temperature: float, toy: ToyConfig) -> dict[str, Any]:
    """``summary["from_layouts"]``: DPO against the base from the same colour layouts and seeds, by
    the raters' majority (fresh votes) and the oracle, and what each model made of the layouts."""
    pairs = pair_runs(samples["dpo"], samples["base"])  # the same layouts, seeds and sampler, or a clear error
    manifests = {"dpo": {a.key: a for a, _ in pairs}, "base": {b.key: b for _, b in pairs}}
    keys = [a.key for a, _ in pairs]
    models = {name: _model_scores(samples[name], keys, manifests[name], scorer, f"{name}, layouts") for name in samples}
    for name, model in models.items():
        model.update(_layout_kept(samples[name], [manifests[name][k] for k in keys]))
    result = _head_to_head(models["dpo"]["scores"], models["base"]["scores"], temperature, toy, toy.seed * 1000 + 200)
    first = manifests["base"][keys[0]]
    return {
        "strength": first.sampler.get("strength"),
        "sampler_steps": first.sampler.get("steps"),
        "comparisons": len(keys),
        "layouts_per_caption": toy.layouts_per_caption,
        "win_rate_vs_base": result["raters"]["win_rate"],
        "win_rate_vs_base_ci": result["raters"]["win_rate_ci"],
        "oracle_win_rate_vs_base": result["oracle"]["win_rate"],
        "faithfulness_base": models["base"]["faithfulness"],
        "faithfulness_dpo": models["dpo"]["faithfulness"],
        "oracle_score_base": float(models["base"]["scores"].mean()),
        "oracle_score_dpo": float(models["dpo"]["scores"].mean()),
        "head_to_head": result,
        "models": {name: {k: v for k, v in m.items() if k != "scores"} for name, m in models.items()},
    }


def _selection(run: Path) -> dict[str, Any]:
    """The step a run kept and its validation implicit accuracy (``RUN/selection.json``; nulls
    for a run without held-out evaluation)."""
    from prefdiff.train.selection import SELECTION_FILE

    path = run / SELECTION_FILE
    if not path.is_file():
        return {"selected_step": None, "selection_rule": None, "validation_implicit_accuracy": None}
    record = json.loads(path.read_text())
    return {
        "selected_step": record["step"],
        "selection_rule": record["rule"],
        "validation_implicit_accuracy": record["eval_implicit_acc"],
    }


def _entry_seed(seed: int, name: str) -> int:
    """A vote seed of the entry's own (its name's digest): adding an entry changes no other's votes."""
    return seed + 10 + int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)


def _leaderboard_row(
    name: str,
    run: Path,
    models: dict[str, dict[str, Any]],
    head_to_head: dict[str, dict[str, Any]],
    implicit: dict[str, float],
    temperature: float,
    toy: ToyConfig,
    seed: int,
) -> dict[str, Any]:
    """One objective's leaderboard figures: against the base and against DPO, by the raters'
    majority (fresh votes) and the oracle; faithfulness; held-out implicit accuracy (DPO's
    implicit reward of the tuned model against the base); training seconds and peak memory."""
    scores = models[name]["scores"]
    fixed = {"dpo": head_to_head["dpo_vs_base"], "sft": head_to_head["sft_vs_base"]}
    vs_base = fixed.get(name) or _head_to_head(
        scores, models["base"]["scores"], temperature, toy, _entry_seed(seed, name)
    )
    vs_dpo = None
    if name == "sft":  # the DPO-vs-SFT comparisons, seen from SFT's side
        vs_dpo = {judge: _flipped(result) for judge, result in head_to_head["dpo_vs_sft"].items()}
    elif name != "dpo":
        vs_dpo = _head_to_head(scores, models["dpo"]["scores"], temperature, toy, _entry_seed(seed, name) + 1)
    record_file = run / TRAIN_RECORD
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    return {
        "win_rate_vs_base": vs_base["raters"]["win_rate"],
        "win_rate_vs_base_ci": vs_base["raters"]["win_rate_ci"],
        "oracle_win_rate_vs_base": vs_base["oracle"]["win_rate"],
        "win_rate_vs_dpo": vs_dpo["raters"]["win_rate"] if vs_dpo else None,
        "win_rate_vs_dpo_ci": vs_dpo["raters"]["win_rate_ci"] if vs_dpo else None,
        "oracle_win_rate_vs_dpo": vs_dpo["oracle"]["win_rate"] if vs_dpo else None,
        "faithfulness": models[name]["faithfulness"],
        "oracle_score": float(scores.mean()),
        "implicit_accuracy_heldout": implicit["implicit_accuracy"],
        "train_seconds": record.get("train_seconds"),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "head_to_head": {"vs_base": vs_base, "vs_dpo": vs_dpo},
    }


def _flipped(result: dict[str, Any]) -> dict[str, Any]:
    """A win rate seen from the other side: B's wins over A, its interval mirrored."""
    low, high = result["win_rate_ci"]
    return {
        **result,
        "win_rate": 1.0 - result["win_rate"],
        "win_rate_ci": [1.0 - high, 1.0 - low],
        "wins": result["losses"],
        "losses": result["wins"],
    }


def _beta_used(run: Path, config: Config) -> float | None:
    """The beta the run trained with: ``auto_beta.json``'s when beta=auto, else its config's
    (None for an objective without one)."""
    auto = run / "auto_beta.json"
    if auto.is_file():
        return float(json.loads(auto.read_text())["beta"])
    beta = getattr(config.objective.options, "beta", None)
    return float(beta) if isinstance(beta, int | float) else None


def tuned_weights(run_dir: Path | None) -> dict[str, Path]:
    """``lora=`` or ``denoiser=`` for the weights a training run saved (neither for None: the base)."""
    if run_dir is None:
        return {}
    if (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file():
        return {"lora": run_dir / "lora"}
    result = json.loads((run_dir / "run_info.json").read_text())["result"]  # written by the trainer
    return {"denoiser": run_dir / result}
