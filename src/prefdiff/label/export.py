"""Exports of a study: the raw votes (CSV / parquet), the majority decisions as a
Pick-a-Pic-format parquet (trainable by prefdiff's Pick-a-Pic reader) and as per-image labels
(`unpaired/images.jsonl`, for `kto`), and for evaluation studies the same `summary.json` that
`prefdiff compare` writes.

The Pick-a-Pic parquet is written by `prefdiff.pickapic_parquet` (its conventions are there):
`label_0 == 1` means image 0 won, `0` that image 1 won, `0.5` a tie; `jpg_0` / `jpg_1` hold the
image files' bytes as they are on disk.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefdiff.label.db import Database
from prefdiff.label.errors import StudyError
from prefdiff.label.report import Decision, decisions, load_votes, study_summary
from prefdiff.label.schema import Comparison, ImageRoot
from prefdiff.label.security import resolve_image
from prefdiff.label.studies import find_study
from prefdiff.pickapic_parquet import (
    PICKAPIC_COLUMNS,
    PickapicRow,
    image_uid,
    write_pickapic_parquet,
)
from prefdiff.stats import vote_fraction

VOTE_COLUMNS = [
    "vote_id", "study", "question", "comparison_id", "comparison_position", "prompt",
    "category", "prompt_index", "image_index", "seed", "rater_id", "rater_name",
    "assignment_id", "left_image", "side", "choice", "image_0", "image_1", "model_0",
    "model_1", "assigned_at", "voted_at",
]  # fmt: skip
CHOICE_NAMES = {0: "image_0", 1: "image_1", 2: "tie"}
_BATCH = 128


@dataclass(frozen=True)
class _ComparisonInfo:
    id: int
    position: int
    prompt: str
    category: str | None
    prompt_index: int | None
    image_index: int | None
    seed: int | None
    root_0: str
    path_0: str
    root_1: str
    path_1: str
    model_0: str | None
    model_1: str | None


def _comparisons(db: Database, study_id: int) -> dict[int, _ComparisonInfo]:
    with db.read() as session:
        roots = dict(session.execute(select(ImageRoot.id, ImageRoot.path).where(ImageRoot.study_id == study_id)).all())
        rows = session.scalars(select(Comparison).where(Comparison.study_id == study_id)).all()
        return {
            c.id: _ComparisonInfo(
                c.id,
                c.position,
                c.prompt,
                c.category,
                c.prompt_index,
                c.image_index,
                c.seed,
                roots[c.root_0_id],
                c.path_0,
                roots[c.root_1_id],
                c.path_1,
                c.model_0,
                c.model_1,
            )  # fmt: skip
            for c in rows
        }


def vote_rows(db: Database, study_ref: str | int) -> list[dict[str, Any]]:
    """The raw votes of a study, one dict per vote (columns `VOTE_COLUMNS`)."""
    with db.read() as session:
        study = find_study(session, study_ref)
        study_id, study_name = study.id, study.name
        votes = load_votes(session, study_id)
    comparisons = _comparisons(db, study_id)
    rows = []
    for vote in votes:
        c = comparisons[vote.comparison_id]
        rows.append({
            "vote_id": vote.vote_id, "study": study_name, "question": vote.question,
            "comparison_id": c.id, "comparison_position": c.position, "prompt": c.prompt,
            "category": c.category, "prompt_index": c.prompt_index, "image_index": c.image_index,
            "seed": c.seed, "rater_id": vote.rater_id, "rater_name": vote.rater_name,
            "assignment_id": vote.assignment_id, "left_image": int(vote.flipped),
            "side": vote.side, "choice": CHOICE_NAMES[vote.choice],
            "image_0": c.path_0, "image_1": c.path_1, "model_0": c.model_0, "model_1": c.model_1,
            "assigned_at": vote.assigned_at.isoformat(), "voted_at": vote.voted_at.isoformat(),
        })  # fmt: skip
    return rows


def write_votes_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the raw votes as CSV (header row, `VOTE_COLUMNS`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=VOTE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_votes_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the raw votes as parquet (same columns as the CSV)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=_votes_schema()) if rows else _votes_schema().empty_table()
    pq.write_table(table, path)
    return path


def _votes_schema() -> Any:
    import pyarrow as pa

    ints = {"vote_id", "comparison_id", "comparison_position", "prompt_index", "image_index",
            "seed", "rater_id", "assignment_id", "left_image"}  # fmt: skip
    return pa.schema([(c, pa.int64() if c in ints else pa.string()) for c in VOTE_COLUMNS])


def _read_image(root: str, relative: str, where: str) -> bytes:
    target = resolve_image(root, relative)
    if target is None:
        raise StudyError(f"{where}: image {relative!r} is missing or outside {root}")
    return target.read_bytes()


EXPORT_COLUMNS = (
    *PICKAPIC_COLUMNS,
    "votes_0",
    "votes_1",
    "votes_tie",
    "study",
    "question",
    "category",
    "preference_0",
)
"""The columns of a study's Pick-a-Pic export: Pick-a-Pic v2's, the vote counts, the study, and
``preference_0``, the vote fraction for image 0 (a tie vote counts half), which
``data.soft_labels=true`` trains on."""


def _decided(
    db: Database, study_ref: str | int, question: str | None, include_incomplete: bool
) -> tuple[list[Decision], dict[int, _ComparisonInfo], str, str]:
    """The study's decided comparisons for ``question`` in study order, its comparisons, its name
    and the question."""
    with db.read() as session:
        study = find_study(session, study_ref)
        study_id, study_name, k = study.id, study.name, study.raters_per_comparison
        keys = [q.key for q in study.questions]
        votes = load_votes(session, study_id)
    question = question or keys[0]
    if question not in keys:
        raise StudyError(f"study {study_name!r} has no question {question!r} (it asks {keys})")
    decided = decisions(votes, question, k, include_incomplete)
    comparisons = _comparisons(db, study_id)
    ordered = sorted(decided.values(), key=lambda d: comparisons[d.comparison_id].position)
    return ordered, comparisons, study_name, question


def write_pickapic(
    db: Database, study_ref: str | int, path: Path, question: str | None = None,
    include_incomplete: bool = False,
) -> int:  # fmt: skip
    """Write the majority decisions as a Pick-a-Pic parquet; return the number of rows.

    One row per decided comparison: those with all their raters' votes for `question` (the
    study's first question by default), or with any vote when `include_incomplete`.
    `user_id` is 0 (a decision of several raters); `ranking_id` is the comparison id.
    """
    ordered, comparisons, study_name, question = _decided(db, study_ref, question, include_incomplete)
    per_prompt = Counter(comparisons[d.comparison_id].prompt for d in ordered)
    rows = (_pickapic_row(d, comparisons[d.comparison_id], per_prompt, study_name, question) for d in ordered)
    write_pickapic_parquet(path, rows, EXPORT_COLUMNS, rows_per_group=_BATCH)
    return len(ordered)


def _pickapic_row(
    decision: Decision, c: _ComparisonInfo, per_prompt: Counter[str], study_name: str, question: str
) -> PickapicRow:
    """One decided comparison as a Pick-a-Pic row (its images read from disk)."""
    where = f"study {study_name!r} comparison {c.id}"
    jpg_0, jpg_1 = _read_image(c.root_0, c.path_0, where), _read_image(c.root_1, c.path_1, where)
    uid_0, uid_1 = image_uid(jpg_0), image_uid(jpg_1)
    return PickapicRow(
        caption=c.prompt, jpg_0=jpg_0, jpg_1=jpg_1, label_0={0: 1.0, 1: 0.0, 2: 0.5}[decision.decision],
        ranking_id=c.id, image_0_uid=uid_0, image_1_uid=uid_1, model_0=c.model_0, model_1=c.model_1,
        are_different=uid_0 != uid_1, preference_0=vote_fraction(*decision.counts[:3]),
        extra={
            "user_id": 0, "created_at": decision.last_vote_at, "num_example_per_prompt": per_prompt[c.prompt],
            "image_0_url": c.path_0, "image_1_url": c.path_1, "votes_0": decision.counts[0],
            "votes_1": decision.counts[1], "votes_tie": decision.counts[2], "study": study_name,
            "question": question, "category": c.category,
        },
    )  # fmt: skip


UNPAIRED_DIR = "unpaired"


def write_unpaired(
    db: Database, study_ref: str | int, out_dir: Path, question: str | None = None,
    include_incomplete: bool = False,
) -> int:  # fmt: skip
    """Write the majority decisions as per-image labels, ``out_dir/images.jsonl`` with the
    images beside it in ``out_dir/images/``; return the number of lines.

    Each decided comparison that is not a tie gives two lines, ``{"prompt", "image",
    "desirable"}``: the winner desirable, the loser undesirable (the conversion that
    ``data.unpaired`` applies to pairs), with ``comparison_id`` and ``vote_share`` (the image's
    share of the votes, a tie vote counting half). Image files are named by their content's uid,
    so an image in several comparisons is stored once; paths in the file are relative to it.
    """
    ordered, comparisons, study_name, _ = _decided(db, study_ref, question, include_incomplete)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    lines = 0
    with (out_dir / "images.jsonl").open("w", encoding="utf-8") as handle:
        for decision in ordered:
            if decision.decision == 2:  # a tie: neither image is desirable
                continue
            c = comparisons[decision.comparison_id]
            where = f"study {study_name!r} comparison {c.id}"
            share_0 = vote_fraction(*decision.counts[:3])
            for index, (root, relative) in enumerate(((c.root_0, c.path_0), (c.root_1, c.path_1))):
                data = _read_image(root, relative, where)
                name = f"{image_uid(data)}{Path(relative).suffix.lower() or '.png'}"
                target = images_dir / name
                if not target.exists():
                    target.write_bytes(data)
                record = {
                    "prompt": c.prompt,
                    "image": f"images/{name}",
                    "desirable": decision.decision == index,
                    "comparison_id": c.id,
                    "vote_share": share_0 if index == 0 else 1.0 - share_0,
                }
                handle.write(json.dumps(record) + "\n")
                lines += 1
    return lines


def evaluation_summary(
    db: Database, study_ref: str | int, question: str | None = None,
    include_incomplete: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The `prefdiff compare`-compatible summary of an evaluation study: win rate of run A
    over run B (ties counted half) with its Wilson 95% interval, from majority decisions."""
    summary = study_summary(db, study_ref, include_incomplete)
    info = summary["study"]
    if info["kind"] != "evaluation":
        raise StudyError(f"study {info['name']!r} is a collection study: it has no runs to compare")
    keys = [q["key"] for q in info["questions"]]
    question = question or keys[0]
    if question not in keys:
        raise StudyError(f"study {info['name']!r} has no question {question!r} (it asks {keys})")
    main = summary["questions"][question]
    return {
        "run_a": info["run_a"],
        "run_b": info["run_b"],
        **main["win_rate"],
        "ci_level": 0.95,
        "ci_method": "wilson",
        "ties_count": 0.5,
        "scorer": f"human:{question}",
        "source": "prefdiff label",
        "study": info["name"],
        "question": question,
        "raters_per_comparison": info["raters_per_comparison"],
        "comparisons": summary["progress"]["comparisons"],
        "agreement": main["agreement"],
        "per_category": main["per_category"],
        "questions": {
            key: {"text": q["text"], **q["win_rate"], "agreement": q["agreement"]}
            for key, q in summary["questions"].items()
        },
    }


def export_study(
    db: Database, study_ref: str | int, out_dir: Path, votes_format: str = "both",
    question: str | None = None, include_incomplete: bool = False,
) -> dict[str, Path]:  # fmt: skip
    """Write every export of a study into `out_dir`; return {what: path}."""
    if votes_format not in ("csv", "parquet", "both"):
        raise StudyError(f"votes format must be csv, parquet or both, got {votes_format!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    rows = vote_rows(db, study_ref)
    if votes_format in ("csv", "both"):
        written["votes_csv"] = write_votes_csv(rows, out_dir / "votes.csv")
    if votes_format in ("parquet", "both"):
        written["votes_parquet"] = write_votes_parquet(rows, out_dir / "votes.parquet")
    pairs_path = out_dir / "pickapic.parquet"
    write_pickapic(db, study_ref, pairs_path, question, include_incomplete)
    written["pickapic"] = pairs_path
    write_unpaired(db, study_ref, out_dir / UNPAIRED_DIR, question, include_incomplete)
    written["unpaired"] = out_dir / UNPAIRED_DIR / "images.jsonl"
    with db.read() as session:
        kind = find_study(session, study_ref).kind
    if kind == "evaluation":
        summary = evaluation_summary(db, study_ref, question, include_incomplete)
        summary_path = out_dir / "summary.json"
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        written["summary"] = summary_path
    return written
