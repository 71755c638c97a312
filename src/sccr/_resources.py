"""Peak memory of this process."""

from __future__ import annotations

import os
import resource
import sys
import threading


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


class PeakRSS:
    """Context manager: peak resident set size of this process while the block runs, in MiB.

    A background thread reads the current RSS (``/proc/self/statm``) every
    ``interval`` seconds, plus once at entry and at exit; the peak is the largest
    reading, so a spike shorter than ``interval`` can be missed. It is the whole
    process (interpreter, loaded data, earlier allocations still held), not what
    the block allocated. Where ``/proc`` is missing, the process's lifetime
    peak (:func:`peak_rss_mb`) at exit is used instead.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_mb = 0.0

    @staticmethod
    def _current_mb() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
        except OSError:
            return None
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024**2

    def _sample(self) -> None:
        current = self._current_mb()
        if current is not None:
            self.peak_mb = max(self.peak_mb, current)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self._current_mb() is None:
            self.peak_mb = peak_rss_mb()
