"""The step a run keeps: the selection rules on synthetic evaluation curves."""

import json

import pytest

from prefdiff.train.selection import EvalPoint, choose_step, drop_evaluations_after, select_result, snapshot_dir

# a curve that rises, flattens from step 600 and wobbles: 128 pairs, so one standard error is ~0.037
RISING = [(200, 0.62), (400, 0.70), (600, 0.76), (800, 0.78), (1000, 0.77), (1200, 0.79)]


def curve(values, pairs=128):
    return [EvalPoint(step, accuracy, pairs) for step, accuracy in values]


def test_best_takes_the_peak_and_one_se_the_earliest_step_within_a_standard_error_of_it():
    points = curve(RISING)
    assert choose_step(points, "last").step == 1200
    assert choose_step(points, "best").step == 1200
    best = choose_step(points, "best")
    assert best.stderr == pytest.approx((0.79 * 0.21 / 128) ** 0.5)
    assert choose_step(points, "one_se").step == 600  # 0.76 >= 0.79 - 0.036; 0.70 is not


def test_one_se_follows_the_pairs_it_was_measured_on_and_the_earliest_of_equal_peaks_wins():
    # with 1000 pairs the standard error is ~0.013: 0.78 (step 800) is within it, 0.76 is not
    assert choose_step(curve(RISING, pairs=1000), "one_se").step == 800
    assert choose_step(curve([(100, 0.8), (200, 0.8), (300, 0.7)]), "best").step == 100
    # a curve that peaks early and falls: one_se never picks a later step than best
    falling = curve([(100, 0.60), (200, 0.81), (300, 0.74), (400, 0.66)])
    assert choose_step(falling, "best").step == 200 and choose_step(falling, "one_se").step == 200


def test_bad_rules_and_empty_curves_are_refused():
    with pytest.raises(ValueError, match="no evaluation"):
        choose_step([], "best")
    with pytest.raises(ValueError, match="unknown selection rule 'median'"):
        choose_step(curve(RISING), "median")


def _write_run(run, rows):
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for row in rows:
        folder = snapshot_dir(run, row["step"]) / "lora"
        folder.mkdir(parents=True)
        (folder / "weights").write_text(f"step {row['step']}")
    (run / "lora").mkdir()
    (run / "lora" / "weights").write_text("final")


def test_select_result_copies_the_chosen_snapshot_over_the_result_and_records_it(tmp_path):
    rows = [{"step": s, "eval_implicit_acc": a, "eval_pairs": 128} for s, a in RISING]
    _write_run(tmp_path, rows)
    record = select_result(tmp_path, tmp_path / "lora", "one_se", max_steps=1200)
    assert record["step"] == 600 and record["best_step"] == 1200
    assert (tmp_path / "lora" / "weights").read_text() == "step 600"
    written = json.loads((tmp_path / "selection.json").read_text())
    assert written["rule"] == "one_se" and [p["step"] for p in written["curve"]] == [s for s, _ in RISING]


def test_select_last_keeps_the_final_weights_and_a_resume_forgets_later_evaluations(tmp_path):
    rows = [{"step": s, "eval_implicit_acc": a, "eval_pairs": 128} for s, a in RISING]
    _write_run(tmp_path, rows)
    assert select_result(tmp_path, tmp_path / "lora", "last", max_steps=1200)["step"] == 1200
    assert (tmp_path / "lora" / "weights").read_text() == "final"
    drop_evaluations_after(tmp_path, 600)
    kept = [json.loads(line)["step"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert kept == [200, 400, 600]
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == [f"step_{s:07d}" for s in (200, 400, 600)]
