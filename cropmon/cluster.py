"""The only place that makes a Dask client: `--scheduler ADDRESS` | `local` (a LocalCluster on 127.0.0.1) | `threads`.

Also owns running a computation on whichever was chosen (`ClusterHandle.compute`: a progress bar on a terminal,
log lines otherwise, the tasks each worker ran for the manifest, and a clear failure when the cluster loses all
its workers) and the Dask performance report of a run (`--profile`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cropmon import errors, runtime
from cropmon.progress import result_bar, threads_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TLSFiles:
    """Client TLS material for a `tls://` scheduler (from flags; else Dask's own `distributed.comm.tls` config)."""

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None

    def security(self):
        from distributed.security import Security

        if not (self.ca_file or self.cert or self.key):
            return None
        missing = [name for name, value in (("--tls-ca-file", self.ca_file), ("--tls-cert", self.cert)) if not value]
        if missing:
            raise errors.ConfigError(
                f"TLS needs {' and '.join(missing)} as well", fix="pass --tls-ca-file, --tls-cert (and --tls-key)"
            )
        for path in (self.ca_file, self.cert, self.key):
            if path and not os.path.exists(path):
                raise errors.MissingFile("TLS file does not exist", path=path, fix="check the --tls-* paths")
        return Security(
            tls_ca_file=self.ca_file, tls_client_cert=self.cert, tls_client_key=self.key, require_encryption=True
        )


@dataclass
class ClusterHandle:
    """The chosen execution backend and what the manifest says about it."""

    kind: str  # "threads" | "local" | "remote" | "client" (the caller's own Client)
    client: Any = None
    address: str | None = None
    dashboard_link: str | None = None
    tasks_per_worker: dict[str, int] = field(default_factory=dict)
    warming: list = field(default_factory=list)  # futures of the workers' warm-up imports (kept alive until used)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "kind": self.kind,
            "address": self.address,
            "dashboard": self.dashboard_link,
        }
        if self.client is not None:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
            info["n_workers"] = len(workers)
            info["threads"] = sum(w.get("nthreads", 0) for w in workers.values())
            info["memory_limit_bytes"] = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
            info["workers"] = {addr: {"tasks": n} for addr, n in sorted(self.tasks_per_worker.items())}
            info["n_workers_used"] = len(self.tasks_per_worker)
        else:
            import dask

            info["n_workers"] = 1
            info["threads"] = dask.system.CPU_COUNT
        return info

    def compute(
        self, graphs: Sequence[Any], collect: Callable[[int, Any], None], *, progress: bool,
        no_worker_timeout: float = 60.0,
    ) -> None:
        """Compute all `graphs` in one submission and hand each value to `collect(index, value)` as it finishes.

        On a cluster every result is fetched as soon as it is ready and then released, so no worker holds
        finished results until the end: held there, ~75 MB of small results fragmented a worker's heap into
        ~450 MB of RSS on the 4x twin.
        """
        import dask

        if self.client is None:
            runtime.limit_gdal_block_cache()
            with threads_progress(progress):
                values = dask.compute(*graphs, scheduler="threads")
            for index, value in enumerate(values):
                collect(index, value)
            return
        self._compute_distributed(graphs, collect, progress=progress, no_worker_timeout=no_worker_timeout)

    def _compute_distributed(
        self, graphs: Sequence[Any], collect: Callable[[int, Any], None], *, progress: bool, no_worker_timeout: float
    ) -> None:
        import dask
        from distributed import KilledWorker, get_task_stream, wait
        from distributed.client import FutureCancelledError

        # The graph names each chunk's fields (16 bytes a field, see rasterize.label_grid), so distributed's
        # "large graph" warning (10 MB by default) would fire on every AOI of a few hundred thousand fields.
        with (
            dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GB"}),
            self.client.as_current(),
            get_task_stream(self.client) as stream,
        ):
            futures = self.client.compute(list(graphs))
            index_of = {f.key: i for i, f in enumerate(futures)}
            bar = result_bar(len(futures)) if progress else None
            try:
                pending = set(futures)
                del futures
                while pending:
                    done = self._wait_with_watchdog(pending, wait, no_worker_timeout)
                    for future in done:
                        collect(index_of[future.key], future.result())  # raises the task's error
                        future.release()
                        if bar is not None:
                            bar.update(1)
                    pending -= done
            except (KeyboardInterrupt, errors.ClusterError):
                self.client.cancel(list(pending))
                raise
            except FutureCancelledError as exc:
                raise errors.ClusterError(f"the computation was cancelled on the cluster ({exc})") from exc
            except KilledWorker as exc:
                raise errors.ClusterError(
                    f"a task killed its worker repeatedly ({exc}); the workers may be out of memory: give them "
                    "more memory or pass a smaller --chunk-rows"
                ) from exc
            finally:
                if bar is not None:
                    bar.close()
        self.tasks_per_worker = dict(Counter(t["worker"] for t in stream.data if "worker" in t))
        self.warming = []

    def _wait_with_watchdog(self, futures: set, wait, no_worker_timeout: float) -> set:
        """Wait until some of `futures` are done and return those; fail clearly when the cluster has had no worker
        for `no_worker_timeout` s."""
        without_workers_since: float | None = None
        while True:
            try:
                done, _ = wait(futures, timeout=1.0, return_when="FIRST_COMPLETED")
                return set(done)
            except TimeoutError:
                pass
            n_workers = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
            if n_workers:
                without_workers_since = None
                continue
            without_workers_since = without_workers_since or time.monotonic()
            if time.monotonic() - without_workers_since > no_worker_timeout:
                raise errors.ClusterError(
                    f"the cluster at {self.address} has had no worker for {no_worker_timeout:.0f} s and "
                    f"{len(futures)} results are missing; start workers (or use --scheduler local) and run again"
                )


def _start_warming(client, warm_up: Callable[[], None] | None) -> list:
    """Tune every worker's process (runtime.worker_plugin; waits: fast), then start `warm_up` on each (does not
    wait): a cold worker otherwise spends ~1 s of the first run on imports and first calls."""
    try:
        client.register_plugin(runtime.worker_plugin())
        if warm_up is None:
            return []
        workers = list(client.scheduler_info(n_workers=-1).get("workers", {}))
        return [client.submit(warm_up, pure=False, workers=[w], allow_other_workers=False) for w in workers]
    except Exception as exc:  # a worker that cannot import cropmon fails the run later, with the real error
        log.debug("could not prepare the workers: %s", exc)
        return []


def use_client(client: Any) -> ClusterHandle:
    """A handle on a caller's own `distributed.Client` (a notebook's), used as it is: no worker plugin, no warm-up,
    and never closed here."""
    from distributed import Client

    if not isinstance(client, Client):
        raise errors.ConfigError(f"client is a {type(client).__name__}, not a distributed.Client",
                                 fix="pass client=distributed.Client(...) or scheduler='tcp://HOST:PORT'")
    if client.status not in ("running", "connecting"):
        raise errors.ClusterError(f"the client given is {client.status}; pass a running distributed.Client")
    address = getattr(client.scheduler, "address", None)
    return ClusterHandle(kind="client", client=client, address=address, dashboard_link=client.dashboard_link)


def resolve_scheduler(scheduler: str | None) -> str:
    """`--scheduler` wins, then DASK_SCHEDULER_ADDRESS, then a local cluster."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or "local"


@contextlib.contextmanager
def connect(
    scheduler: str | None,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = "auto",
    dashboard_address: str = "127.0.0.1:8787",
    tls: TLSFiles | None = None,
    timeout: float = 30.0,
    warm_up: Callable[[], None] | None = None,
) -> Iterator[ClusterHandle]:
    """Yield a ClusterHandle for the chosen backend and close what this function started (never a remote one).

    `warm_up` runs once on every worker while the caller goes on (e.g. the engine's imports and first calls).
    """
    choice = resolve_scheduler(scheduler)
    if choice == "threads":
        yield ClusterHandle(kind="threads")
        return
    from distributed import Client, LocalCluster

    if choice == "local":
        n_workers = workers or max(1, min(os.cpu_count() or 1, 4))
        with (
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker or 1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=dashboard_address,
                memory_limit=memory_limit,
                silence_logs=logging.WARNING,
            ) as local,
            Client(local) as client,
        ):
            log.info("local Dask cluster: %d workers, dashboard %s", n_workers, client.dashboard_link)
            warming = _start_warming(client, warm_up)
            yield ClusterHandle(
                kind="local", client=client, address=local.scheduler_address, dashboard_link=client.dashboard_link,
                warming=warming,
            )
        return
    if "://" not in choice and ":" not in choice:
        raise errors.ConfigError(
            f"--scheduler {choice!r} is not an address", fix="use tcp://HOST:PORT, tls://HOST:PORT, local or threads"
        )
    security = tls.security() if tls else None
    if choice.startswith("tls://") and security is None:
        import dask

        if not dask.config.get("distributed.comm.tls.ca-file", None):
            raise errors.ConfigError(
                f"{choice} needs TLS certificates",
                fix="pass --tls-ca-file, --tls-cert and --tls-key (or set distributed.comm.tls.* in Dask config)",
            )
    try:
        client = Client(choice, security=security, timeout=timeout, set_as_default=False)
    except OSError as exc:
        raise errors.ClusterError(
            f"cannot reach the Dask scheduler at {choice} ({exc}); start it, or use --scheduler local"
        ) from exc
    try:
        log.info("connected to %s, dashboard %s", choice, client.dashboard_link)
        warming = _start_warming(client, warm_up)
        yield ClusterHandle(
            kind="remote", client=client, address=choice, dashboard_link=client.dashboard_link, warming=warming
        )
    finally:
        client.close()


def profile_scratch(profile: str | None) -> Path | None:
    """Where the performance report is first written (moved next to the outputs by place_profile)."""
    if not profile:
        return None
    fd, name = tempfile.mkstemp(prefix="cropmon-profile-", suffix=".html")
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def performance_report(handle: ClusterHandle, path: Path | None) -> Iterator[None]:
    """A Dask performance report of what runs inside the block, written to `path` (nothing when `path` is None)."""
    if not path:
        yield
        return
    if handle.client is None:
        raise errors.ConfigError(
            "--profile needs a distributed scheduler", fix="use --scheduler local (the default) or an address"
        )
    from distributed import performance_report as dask_performance_report

    # performance_report talks to the current client; a remote client is not the default one (set_as_default=False).
    with handle.client.as_current(), dask_performance_report(filename=path):
        yield
    log.info("Dask performance report written (it goes to %s with the outputs)", path)


def place_profile(profile: str | None, report: Path | None, out_dir: Path, staging: Path) -> None:
    """Move the run's performance report to `--profile`: into the staging directory when that path lies in the
    output directory (so the atomic swap keeps it), else straight to its place."""
    if not profile or report is None or not report.exists():
        return
    target = Path(profile).resolve()
    final = Path(out_dir).resolve()
    if target.is_relative_to(final):
        target = staging / target.relative_to(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(report, target)
    log.info("Dask performance report: %s", profile)
