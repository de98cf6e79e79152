"""Loopback load and durability: 50 concurrent raters cast 2000 votes against a real uvicorn
server; every acknowledged vote is stored exactly once — also when the server is killed with
SIGKILL in the middle of the load and started again. SQLite and (with PREFDIFF_TEST_PG_URL)
PostgreSQL. Bounded: a vote target and a deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from loadgen import LoadResult, run_load
from sqlalchemy import text

from conftest import Server, png_bytes
from prefdiff.label.db import Database, migrate
from prefdiff.label.sources import collection_source
from prefdiff.label.studies import StudyOptions, add_raters, create_study, parse_questions

RATERS = 50
VOTES = 2000
K = 5
DEADLINE_S = 120.0

pytestmark = pytest.mark.slow


def prepare(db_url: str, folder: Path, comparisons: int = VOTES // K + 40, raters: int = RATERS) -> list[str]:
    """A collection study of `comparisons` pairs (two tiny images, reused) and rater tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.png").write_bytes(png_bytes((255, 0, 0)))
    (folder / "b.png").write_bytes(png_bytes((0, 0, 255)))
    rows = [{"prompt": f"prompt {i}", "image_0": "a.png", "image_1": "b.png"} for i in range(comparisons)]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = Database(db_url)
    try:
        migrate(db)
        options = StudyOptions(name="load", questions=parse_questions(None), raters_per_comparison=K)
        study = create_study(db, collection_source(folder / "pairs.jsonl"), options)
        return [r.token for r in add_raters(db, study, count=raters)]
    finally:
        db.dispose()


def check_stored(db_url: str, result: LoadResult) -> int:
    """Every acknowledged vote is in the database once, with the side sent; the study's
    invariants hold. Returns the number of stored votes."""
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            stored = {
                (assignment_id, key): side
                for assignment_id, key, side in conn.execute(text(
                    "SELECT v.assignment_id, q.key, v.side FROM votes v JOIN questions q ON q.id = v.question_id"
                ))
            }  # fmt: skip
            duplicated = conn.execute(text(
                "SELECT assignment_id, question_id FROM votes GROUP BY assignment_id, question_id HAVING count(*) > 1"
            )).all()  # fmt: skip
            overfull = conn.execute(text(
                "SELECT comparison_id FROM assignments GROUP BY comparison_id HAVING count(*) > :k "
                "OR count(DISTINCT rater_id) < count(*)"
            ), {"k": K}).all()  # fmt: skip
            counters = conn.execute(text(
                "SELECT c.id FROM comparisons c WHERE c.n_assigned != "
                "(SELECT count(*) FROM assignments a WHERE a.comparison_id = c.id)"
            )).all()  # fmt: skip
    finally:
        db.dispose()
    missing = [key for key in result.acked if key not in stored]
    wrong = [key for key, side in result.acked.items() if key in stored and stored[key] != side]
    assert not missing, f"{len(missing)} acknowledged votes missing, e.g. {missing[:5]}"
    assert not wrong, f"{len(wrong)} votes stored with another side, e.g. {wrong[:5]}"
    assert duplicated == [] and overfull == [] and counters == []
    return len(stored)


def test_load_50_raters_2000_votes(db_url: str, tmp_path: Path, server_factory: Callable[..., Server]) -> None:
    """No crash, no error answer, every acknowledged vote stored exactly once."""
    tokens = prepare(db_url, tmp_path / "pairs")
    server: Server = server_factory(db_url, rate_limit=30.0)
    server.start()
    result = asyncio.run(run_load(server.url, tokens, VOTES, DEADLINE_S))
    server.stop()
    assert result.errors == []
    assert len(result.acked) >= VOTES, f"only {len(result.acked)} votes in {result.elapsed_s:.1f} s"
    assert check_stored(db_url, result) == len(result.acked)  # nothing stored that was not acknowledged
    print(f"\n{db_url.split(':')[0]}: {result.votes_per_s:.0f} votes/s, p50 {result.percentile_ms(0.5):.1f} ms, "
          f"p99 {result.percentile_ms(0.99):.1f} ms")  # fmt: skip


def test_sigkill_during_load_loses_no_acknowledged_vote(
    db_url: str, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """SIGKILL the server after 600 acknowledged votes, start it again; the raters retry
    (same votes) and go on to 2000. Every vote acknowledged before or after is stored."""
    tokens = prepare(db_url, tmp_path / "pairs")
    server: Server = server_factory(db_url, rate_limit=30.0)
    server.start()
    restarted = asyncio.Event()
    acked_at_kill: list[int] = []

    async def kill_once(acked: int) -> None:
        if acked >= 600 and not acked_at_kill:
            acked_at_kill.append(acked)
            server.kill()
            await asyncio.sleep(0.2)
            await asyncio.to_thread(server.start)
            restarted.set()

    result = asyncio.run(run_load(server.url, tokens, VOTES, DEADLINE_S, on_vote=kill_once))
    server.stop()
    assert acked_at_kill and restarted.is_set(), "the server was never killed"
    assert result.retries > 0, "no request failed: the kill happened outside the load"
    assert result.errors == []
    assert len(result.acked) >= VOTES
    stored = check_stored(db_url, result)
    # Votes in flight at the kill may be committed without an acknowledgement; at most one per rater.
    assert len(result.acked) <= stored <= len(result.acked) + RATERS
