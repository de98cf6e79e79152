"""Peak resident memory of a stretch of code, for the benchmarks (CPU)."""

from __future__ import annotations

import os
import threading


class RssSampler:
    """Samples the process's current RSS every 2 ms in a thread; ``stop()`` returns the peak
    growth in bytes over the RSS at construction. (ru_maxrss cannot do this: the imports' own
    transient peak hides everything a small model adds.)"""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        return self.peak - self.start
