"""Group commit: one thread runs the app's write jobs in batches — one transaction and one
commit (so one fsync) per batch, each job inside its own savepoint.

Why: a vote must be committed durably before it is acknowledged (SQLite `synchronous=FULL`
fsyncs the WAL at every commit). Committing each vote on its own serialises the server on
fsync; many request threads contending for SQLite's single write lock (and for the GIL) make
it worse. With one writer, the votes that arrive while a commit is in progress are committed
together by the next one, and no request thread ever waits on a database lock.

Guarantees:
- a job's result is handed back only after the commit that contains it has returned, so an
  acknowledged vote is on disk;
- if the commit fails, every job of the batch gets the error (nothing is acknowledged);
- a job that raises is rolled back to its savepoint and gets its exception; the other jobs
  of the batch are unaffected.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from prefdiff.label.db import Database

T = TypeVar("T")
MAX_BATCH = 64


@dataclass
class _Job(Generic[T]):
    function: Callable[[Session], T]
    deliver: Callable[[T | None, BaseException | None], None]
    result: T | None = None
    error: BaseException | None = field(default=None)


class Writer:
    """The single writer of one `Database` (started on first use, stopped by `stop`)."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0
        self.jobs = 0

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="prefdiff-writer", daemon=True)
                self._thread.start()

    async def run(self, function: Callable[[Session], T]) -> T:
        """Run `function(session)` in the next batch; return its result once committed."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():  # the request was cancelled (client went away)
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def deliver(result: T | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, result, error)

        self._queue.put(_Job(function, deliver))
        return await future

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the queued jobs and end the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            self._run_batch(batch)
            if stopping:
                return

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        try:
            with self.db.write() as session:
                for job in batch:
                    try:
                        with session.begin_nested():
                            job.result = job.function(session)
                    except Exception as error:
                        job.error = error
            # Committed (the `with` returned): now the results may be acknowledged.
        except Exception as error:
            for job in batch:
                job.result, job.error = None, error
        self.batches += 1
        self.jobs += len(batch)
        for job in batch:
            job.deliver(job.result, job.error)
