"""Progress on a terminal for the steps outside Dask (reading fields, writing outputs): a line with a ticking clock.

The Dask computation has its own bar (distributed.progress or dask's ProgressBar); when stderr is not a terminal
the pipeline writes log lines instead of either.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType


class StepClock:
    """`with StepClock("writing outputs"):` shows "writing outputs ... 2.4 s" on stderr, updated 4 times a second."""

    def __init__(self, name: str, *, stream=None, interval: float = 0.25) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._start = 0.0

    def _line(self, suffix: str) -> None:
        self.stream.write(f"\r{self.name} ... {time.perf_counter() - self._start:5.1f} s{suffix}")
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._line("")

    def __enter__(self) -> StepClock:
        self._start = time.perf_counter()
        self._line("")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None):
        self._stop.set()
        self._thread.join()
        self._line(" done\n" if exc_type is None else " failed\n")
