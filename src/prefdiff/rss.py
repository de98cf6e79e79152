"""Peak resident memory of a stretch of code (Linux ``/proc``; CPU memory), for the benchmarks
and the quickstart's per-objective training figures."""

from __future__ import annotations

import os
import resource
import threading


class RssSampler:
    """Samples the process's current RSS every ``interval`` seconds in a thread; ``stop()``
    returns the peak growth in bytes over the RSS at construction. (ru_maxrss cannot do this:
    the imports' own transient peak hides everything a small model adds.) Without ``/proc`` it
    falls back to the growth of ru_maxrss, a lower bound."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.proc = os.path.exists("/proc/self/statm")
        self.start = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        if not self.proc:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        return self.peak - self.start
