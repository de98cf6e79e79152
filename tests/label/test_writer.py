"""The group-commit writer: results only after the commit; a failing job does not spoil its
batch; a failing commit acknowledges nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from prefdiff.label.db import Database, migrate
from prefdiff.label.schema import Setting
from prefdiff.label.writer import Writer


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    """A migrated SQLite database."""
    database = Database(sqlite_url)
    migrate(database)
    yield database
    database.dispose()


def _put(key: str) -> object:
    def job(session: Session) -> str:
        session.add(Setting(key=key, value="v"))
        session.flush()
        return key

    return job


def _fail(session: Session) -> str:
    session.add(Setting(key="half-done", value="v"))
    session.flush()
    raise ValueError("job failed")


def _keys(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.scalars(select(Setting.key)))


def test_jobs_of_a_batch_commit_together_and_a_failing_job_is_isolated(db: Database) -> None:
    """Twenty concurrent jobs (one failing) give 19 results, 1 error, and only the 19 rows."""
    writer = Writer(db)

    async def main() -> list[object]:
        jobs = [writer.run(_put(f"k{i}")) for i in range(19)] + [writer.run(_fail)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    writer.stop()
    assert results[:19] == [f"k{i}" for i in range(19)]
    assert isinstance(results[19], ValueError)
    assert _keys(db) == {f"k{i}" for i in range(19)}
    assert writer.jobs == 20 and writer.batches <= 20


def test_a_failed_commit_acknowledges_nothing(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the batch's commit raises, every job gets the error and nothing is stored."""
    original = db.write

    @contextmanager
    def failing_write() -> Iterator[Session]:
        with original() as session:
            yield session
            raise OSError("disk full")  # raised before the commit: the transaction rolls back

    monkeypatch.setattr(db, "write", failing_write)
    writer = Writer(db)

    async def main() -> list[object]:
        return await asyncio.gather(writer.run(_put("a")), writer.run(_put("b")), return_exceptions=True)

    results = asyncio.run(main())
    writer.stop()
    assert all(isinstance(r, OSError) for r in results)
    monkeypatch.setattr(db, "write", original)
    assert _keys(db) - {"secret"} == set()
