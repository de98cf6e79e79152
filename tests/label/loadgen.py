"""A loopback load generator for the label app: N concurrent raters voting as fast as the server
answers. Used by the load/durability tests and by benchmarks/bench_label.py.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (one connection per
rater): on a 2-core machine httpx's per-request CPU cost would otherwise be what is measured.

Every acknowledged vote (HTTP 200) is recorded with the side that was sent, so a test can
check afterwards that each one is stored exactly once. A vote whose request failed (connection
refused or reset while the server restarts, 5xx, 429) is re-sent unchanged: the server treats a
repeated vote as the same vote. Loops are bounded by a vote target and a deadline.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

RETRYABLE = (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ValueError)


@dataclass
class Response:
    """Status and body of one HTTP response."""

    status_code: int
    body: bytes

    def json(self) -> dict:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", "replace")


class Connection:
    """One keep-alive HTTP/1.1 connection to host:port; reconnects after an error."""

    def __init__(self, host: str, port: int, timeout_s: float = 15.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        """Close the socket (errors ignored)."""
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, payload: dict | None = None) -> Response:
        """Send one request and read the whole response (Content-Length framing)."""
        try:
            return await asyncio.wait_for(self._request(method, path, payload), self.timeout_s)
        except BaseException:
            await self.close()
            raise

    async def _request(self, method: str, path: str, payload: dict | None) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        if payload is not None:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return Response(status, data)


@dataclass
class LoadResult:
    """What the raters saw."""

    acked: dict[tuple[int, str], str] = field(default_factory=dict)  # (assignment, question) -> side
    latencies_s: list[float] = field(default_factory=list)  # of acknowledged vote requests
    duplicates: int = 0  # votes the server had already stored (ack lost, re-sent)
    retries: int = 0
    errors: list[str] = field(default_factory=list)  # unexpected 4xx answers
    elapsed_s: float = 0.0
    raters_finished: int = 0

    @property
    def votes_per_s(self) -> float:
        """Acknowledged votes per second of wall time."""
        return len(self.acked) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        """The q-quantile (0..1) of acknowledged vote latency, in milliseconds."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _check_loopback(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise ValueError(f"load tests target loopback addresses only, not {host!r}")


async def run_load(
    base_url: str,
    tokens: list[str],
    target_votes: int,
    deadline_s: float,
    question: str = "preference",
    seed: int = 0,
    on_vote: Callable[[int], Awaitable[None] | None] | None = None,
) -> LoadResult:
    """Let one coroutine per token vote until `target_votes` acknowledged votes in total,
    until the raters run out of work, or until `deadline_s` seconds have passed."""
    _check_loopback(base_url)
    result = LoadResult()
    start = time.perf_counter()
    stop_at = start + deadline_s
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def request(connection: Connection, method: str, url: str, payload: dict | None = None) -> Response | None:
        """Send until answered with something other than 5xx/429, or the deadline."""
        delay = 0.05
        while time.perf_counter() < stop_at:
            try:
                response = await connection.request(method, url, payload)
                if response.status_code < 500 and response.status_code != 429:
                    return response
            except RETRYABLE:
                pass
            result.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        return None

    async def rater(index: int, token: str) -> None:
        rng = random.Random(seed * 100_003 + index)
        connection = Connection(host, port)
        try:
            response = await request(connection, "GET", f"/api/r/{token}/next")
            assignment = response.json()["assignment"] if response is not None else None
            while assignment is not None and len(result.acked) < target_votes:
                side = rng.choice(("left", "right", "tie"))
                body = {"assignment_id": assignment["assignment_id"], "question": question, "choice": side}
                sent = time.perf_counter()
                response = await request(connection, "POST", f"/api/r/{token}/votes", body)
                if response is None:
                    return  # deadline
                if response.status_code != 200:
                    result.errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                data = response.json()
                result.latencies_s.append(time.perf_counter() - sent)
                key = (assignment["assignment_id"], question)
                if key in result.acked:
                    result.errors.append(f"vote {key} acknowledged twice")
                result.acked[key] = side
                result.duplicates += int(data["duplicate"])
                if on_vote is not None:
                    maybe = on_vote(len(result.acked))
                    if maybe is not None:
                        await maybe
                assignment = data["assignment"]
            result.raters_finished += 1
        finally:
            await connection.close()

    await asyncio.gather(*(rater(i, t) for i, t in enumerate(tokens)))
    result.elapsed_s = time.perf_counter() - start
    return result
