"""Running work on a connected Dask cluster (`ClusterHandle`, made by cluster.connect or `use_client`): submitting
tasks under a stage name, waiting with a watchdog that fails clearly when the cluster has lost all its workers,
which worker ran which stage (for run.json), and the Dask performance report of a run (`--profile`). Callers pass
plain functions and the handles it returns; they never import Dask themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cropmon import errors

log = logging.getLogger(__name__)

# "remote": a scheduler address; "deployed": a cluster made from the [cluster] table; "client": the caller's own
# Client, used as it is and never closed (use_client).
HandleKind = Literal["threads", "local", "remote", "deployed", "client"]


@dataclass
class ClusterHandle:
    """A connected Dask client and what run.json says about it. Tasks are submitted under a stage name (their key
    prefix), so the task stream tells which worker ran which stage."""

    kind: HandleKind
    client: Any
    address: str | None = None
    dashboard_link: str | None = None
    no_worker_timeout: float = 60.0
    warm_ups: list = field(default_factory=list)  # to start on the workers once the run's first task is in (submit)
    warming: list = field(default_factory=list)  # futures of the workers' warm-ups (held, or they would be cancelled)
    not_warmed: list[str] = field(default_factory=list)  # the first task's worker: warmed with the graph (compute)
    started: float = field(default_factory=time.time)
    scope: str | None = None  # the AOI whose tasks are being submitted (see `scoped`)
    keys_by_scope: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    placed: int = 0  # AOIs placed so far (see `places`)
    cluster_class: str | None = None  # the [cluster] table's class, when cropmon created the cluster from it

    @contextlib.contextmanager
    def scoped(self, name: str | None) -> Iterator[None]:
        """Tasks submitted in the block belong to `name` (an AOI): `describe(scope=name)` reports only those."""
        previous, self.scope = self.scope, name
        try:
            yield
        finally:
            self.scope = previous

    def _note(self, keys) -> None:
        if self.scope is not None:
            self.keys_by_scope[self.scope].update(keys)

    # -- submitting ------------------------------------------------------------------------------------------------

    def submit(self, fn: Callable, *args: Any, stage: str, on: str | None = None, priority: int = 0,
               **kwargs: Any):
        """Run `fn(*args, **kwargs)` on a worker as a task of `stage`; arguments may be futures of earlier tasks.

        `on`: the worker it should run on (see `places`); any other runs it when that one is gone."""
        key = f"{stage}-{uuid.uuid4().hex}"
        self._note([key])
        where = {"workers": [on], "allow_other_workers": True} if on else {}
        future = self.client.submit(fn, *args, key=key, pure=False, priority=priority, **where, **kwargs)
        if self.warm_ups and not self.warming:  # after the first task, which must not wait for them
            self.warming = _start_warming(self.client, self.warm_ups, but=on)
            # The first task's worker warms up with the graph, so its warm-ups do not run between the first task
            # and the small tasks that follow it (reading the fields, then their layout).
            self.not_warmed = [on] if on else []
        return future

    def places(self, n: int) -> list[str]:
        """Up to `n` different workers for one AOI's big tail tasks, starting one worker further at each call (the
        AOIs of a run start their tails on different workers); [] on an in-process cluster.

        Left to itself the scheduler runs every task that reads the per-field table on the worker holding it, one
        after another, while the other workers wait: on 2 workers the diagnosis, the GeoPackage and the Parquet
        files took 3.2 s in a row on one worker; placed on two, 1.7 s."""
        if self.kind == "threads":
            return []
        workers = sorted(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        if not workers:
            return []
        start, self.placed = self.placed % len(workers), self.placed + 1
        return (workers[start:] + workers[:start])[:n]

    def compute(self, collections: list) -> list:
        """Submit lazy Dask collections (the engine's graph) in one go; one future each."""
        import dask

        # Large AOIs make graphs of a few MB; distributed's warning (10 MB by default) says nothing useful here.
        self._note(key for collection in collections for key in collection.__dask_graph__())
        # Graphs holding futures look up "the" client: a caller's own or a remote one need not be the default.
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GB"}), self.client.as_current():
            futures = self.client.compute(collections)
        if self.not_warmed:
            self.warming += _start_warming(self.client, self.warm_ups, only=self.not_warmed)
            self.not_warmed = []
        return futures

    # -- waiting ---------------------------------------------------------------------------------------------------

    def result(self, future) -> Any:
        """The value of `future` (waiting with the watchdog); the task's own error is raised as is."""
        self.wait([future])
        with self.failures():
            return future.result()

    def workers_that_cannot_read(self, path: str) -> list[str]:
        """The workers of a remote cluster that cannot open `path` (a local cluster shares the client's files)."""
        if self.kind in ("threads", "local"):
            return []
        from cropmon.io.paths import is_gdal_virtual, vector_opens

        # A path in a bucket (/vsis3/...) is opened with GDAL there: it also checks that the storage settings and
        # credentials reached every worker.
        readable = self.client.run(vector_opens, path) if is_gdal_virtual(path) else \
            self.client.run(os.access, path, os.R_OK)
        return sorted(worker for worker, ok in readable.items() if not ok)

    def wait(self, futures: Iterable) -> None:
        """Wait until all `futures` are done."""
        pending = set(futures)
        while pending:
            pending -= self.wait_any(pending)

    def wait_any(self, futures: set) -> set:
        """Wait until some of `futures` are done and return those; fail clearly when the cluster has had no worker
        for `no_worker_timeout` s (the scheduler would otherwise wait forever)."""
        from distributed import wait

        without_workers_since: float | None = None
        while True:
            try:
                with self.failures():
                    done, _ = wait(futures, timeout=1.0, return_when="FIRST_COMPLETED")
                return set(done)
            except TimeoutError:
                pass
            if self.client.status != "running":  # reconnecting: every future is cancelled already
                raise self._lost_scheduler()
            if self.n_workers():
                without_workers_since = None
                continue
            without_workers_since = without_workers_since or time.monotonic()
            if time.monotonic() - without_workers_since > self.no_worker_timeout:
                raise errors.ClusterError(
                    f"the cluster at {self.address} has had no worker for {self.no_worker_timeout:.0f} s and "
                    f"{len(futures)} results are missing; start workers (or use --scheduler local) and run again"
                )

    def as_completed(self, futures: Iterable) -> Iterator:
        """Each of `futures` as soon as it is done (any order), watched like `wait`."""
        pending = set(futures)
        while pending:
            done = self.wait_any(pending)
            pending -= done
            yield from done

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Cluster failures (a task that keeps killing its worker, a cancelled computation, the scheduler lost) as
        ClusterError.

        distributed 2026.8 cancels every future when the client loses its scheduler: `wait` then raises
        FuturesCancelledError, a future's `result()` FutureCancelledError (siblings, not one the other's kind)."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError, FuturesCancelledError

        try:
            yield
        except (FutureCancelledError, FuturesCancelledError) as exc:
            reasons = {exc.reason} if isinstance(exc, FutureCancelledError) else \
                {group.reason for group in exc.error_groups}
            if "scheduler-connection-lost" in reasons:
                raise self._lost_scheduler() from exc
            raise errors.ClusterError(
                f"the computation was cancelled on the cluster ({', '.join(sorted(reasons))})") from exc
        except KilledWorker as exc:
            raise errors.ClusterError(
                f"a task killed its worker repeatedly ({exc}); the workers may be out of memory: give them "
                "more memory or pass a smaller --chunk-rows"
            ) from exc

    def _lost_scheduler(self) -> errors.ClusterError:
        return errors.ClusterError(f"lost the connection to the Dask scheduler at {self.address} mid-run (did it "
                                   "stop?); no output was written: restart the scheduler and run again")

    def cancel(self, futures: Iterable) -> None:
        self.client.cancel(list(futures))

    # -- what happened ---------------------------------------------------------------------------------------------

    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def workers_see(self, path: Path) -> bool:
        """Whether every worker sees `path` (a file the client just wrote): a shared filesystem at the same path."""
        workers = list(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        if not workers:
            return False
        seen = self.client.run(os.path.exists, str(path), workers=workers)
        return all(seen.values())

    def task_records(self, scope: str | None = None) -> list[dict]:
        """The scheduler's task stream since this handle connected (worker, key, start/stop of each task); with
        `scope`, only the tasks submitted for it."""
        records = self.client.get_task_stream(start=self.started)
        if scope is None:
            return records
        keys = self.keys_by_scope.get(scope, set())
        return [r for r in records if r["key"] in keys]

    def stages(self, records: list[dict] | None = None) -> dict[str, dict[str, Any]]:
        """Per stage (task key prefix): the workers that ran it, its tasks and their compute seconds."""
        from dask.utils import key_split

        out: dict[str, dict[str, Any]] = defaultdict(lambda: {"workers": Counter(), "tasks": 0, "seconds": 0.0})
        for record in records if records is not None else self.task_records():
            stage = out[key_split(record["key"])]
            stage["workers"][record.get("worker", "?")] += 1
            stage["tasks"] += 1
            stage["seconds"] += sum(s["stop"] - s["start"] for s in record.get("startstops", ())
                                    if s.get("action") == "compute")
        return {name: {"workers": dict(sorted(v["workers"].items())), "tasks": v["tasks"],
                       "seconds": round(v["seconds"], 3)} for name, v in sorted(out.items())}

    def describe(self, scope: str | None = None) -> dict[str, Any]:
        """What run.json says of the cluster and of the tasks it ran (all, or those of `scope`)."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        records = self.task_records(scope)
        per_worker = Counter(r["worker"] for r in records if "worker" in r)
        return {
            "kind": self.kind,
            **({"class": self.cluster_class} if self.cluster_class else {}),
            "address": self.address,
            "dashboard": self.dashboard_link,
            "n_workers": len(workers),
            "threads": sum(w.get("nthreads", 0) for w in workers.values()),
            "memory_limit_bytes": sum(w.get("memory_limit", 0) or 0 for w in workers.values()),
            "workers": {addr: {"tasks": n} for addr, n in sorted(per_worker.items())},
            "n_workers_used": len(per_worker),
            "stages": self.stages(records),
        }


def _start_warming(client, steps: Sequence[Callable[[], None]], *, but: str | None = None,
                   only: Sequence[str] | None = None) -> list:
    """Start each of `steps` on each worker (`only` those; all `but` one), without waiting, at priorities below every
    task of the run, so they fill the time a worker would otherwise wait: a cold worker spends ~1 s of a first run
    on imports and first calls."""
    try:
        workers = list(only) if only is not None else [
            w for w in client.scheduler_info(n_workers=-1).get("workers", {}) if w != but]
        return [client.submit(step, pure=False, workers=[w], allow_other_workers=False, priority=-1 - i,
                              key=f"warm-up-{i}-{w}")
                for i, step in enumerate(steps) for w in workers]
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
    if handle.kind == "threads":
        raise errors.ConfigError(
            "--profile needs a scheduler of its own", fix="use --scheduler local (the default) or an address"
        )
    from distributed import performance_report as dask_performance_report

    # performance_report talks to the current client; a remote client is not the default one (set_as_default=False).
    with handle.client.as_current(), dask_performance_report(filename=path):
        yield
    log.info("Dask performance report written (it goes to %s with the outputs)", path)


def place_profile(profile: str | None, report: Path | None, out_dir: Path | str, staging: Path) -> None:
    """Move the run's performance report to `--profile`: into the staging directory when that path lies in the
    output directory (so the atomic swap keeps it; outputs in a bucket: `--profile OUT/profile.html` puts it in
    the run's prefix), else straight to its place (a local file, or an object in a bucket)."""
    from cropmon.io import store

    if not profile or report is None or not report.exists():
        return
    if store.is_object_store(profile):
        url, base = store.url_of(profile), store.url_of(out_dir).rstrip("/") + "/"
        if url.startswith(base):
            target = staging / url[len(base):]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(report, target)
        else:
            store.upload(report, url)
            report.unlink()
        log.info("Dask performance report: %s", profile)
        return
    target = Path(profile).resolve()
    final = Path(out_dir).resolve()
    if target.is_relative_to(final):
        target = staging / target.relative_to(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(report, target)
    log.info("Dask performance report: %s", profile)
