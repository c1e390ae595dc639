"""What a run shows while it works: stage timings (`StageTimer`, logged, and in run.json), a line with a ticking
clock on a terminal for the steps outside Dask (`StepClock`), and bars for the Dask computation and the twin.

When stderr is not a terminal the pipeline writes log lines instead of any bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

log = logging.getLogger(__name__)


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


@dataclass
class StageTimer:
    """Wall-clock seconds per named stage, in order; with `show`, a ticking line per stage on the terminal."""

    seconds: dict[str, float] = field(default_factory=dict)
    show: bool = False

    @contextlib.contextmanager
    def stage(self, name: str, *, has_own_bar: bool = False) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s ...", name)
        clock = StepClock(name) if self.show and not has_own_bar else contextlib.nullcontext()
        try:
            with clock:
                yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)
            log.info("%s done in %.2f s", name, self.seconds[name])


def result_bar(total: int):
    """A bar of the chunk summaries fetched from a cluster."""
    from tqdm import tqdm

    return tqdm(total=total, desc="compute", unit="chunk", file=sys.stderr)


def twin_progress() -> Callable[[str, float], None]:
    """A bar for making the digital twin: `update(step, fraction)` as twin.make_twin reports it."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc="making the digital twin (once)", unit="%", file=sys.stderr)

    def update(step: str, fraction: float) -> None:
        bar.set_postfix_str(step)
        bar.n = round(100 * fraction)
        bar.refresh()
        if fraction >= 1:
            bar.close()

    return update
