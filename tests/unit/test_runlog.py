"""prefdiff.runlog: metrics.jsonl rows back as dicts, a line cut short by a crash skipped, and
the rows after a resumed step dropped with the kept lines untouched."""

from __future__ import annotations

from pathlib import Path

from prefdiff.runlog import drop_metrics_after, read_metrics

LOGGED = '{"step": 1, "loss": 0.69}\n{"step": 2, "loss": 0.5}\n\n{"step": 3,   "loss": 0.4}\n'


def test_read_metrics_returns_rows_with_steps(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(LOGGED)
    assert read_metrics(path) == [{"step": 1, "loss": 0.69}, {"step": 2, "loss": 0.5}, {"step": 3, "loss": 0.4}]
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_a_last_line_cut_short_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(LOGGED + '{"step": 4, "lo')
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3]
    path.write_text(LOGGED + '{"loss": 0.3}\n{"step": "4"}\n')  # no int step: not a metrics row
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3]


def test_drop_metrics_after_keeps_lines_up_to_the_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(LOGGED + '{"step": 4, "lo')
    assert drop_metrics_after(path, 2) == 2  # step 3 and the line cut short
    assert path.read_text() == '{"step": 1, "loss": 0.69}\n{"step": 2, "loss": 0.5}\n'
    path.write_text(LOGGED)
    assert drop_metrics_after(path, 3) == 0 and path.read_text() == LOGGED  # untouched
    assert drop_metrics_after(tmp_path / "absent.jsonl", 3) == 0
