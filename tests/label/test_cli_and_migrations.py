"""`prefdiff label ...` commands end to end, and the Alembic migrations against the tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_run
from prefdiff.label.cli import app

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_cli_study_lifecycle(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """init -> create-study (with raters) -> add-raters -> status -> export."""
    db = str(tmp_path / "cli.db")
    assert "admin token (shown once):" in _ok("init", "--db", db)
    assert "already set" in _ok("init", "--db", db)
    out = _ok("create-study", "--db", db, "--name", "eval", "--kind", "evaluation",
              "--run-a", str(runs[0]), "--run-b", str(runs[1]), "--question", "preference",
              "--question", "alignment", "--no-ties", "--raters-per-comparison", "3",
              "--raters", "2", "--base-url", "http://127.0.0.1:9999")  # fmt: skip
    assert "6 comparisons" in out and out.count("http://127.0.0.1:9999/r/") == 2
    out = _ok("add-raters", "--db", db, "--study", "eval", "--name", "ana", "--name", "bo")
    assert out.startswith("ana\t") and out.count("/r/") == 2
    out = _ok("status", "--db", db, "--study", "eval")
    assert "0/6 comparisons complete" in out
    summary = json.loads(_ok("status", "--db", db, "--study", "eval", "--json"))
    assert [q["key"] for q in summary["study"]["questions"]] == ["preference", "alignment"]
    assert summary["study"]["allow_ties"] is False
    out = _ok("export", "--db", db, "--study", "eval", "--out", str(tmp_path / "out"), "--votes-format", "csv")
    assert (tmp_path / "out" / "votes.csv").is_file() and (tmp_path / "out" / "summary.json").is_file()
    assert not (tmp_path / "out" / "votes.parquet").exists()
    assert len(_ok("admin-token", "--db", db).strip()) >= 32


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """Runs with different seeds: exit status 2 and a message naming the key, no traceback."""
    run_a = make_run(tmp_path / "a", ["x", "y"], "m", seed_base=1)
    run_b = make_run(tmp_path / "b", ["x", "y"], "m", seed_base=2)
    result = subprocess.run(
        [sys.executable, "-m", "prefdiff.label", "create-study", "--db", str(tmp_path / "e.db"),
         "--name", "e", "--kind", "evaluation", "--run-a", str(run_a), "--run-b", str(run_b)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: seed differs at (prompt_index, image_index) = (0, 0)")
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    """`label status --db` on a text file: exit 2, one line naming it, no traceback."""
    notes = tmp_path / "notes.sqlite"
    notes.write_text("not a database\n")
    result = subprocess.run(
        [sys.executable, "-m", "prefdiff.label", "status", "--db", str(notes), "--study", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: --db {notes}: cannot open the label database (file is not a database)"


def test_label_help_is_fast_and_torch_free() -> None:
    """`python -m prefdiff.label --help` imports neither torch nor the web stack."""
    code = ("import sys, runpy; sys.argv=['prefdiff.label', '--help']\n"
            "try:\n    runpy.run_module('prefdiff.label', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'fastapi', 'sqlalchemy') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "create-study" in result.stdout
    assert "LOADED []" in result.stdout


def test_the_app_never_imports_torch() -> None:
    """Importing every label module (web app included) does not import torch."""
    code = ("import sys\nimport prefdiff.label.app, prefdiff.label.admin, prefdiff.label.export, prefdiff.label.cli\n"
            "print('torch' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_migrations_match_the_tables_and_are_idempotent(db_url: str) -> None:
    """After `migrate`, Alembic's autogenerate finds no difference with `schema`; a second
    `migrate` is a no-op."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from prefdiff.label.db import Database, migrate
    from prefdiff.label.schema import Base

    db = Database(db_url)
    try:
        migrate(db)
        migrate(db)
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert context.get_current_revision() == "0002"
            diff = compare_metadata(context, Base.metadata)
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("comparisons")}
        # Alembic cannot compare an index on an expression ("n_assigned DESC"): check it by name.
        assert "ix_comparisons_queue" in indexes
        diff = [d for d in diff if not (d[0].endswith("_index") and d[1].name == "ix_comparisons_queue")]
        assert diff == []
    finally:
        db.dispose()


def test_in_memory_sqlite_is_refused() -> None:
    """Votes must be durable: an in-memory database is a clear error."""
    from prefdiff.label.db import Database
    from prefdiff.label.errors import StudyError

    with pytest.raises(StudyError, match="in-memory"):
        Database("sqlite://")


def test_sqlite_runs_in_wal_mode_with_full_sync(sqlite_url: str) -> None:
    """Every connection uses WAL, synchronous=FULL (2) and enforced foreign keys."""
    from prefdiff.label.db import Database

    db = Database(sqlite_url)
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()
