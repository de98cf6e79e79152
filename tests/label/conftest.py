"""Fixtures of the label app's tests: tiny images, generation runs and pairs files made in code,
a database per test (SQLite, and PostgreSQL when PREFDIFF_TEST_PG_URL is set), an in-process
client and a real uvicorn server in a subprocess (loopback only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

ADMIN_TOKEN = "test-admin-token-0123456789"
PG_ENV = "PREFDIFF_TEST_PG_URL"


def png_bytes(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A valid `size`x`size` single-colour PNG, written with zlib only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b"")
    )


def make_run(
    run_dir: Path, prompts: list[str], model: str, images_per_prompt: int = 1,
    seed_base: int = 1000, colour: tuple[int, int, int] = (200, 30, 30),
) -> Path:  # fmt: skip
    """A generation run as `prefdiff generate` writes it: images + manifest.jsonl."""
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    with (run_dir / "manifest.jsonl").open("w") as manifest:
        for p, prompt in enumerate(prompts):
            for i in range(images_per_prompt):
                rel = f"images/{p:04d}_{i}.png"
                shade = (colour[0], (colour[1] + 7 * p + i) % 256, colour[2])
                (run_dir / rel).write_bytes(png_bytes(shade))
                row = {"prompt": prompt, "prompt_index": p, "image_index": i,
                       "seed": seed_base + 10 * p + i, "file": rel,
                       "category": ["animals", "objects"][p % 2], "model": model, "lora": None}  # fmt: skip
                manifest.write(json.dumps(row) + "\n")
    return run_dir


def make_pairs(folder: Path, n: int) -> Path:
    """A pairs.jsonl with `n` unlabelled pairs of distinct images."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "pairs.jsonl").open("w") as handle:
        for k in range(n):
            for side in (0, 1):
                (folder / f"p{k}_{side}.png").write_bytes(png_bytes((k % 256, 100 * side, 50)))
            handle.write(
                json.dumps({"prompt": f"prompt {k}", "image_0": f"p{k}_0.png", "image_1": f"p{k}_1.png"}) + "\n"
            )
    return folder / "pairs.jsonl"


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    """Two matching runs (A: tuned, B: base) of 6 prompts x 1 image."""
    prompts = [f"a photo of thing {i}" for i in range(6)]
    run_a = make_run(tmp_path / "tuned", prompts, "sd-toy", colour=(220, 40, 40))
    run_b = make_run(tmp_path / "base", prompts, "sd-toy-base", colour=(40, 40, 220))
    return run_a, run_b


def _pg_url_with_schema(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def _pg_schema(base: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test; yields a URL whose search_path is it."""
    from sqlalchemy import create_engine, text

    schema = "t_" + uuid.uuid4().hex[:12]
    engine = create_engine(base)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as err:  # the server went away or the URL is wrong
        engine.dispose()
        pytest.skip(f"PostgreSQL at {PG_ENV} not usable: {err}")
    try:
        yield _pg_url_with_schema(base, schema)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new schema in $PREFDIFF_TEST_PG_URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'label.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (.ci/services.sh sets it in CI)")
    yield from _pg_schema(base)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'label.db'}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A `prefdiff label serve` subprocess on 127.0.0.1."""

    db: str
    port: int
    log: Path
    rate_limit: float = 0.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until /healthz answers."""
        env = {**os.environ, "PREFDIFF_LABEL_ADMIN_TOKEN": ADMIN_TOKEN}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefdiff.label", "serve", "--db", self.db, "--host",
                 "127.0.0.1", "--port", str(self.port), "--rate-limit", str(self.rate_limit)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout_s} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no flush) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the server politely, or kill it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Make `Server`s that are always stopped at the end of the test."""
    servers: list[Server] = []

    def make(db: str, rate_limit: float = 0.0) -> Server:
        server = Server(db=db, port=free_port(), log=tmp_path / f"server{len(servers)}.log", rate_limit=rate_limit)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@dataclass
class Env:
    """An in-process app with one evaluation study and some raters."""

    client: TestClient
    db_url: str
    study_id: int
    tokens: list[str]
    admin: dict[str, str]

    def next(self, token: str) -> dict:
        """GET the rater's next assignment (asserting 200)."""
        response = self.client.get(f"/api/r/{token}/next")
        assert response.status_code == 200, response.text
        return response.json()

    def vote(self, token: str, assignment_id: int, choice: str = "left",
             question: str = "preference") -> httpx.Response:  # fmt: skip
        """POST a vote; returns the response."""
        return self.client.post(
            f"/api/r/{token}/votes",
            json={"assignment_id": assignment_id, "question": question, "choice": choice},
        )

    def sql(self, query: str, **params: object) -> list[tuple]:
        """Run a read query on the app's database."""
        from sqlalchemy import text

        with self.client.app.state.db.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query), params).all()]


def make_env(db_url: str, runs: tuple[Path, Path], raters: int = 4, k: int = 3,
             allow_ties: bool = True, questions: list[str] | None = None,
             rate_per_s: float = 0.0) -> Env:  # fmt: skip
    """Create the app, an evaluation study of `runs` (k raters per comparison) and raters."""
    from fastapi.testclient import TestClient

    from prefdiff.label.app import AppSettings, create_app

    app = create_app(AppSettings(db=db_url, admin_token=ADMIN_TOKEN, rate_per_s=rate_per_s, rate_burst=2))
    client = TestClient(app)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"name": "tuned-vs-base", "kind": "evaluation", "run_a": str(runs[0]), "run_b": str(runs[1]),
            "raters_per_comparison": k, "allow_ties": allow_ties, "questions": questions}  # fmt: skip
    response = client.post("/api/admin/studies", json=body, headers=admin)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    tokens: list[str] = []
    if raters:
        response = client.post(f"/api/admin/studies/{study_id}/raters", json={"count": raters}, headers=admin)
        assert response.status_code == 201, response.text
        tokens = [r["token"] for r in response.json()["raters"]]
    return Env(client, db_url, study_id, tokens, admin)


@pytest.fixture
def env(db_url: str, runs: tuple[Path, Path]) -> Iterator[Env]:
    """The default `Env`: 6 comparisons, 3 raters each, 4 raters, ties allowed."""
    environment = make_env(db_url, runs)
    yield environment
    environment.client.app.state.db.dispose()
