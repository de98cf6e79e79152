"""Label app throughput: sustained votes/s and the p50/p99 latency of the vote endpoint with
50 concurrent raters, against a real `prefdiff label serve` on 127.0.0.1 (loopback only).

    .venv/bin/python benchmarks/bench_label.py                  # SQLite, 50 raters, 3000 votes
    .venv/bin/python benchmarks/bench_label.py --db postgresql+psycopg://...   # PostgreSQL
    .venv/bin/python benchmarks/bench_label.py --repeat 3 --json results.json

The load generator (tests/label/loadgen.py) is the one the load tests use: each rater votes as
soon as the previous vote is acknowledged; latency is measured per acknowledged vote request,
from sending to the full response. The client runs on the same machine, so on a 2-core machine
it takes CPU from the server: the figures are a lower bound of what the server does alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "label"))

from loadgen import run_load  # noqa: E402
from test_load import prepare  # noqa: E402

from conftest import Server, free_port  # noqa: E402


@contextmanager
def fresh_database(db: str | None, workdir: Path) -> Iterator[str]:
    """A new SQLite file, or a new schema in the PostgreSQL database `db` (dropped after)."""
    if db is None or db.startswith("sqlite"):
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    from sqlalchemy import create_engine, text

    schema = "bench_" + uuid.uuid4().hex[:10]
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{db}{'&' if '?' in db else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def bench_once(db_url: str, workdir: Path, raters: int, votes: int, rate_limit: float) -> dict:
    """Prepare a study, start the server, run the load, stop; return the figures."""
    tokens = prepare(db_url, workdir / "pairs", comparisons=votes // 5 + raters, raters=raters)
    server = Server(db=db_url, port=free_port(), log=workdir / "server.log", rate_limit=rate_limit)
    server.start()
    try:
        result = asyncio.run(run_load(server.url, tokens, votes, deadline_s=300.0))
    finally:
        server.stop()
    if result.errors:
        raise SystemExit(f"errors during the load: {result.errors[:5]}")
    return {
        "votes": len(result.acked),
        "seconds": round(result.elapsed_s, 2),
        "votes_per_s": round(result.votes_per_s, 1),
        "p50_ms": round(result.percentile_ms(0.50), 1),
        "p99_ms": round(result.percentile_ms(0.99), 1),
        "retries": result.retries,
    }


def main() -> None:
    """Parse options, run the benchmark `--repeat` times, print (and optionally save) JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=None,
                        help="PostgreSQL URL (a fresh schema is made in it); default: a fresh SQLite file")  # fmt: skip
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--votes", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rate-limit", type=float, default=30.0, help="server's per-rater limit (req/s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-label-") as tmp:
            workdir = Path(tmp)
            with fresh_database(args.db, workdir) as db_url:
                runs.append(bench_once(db_url, workdir, args.raters, args.votes, args.rate_limit))
            print(f"run {i + 1}: {json.dumps(runs[-1])}", file=sys.stderr)
    report = {
        "backend": (args.db or "sqlite").split(":", 1)[0],
        "sqlite_synchronous": os.environ.get("PREFDIFF_LABEL_SQLITE_SYNC", "FULL"),
        "raters": args.raters,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        "runs": runs,
        "median_votes_per_s": sorted(r["votes_per_s"] for r in runs)[len(runs) // 2],
        "best_votes_per_s": max(r["votes_per_s"] for r in runs),
        "median_p50_ms": sorted(r["p50_ms"] for r in runs)[len(runs) // 2],
        "median_p99_ms": sorted(r["p99_ms"] for r in runs)[len(runs) // 2],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
