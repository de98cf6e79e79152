"""Majority vote and exports, round trip: scripted votes -> export -> read back with pyarrow
(and with prefdiff's own Pick-a-Pic reader) -> the expected winners, counts and win rate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import make_run
from prefdiff.label import assign
from prefdiff.label.db import Database, migrate
from prefdiff.label.export import export_study
from prefdiff.label.sources import evaluation_source
from prefdiff.label.studies import StudyOptions, add_raters, create_study, parse_questions
from prefdiff.stats import wilson_interval

T = 2  # tie
# Per comparison position: the five raters' votes in image terms (0: run A's image, 1: B's).
SCRIPT = {
    0: [0, 0, 0, 1, 1],  # -> A wins
    1: [1, 1, 1, 1, 0],  # -> B wins
    2: [0, 0, 1, 1, T],  # -> tie (2-2-1)
    3: [0, 0, 0, 0, 0],  # -> A wins
    4: [1, 1, 1, 0, 0],  # -> B wins
    5: [0, T, T, T, 1],  # -> tie ("about the same" has the most votes)
}
EXPECTED_LABEL_0 = {0: 1.0, 1: 0.0, 2: 0.5, 3: 1.0, 4: 0.0, 5: 0.5}
PROMPTS = [f"prompt number {i}" for i in range(7)]  # the 7th gets only 2 votes: incomplete


def _side_for(image: int, flipped: bool) -> str:
    """The side a rater clicks to pick `image` (image 1 is on the left when flipped)."""
    if image == T:
        return "tie"
    return "left" if (image == 0) != flipped else "right"


@pytest.fixture
def voted(db_url: str, tmp_path: Path) -> tuple[Database, Path, Path]:
    """An evaluation study whose 7 comparisons were voted according to SCRIPT."""
    run_a = make_run(tmp_path / "dpo", PROMPTS, "sd-toy+dpo", colour=(250, 0, 0))
    run_b = make_run(tmp_path / "base", PROMPTS, "sd-toy", colour=(0, 0, 250))
    db = Database(db_url)
    migrate(db)
    study_id = create_study(
        db, evaluation_source(run_a, run_b),
        StudyOptions(name="roundtrip", questions=parse_questions(None), raters_per_comparison=5),
    )  # fmt: skip
    raters = add_raters(db, study_id, count=5)
    for r, new in enumerate(raters):
        view = assign.rater_for_token(db, new.token)
        assert view is not None
        current = assign.next_assignment(db, view)
        while current is not None:
            with db.read() as session:
                from prefdiff.label.schema import Assignment, Comparison

                assignment = session.get(Assignment, current.assignment_id)
                position = session.get(Comparison, assignment.comparison_id).position
            if position == 6 and r >= 2:
                break  # leave the last comparison incomplete
            image = SCRIPT[position][r] if position in SCRIPT else 0
            result = assign.record_vote(db, view, current.assignment_id, "preference",
                                        _side_for(image, assignment.flipped))  # fmt: skip
            current = result.next
    yield db, run_a, run_b
    db.dispose()


def test_pickapic_export_round_trip(voted: tuple[Database, Path, Path], tmp_path: Path) -> None:
    """The parquet has one row per complete comparison with the majority label and the images."""
    db, run_a, run_b = voted
    written = export_study(db, "roundtrip", tmp_path / "out")
    table = pq.read_table(written["pickapic"])
    for column in ["caption", "jpg_0", "jpg_1", "label_0", "label_1", "image_0_uid", "image_1_uid",
                   "best_image_uid", "ranking_id", "user_id", "has_label", "are_different",
                   "created_at", "num_example_per_prompt", "model_0", "model_1"]:  # fmt: skip
        assert column in table.column_names, column
    rows = table.to_pylist()
    assert [r["caption"] for r in rows] == PROMPTS[:6]  # the incomplete 7th is not decided
    for position, row in enumerate(rows):
        assert row["label_0"] == EXPECTED_LABEL_0[position]
        assert row["label_0"] + row["label_1"] == 1.0
        assert row["jpg_0"] == (run_a / f"images/{position:04d}_0.png").read_bytes()
        assert row["jpg_1"] == (run_b / f"images/{position:04d}_0.png").read_bytes()
        expected_best = {1.0: row["image_0_uid"], 0.0: row["image_1_uid"], 0.5: ""}[row["label_0"]]
        assert row["best_image_uid"] == expected_best
        assert (row["model_0"], row["model_1"]) == ("sd-toy+dpo", "sd-toy")
        assert row["has_label"] and row["are_different"] and row["num_example_per_prompt"] == 1
        assert (row["votes_0"], row["votes_1"], row["votes_tie"]) == tuple(SCRIPT[position].count(c) for c in (0, 1, T))
    # The reader convention: winner first, ties dropped.
    winners = [r["jpg_0"] if r["label_0"] == 1.0 else r["jpg_1"] for r in rows if r["label_0"] != 0.5]
    assert winners == [(run_dir / f"images/{p:04d}_0.png").read_bytes()
                       for p, run_dir in [(0, run_a), (1, run_b), (3, run_a), (4, run_b)]]  # fmt: skip


def test_export_vote_fractions_round_trip_as_soft_labels(voted: tuple[Database, Path, Path], tmp_path: Path) -> None:
    """preference_0 is the vote share of image 0, a tie vote counting half, and the reader
    turns it into the winner's preference.

    Position 0 (3-2-0): 3/5 = 0.6; 1 (1-4-0): 0.2, so B's image leads with 0.8; 2 (2-2-1):
    (2 + 0.5)/5 = 0.5; 3 (5-0-0): 1.0; 4 (2-3-0): 0.4 -> B 0.6; 5 (1-1-3): (1 + 1.5)/5 = 0.5.
    """
    reader = pytest.importorskip("prefdiff.data.pickapic", reason="prefdiff's Pick-a-Pic reader not present")
    db, run_a, run_b = voted
    written = export_study(db, "roundtrip", tmp_path / "out")
    rows = pq.read_table(written["pickapic"]).to_pylist()
    assert [r["preference_0"] for r in rows] == pytest.approx([0.6, 0.2, 0.5, 1.0, 0.4, 0.5])
    pairs = list(reader.read_pickapic(written["pickapic"], drop_ties=False))
    assert [p.prompt for p in pairs] == PROMPTS[:6]
    assert [p.preference for p in pairs] == pytest.approx([0.6, 0.8, 0.5, 1.0, 0.6, 0.5])
    assert pairs[1].winner == (run_b / "images/0001_0.png").read_bytes()  # B won 4 of 5


def test_export_per_image_labels_round_trip(voted: tuple[Database, Path, Path], tmp_path: Path) -> None:
    """unpaired/images.jsonl: two lines per decided, untied comparison (positions 0, 1, 3, 4),
    the winner desirable and the loser not, with its vote share; prefdiff's images.jsonl reader
    reads it back to the same prompts, labels and image bytes."""
    unpaired = pytest.importorskip("prefdiff.data.unpaired", reason="prefdiff's training extras not present")
    from prefdiff.config import DataConfig

    db, run_a, run_b = voted
    written = export_study(db, "roundtrip", tmp_path / "out")
    lines = [json.loads(line) for line in written["unpaired"].read_text().splitlines()]
    decided = [0, 1, 3, 4]
    assert [line["prompt"] for line in lines] == [PROMPTS[p] for p in decided for _ in range(2)]
    assert [line["desirable"] for line in lines] == [True, False, False, True, True, False, False, True]
    assert [line["vote_share"] for line in lines] == pytest.approx([0.6, 0.4, 0.2, 0.8, 1.0, 0.0, 0.4, 0.6])
    images = unpaired.read_images_jsonl(written["unpaired"], DataConfig())
    assert [(i.prompt, i.desirable) for i in images] == [(ln["prompt"], ln["desirable"]) for ln in lines]
    for image, (position, run_dir) in zip(images, [(p, r) for p in decided for r in (run_a, run_b)], strict=True):
        assert Path(image.image).read_bytes() == (run_dir / f"images/{position:04d}_0.png").read_bytes()


def test_include_incomplete_decides_partial_comparisons(voted: tuple[Database, Path, Path], tmp_path: Path) -> None:
    """With include_incomplete the 7th comparison (2 votes for A) is exported too."""
    db, _, _ = voted
    written = export_study(db, "roundtrip", tmp_path / "out", include_incomplete=True)
    rows = pq.read_table(written["pickapic"]).to_pylist()
    assert len(rows) == 7 and rows[6]["label_0"] == 1.0 and rows[6]["votes_0"] == 2


def test_prefdiff_pickapic_reader_takes_the_export(voted: tuple[Database, Path, Path], tmp_path: Path) -> None:
    """prefdiff's own Pick-a-Pic reader reads the export: 4 pairs, winner first, ties dropped."""
    reader = pytest.importorskip("prefdiff.data.pickapic", reason="prefdiff's Pick-a-Pic reader not present")
    db, run_a, run_b = voted
    written = export_study(db, "roundtrip", tmp_path / "out")
    pairs = list(reader.read_pickapic(written["pickapic"]))
    assert [p.prompt for p in pairs] == [PROMPTS[i] for i in (0, 1, 3, 4)]
    assert pairs[0].winner == (run_a / "images/0000_0.png").read_bytes()
    assert pairs[1].winner == (run_b / "images/0001_0.png").read_bytes()


def test_votes_table_and_summary(voted: tuple[Database, Path, Path], tmp_path: Path) -> None:
    """votes.csv / votes.parquet hold every vote; summary.json has prefdiff compare's fields."""
    db, _, _ = voted
    written = export_study(db, "roundtrip", tmp_path / "out", votes_format="both")
    with written["votes_csv"].open() as handle:
        votes = list(csv.DictReader(handle))
    assert len(votes) == 6 * 5 + 2
    assert pq.read_table(written["votes_parquet"]).num_rows == len(votes)
    by_position: dict[int, list[str]] = {}
    for vote in votes:
        by_position.setdefault(int(vote["comparison_position"]), []).append(vote["choice"])
    names = {0: "image_0", 1: "image_1", T: "tie"}
    for position, script in SCRIPT.items():
        assert sorted(by_position[position]) == sorted(names[c] for c in script)
    for vote in votes:  # the side clicked and the left image agree with the recorded choice
        if vote["side"] != "tie":
            clicked = int(vote["left_image"]) if vote["side"] == "left" else 1 - int(vote["left_image"])
            assert vote["choice"] == f"image_{clicked}"
    summary = json.loads(written["summary"].read_text())
    assert (summary["wins"], summary["losses"], summary["ties"], summary["n"]) == (2, 2, 2, 6)
    assert summary["win_rate"] == pytest.approx(0.5)
    assert summary["win_rate_ci"] == pytest.approx(list(wilson_interval(3, 6)))
    assert (summary["run_a"], summary["run_b"]) == ("dpo", "base")
    assert summary["per_category"]["animals"]["n"] == 3


def test_export_of_an_empty_study(db_url: str, tmp_path: Path) -> None:
    """A study without votes exports empty tables and a summary with n = 0."""
    run_a = make_run(tmp_path / "a", ["x"], "m")
    run_b = make_run(tmp_path / "b", ["x"], "m")
    db = Database(db_url)
    try:
        migrate(db)
        create_study(db, evaluation_source(run_a, run_b), StudyOptions(name="empty", questions=parse_questions(None)))
        written = export_study(db, "empty", tmp_path / "out")
        assert pq.read_table(written["pickapic"]).num_rows == 0
        assert pq.read_table(written["votes_parquet"]).num_rows == 0
        summary = json.loads(written["summary"].read_text())
        assert summary["n"] == 0 and summary["win_rate"] is None and summary["win_rate_ci"] == [0.0, 1.0]
    finally:
        db.dispose()
