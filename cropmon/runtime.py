"""Process tuning for the client and the workers: GDAL's block cache, Arrow's and glibc's allocators, distributed's
log lines about failures cropmon reports itself, and the worker plugin that applies them to every worker of a
cluster, present and future."""

from __future__ import annotations

import logging
import os
import threading

from cropmon import errors

GDAL_BLOCK_CACHE_BYTES = 64 * 2**20


def return_freed_memory() -> None:
    """Let pyarrow allocate through the C allocator, which gives freed memory back to the OS.

    pandas' string columns and GDAL's Arrow reads live in Arrow memory; Arrow's own pool (mimalloc) keeps what a
    step frees, so reading the fields' attributes of a 4x AOI left ~100 MB held after the step.
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def limit_gdal_block_cache(max_bytes: int = GDAL_BLOCK_CACHE_BYTES) -> None:
    """Cap GDAL's raster block cache in this process (default: 5 % of RAM).

    cropmon reads every strip exactly once, so cached blocks are never reused; left at its default the cache
    grows with the AOI until it holds ~1.2 GB per worker on a 24 GiB machine.
    """
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(max_bytes))


MALLOC_MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's own ceiling for its dynamic threshold
MALLOC_TRIM_THRESHOLD_BYTES = 64 * 2**20  # twice it, as glibc's dynamic rule would set it


def reuse_freed_memory() -> bool:
    """Let glibc reuse the memory a task frees for the next task's arrays, instead of returning it to the OS and
    faulting it in again (glibc on Linux; False elsewhere).

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off glibc's dynamic mmap
    threshold: every array over 128 KiB is then mapped and unmapped, and each new one pays page faults for fresh
    zeroed pages. On a 2-core VM (~6 s per GiB of first-touched memory) the diagnosis of the full twin took 1.03 s
    in a worker and 0.64 s in a plain process; with these thresholds, 0.60 s in the worker (same data, warm, one
    session). A worker keeps at most 64 MiB of freed heap above its live data.
    """
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD_BYTES)
                and mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD_BYTES))


def trim_freed_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc's malloc_trim; False where there is none).

    Called by a task that has just freed much more than the next task will allocate (the chunk summaries once the
    per-field table is assembled, the diagnosis's intermediates): what `reuse_freed_memory` keeps for reuse would
    otherwise stay in the worker's footprint for the rest of the run.
    """
    malloc_trim = _glibc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


def _glibc_function(name: str):
    """A function of the C library when it is glibc on Linux (musl has neither mallopt nor malloc_trim), else None."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def worker_plugin():
    """A Dask worker plugin that applies `limit_gdal_block_cache`, `return_freed_memory` and `reuse_freed_memory`
    on every worker, present and future (registered by cluster.connect)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ProcessTuning(WorkerPlugin):
        name = "cropmon-process-tuning"

        def setup(self, worker) -> None:
            limit_gdal_block_cache()
            return_freed_memory()
            reuse_freed_memory()
            quiet_distributed_noise()

    return ProcessTuning()


SETTINGS_PLUGIN = "cropmon-settings"


def settings_plugin(environment: dict[str, str]):
    """A Dask worker plugin that sets a run's storage settings (GDAL's options, the cloud SDKs' variables: see
    io/store.StorageSettings) as environment variables of every worker, present and future, and puts back what
    was there when it is removed (cluster.connect removes it at the end of a run on a cluster it did not start).

    Environment variables, not GDAL's config API: the workers run two GDALs (rasterio's and pyogrio's wheels each
    bundle one) and the AWS SDK in pyarrow, and all three read the environment."""
    from distributed.diagnostics.plugin import WorkerPlugin

    from cropmon.io.store import clear_caches, is_secret

    class StorageSettingsOnWorker(WorkerPlugin):
        name = SETTINGS_PLUGIN

        def __init__(self, environment: dict[str, str]) -> None:
            self.environment = dict(environment)
            self.previous: dict[str, str | None] = {}

        def __repr__(self) -> str:  # never the values: distributed may log a plugin
            return f"<{SETTINGS_PLUGIN}: {', '.join(n for n in self.environment if not is_secret(n))} ...>"

        def setup(self, worker) -> None:
            import os

            self.previous = {name: os.environ.get(name) for name in self.environment}
            os.environ.update(self.environment)
            clear_caches()

        def teardown(self, worker) -> None:
            import os

            for name, value in self.previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            clear_caches()

    return StorageSettingsOnWorker(environment)


# A worker's RasterioIOError reading pixels is turned into NotARaster by the client (engine/job.py).
QUIET_WORKER_ERRORS: tuple[str, ...] = ("RasterioIOError",)


def _quiet_error(text: str) -> bool:
    """Whether a task's exception (its repr, as distributed logs it) is one the client reports in one line: an
    InputError or DiskFull of cropmon, an error the client turns into one, or a full disk in any words."""

    def kinds(cls: type) -> set[str]:
        names = {cls.__name__}
        subclasses: list[type] = cls.__subclasses__()
        for sub in subclasses:
            names |= kinds(sub)
        return names

    names = kinds(errors.InputError) | {errors.DiskFull.__name__, *QUIET_WORKER_ERRORS}
    name = text.strip("\"'").split("(", 1)[0].rsplit(".", 1)[-1]
    return name in names or any(t in text.lower() for t in errors.DISK_FULL_TEXTS)


CLOSING = threading.Event()  # set while this process closes the cluster it started: see cluster._local_client
NOISY_LOGGERS = ("distributed", "distributed.client", "tornado", "tornado.application")  # those with handlers


class DistributedNoise(logging.Filter):
    """On distributed's log handler: drops what distributed logs, traceback and all, about failures that cropmon
    reports itself in one line, or that are only the races of a cluster shutting down (one DEBUG line instead):

    - a worker's "Compute Failed" for a bad input or a full disk (the client raises it; the user sees one line);
    - a connection closed or cancelled under a message (a heartbeat to a scheduler that closed, a transfer from a
      worker that is gone, a reconnection cancelled as the client closes): the run either survives it (a lost
      worker's tasks run elsewhere) or fails with its own one-line ClusterError;
    - "Async instruction ... ended with CancelledError": a worker closing while tasks run (an interrupted run);
    - "Failed to reconnect to scheduler": the run fails with its own line about the lost scheduler;
    - distributed's `sync()` cancelling on Ctrl-C or SIGTERM before its future exists: a NameError in its own
      `cancel` callback (distributed 2026.8, `future` is declared but unset until the coroutine starts); the run
      stops as asked and says so in its own line;
    - while this process closes the cluster it started (CLOSING), anything but a critical message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        noise = self.noise(record)
        if noise:
            logging.getLogger(record.name).debug("%s (details dropped)", noise)
        return noise is None

    @staticmethod
    def noise(record: logging.LogRecord) -> str | None:
        if record.levelno < logging.WARNING or not record.name.startswith(("distributed", "tornado")):
            return None
        message = str(record.msg)
        if record.name == "distributed.worker" and message.startswith("Compute Failed"):
            args = record.args if isinstance(record.args, tuple) else ()
            text = str(args[3]) if len(args) > 3 else record.getMessage()
            return f"task {args[0] if args else '?'} failed: {text[:300]}" if _quiet_error(text) else None
        if message.startswith("Failed to reconnect to scheduler"):  # the run reports it: a lost scheduler
            return "the client gave up reconnecting to the scheduler"
        if "ended with CancelledError" in message:
            return "an instruction was cancelled while the worker closed"
        if _is_sync_cancel_race(record.exc_info[1] if record.exc_info else None):
            return "an interrupt landed before distributed's sync() had a future to cancel"
        if _is_closed_connection(record.exc_info[1] if record.exc_info else None):
            return f"{message.splitlines()[0][:200] if message.strip() else 'a connection'}: closed"
        if CLOSING.is_set() and record.levelno < logging.CRITICAL:
            return f"while the cluster closed: {record.getMessage().splitlines()[0][:200] if record.msg else ''}"
        return None


def _is_sync_cancel_race(exc: BaseException | None) -> bool:
    """A NameError raised in distributed.utils' `cancel` (the callback sync() schedules on KeyboardInterrupt)."""
    if not isinstance(exc, NameError) or exc.__traceback__ is None:
        return False
    import traceback

    import distributed.utils

    last = traceback.extract_tb(exc.__traceback__)[-1]
    return last.name == "cancel" and os.path.realpath(last.filename) == os.path.realpath(distributed.utils.__file__)


def _is_closed_connection(exc: BaseException | None) -> bool:
    import asyncio

    from distributed.comm.core import CommClosedError
    from tornado.iostream import StreamClosedError

    return isinstance(exc, CommClosedError | StreamClosedError | ConnectionError | asyncio.CancelledError)


def quiet_distributed_noise() -> None:
    """Install DistributedNoise on distributed's log handlers in this process (once each)."""
    handlers = {h for name in NOISY_LOGGERS for h in logging.getLogger(name).handlers}
    for handler in handlers:
        if not any(isinstance(f, DistributedNoise) for f in handler.filters):
            handler.addFilter(DistributedNoise())
