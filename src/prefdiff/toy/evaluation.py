"""The quickstart's last stage: paired held-out comparisons decided by the raters and by the
oracle, faithfulness of each model, the DPO model's implicit accuracy on held-out pairs, and
the side-by-side compare report for DPO vs base."""

from __future__ import annotations

import copy
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
) -> dict[str, Any]:
    """Every field of summary.json except stage_seconds."""
    from prefdiff.evaluate.implicit import implicit_accuracy
    from prefdiff.models import load_backbone

    manifests = {name: read_manifest(run) for name, run in samples.items()}
    keys = sorted(manifests["base"])
    models = {
        name: _model_scores(samples[name], keys, manifests[name], scorer, name) for name in ("base", "dpo", "sft")
    }
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
    weights = tuned_weights(runs["dpo"])
    implicit = implicit_accuracy(
        load_backbone(base),
        heldout_cache,
        heldout_data,
        lora=weights.get("lora"),
        denoiser=weights.get("denoiser"),
        beta=config.objective.beta,
    )
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
        "head_to_head": {"dpo_vs_base": dpo_base, "sft_vs_base": sft_base, "dpo_vs_sft": dpo_sft},
        "models": {name: {k: v for k, v in m.items() if k != "scores"} for name, m in models.items()},
        "compare_report": str(compare_dir / "report.html"),
    }


def tuned_weights(run_dir: Path | None) -> dict[str, Path]:
    """``lora=`` or ``denoiser=`` for the weights a training run saved (neither for None: the base)."""
    if run_dir is None:
        return {}
    if (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file():
        return {"lora": run_dir / "lora"}
    result = json.loads((run_dir / "run_info.json").read_text())["result"]  # written by the trainer
    return {"denoiser": run_dir / result}
