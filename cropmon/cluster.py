"""The only place that makes a Dask client: `--scheduler ADDRESS` | `local` (a LocalCluster on 127.0.0.1) | `threads`
(an in-process cluster: scheduler and one worker as threads of this process).

Also owns running work on it (`ClusterHandle`): submitting tasks under a stage name, waiting with a watchdog that
fails clearly when the cluster has lost all its workers, which worker ran which stage (for run.json), and the Dask
performance report of a run (`--profile`). Callers pass plain functions and the handles it returns; they never
import Dask themselves.
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
from typing import TYPE_CHECKING, Any

from cropmon import errors, runtime

if TYPE_CHECKING:
    from distributed import Client as DaskClient  # noqa: F401 (the public API's type of a caller's own client)

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


CLUSTER_KEYS = ("class", "options", "scale", "adapt", "wait_for_workers", "start_timeout")


@dataclass(frozen=True)
class ClusterSpec:
    """A Dask cluster that cropmon creates, uses and closes: the config file's `[cluster]` table.

        [cluster]
        class = "dask_jobqueue.SLURMCluster"   # any distributed.deploy.Cluster, by import path
        scale = 8                              # workers; or adapt = { minimum = 2, maximum = 16 }
        wait_for_workers = 2                   # default: scale, or adapt's minimum (at least 1)
        start_timeout = 600                    # seconds for them to join (else exit 3)
        [cluster.options]                      # the class's keyword arguments
        cores = 8
        memory = "32GB"
    """

    class_path: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    scale: int | None = None
    adapt: tuple[int, int] | None = None  # (minimum, maximum)
    wait_for_workers: int | None = None
    start_timeout: float = 300.0

    @classmethod
    def from_mapping(cls, table: Any, *, source: str) -> ClusterSpec:
        """The spec from a `[cluster]` table (or a mapping passed to the API), its types checked."""
        if isinstance(table, ClusterSpec):
            return table
        where = f"{source} [cluster]"
        if not isinstance(table, dict):
            raise errors.ConfigError(f"{where} must be a table", fix="see docs/deployment.md, 'Any Dask deployment'")
        unknown = sorted(set(table) - set(CLUSTER_KEYS))
        if unknown:
            raise errors.ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}",
                                     fix=f"known keys: {', '.join(CLUSTER_KEYS)} (the class's own arguments go in "
                                     "[cluster.options])")
        path = table.get("class")
        if not isinstance(path, str) or "." not in path.strip(".") or " " in path:
            raise errors.ConfigError(f"{where}: class = {path!r} is no import path of a cluster class",
                                     fix='e.g. class = "dask_jobqueue.SLURMCluster"')
        options = table.get("options", {})
        if not isinstance(options, dict):
            raise errors.ConfigError(f"{where}: options must be a table of the class's arguments",
                                     fix="put them under [cluster.options]")

        def count(key: str, value: Any, least: int) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise errors.ConfigError(f"{where}: {key} = {value!r} is not an integer >= {least}",
                                         fix=f"give {key} a whole number of workers (>= {least})")
            return value

        scale = None if table.get("scale") is None else count("scale", table["scale"], 1)
        adapt = None
        if table.get("adapt") is not None:
            bounds = table["adapt"]
            if scale is not None:
                raise errors.ConfigError(f"{where}: scale and adapt exclude each other",
                                         fix="a fixed number of workers (scale) or bounds (adapt), not both")
            if not isinstance(bounds, dict) or set(bounds) - {"minimum", "maximum"} or "maximum" not in bounds:
                raise errors.ConfigError(f"{where}: adapt must be a table {{minimum = N, maximum = M}}",
                                         fix="e.g. adapt = { minimum = 2, maximum = 16 }")
            low = count("adapt.minimum", bounds.get("minimum", 0), 0)
            high = count("adapt.maximum", bounds["maximum"], max(1, low))
            adapt = (low, high)
        wait = table.get("wait_for_workers")
        wait = None if wait is None else count("wait_for_workers", wait, 1)
        timeout = table.get("start_timeout", 300.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise errors.ConfigError(f"{where}: start_timeout = {timeout!r} is not a number of seconds > 0",
                                     fix="e.g. start_timeout = 600")
        return cls(class_path=path.strip(), options=dict(options), scale=scale, adapt=adapt, wait_for_workers=wait,
                   start_timeout=float(timeout))

    @property
    def workers_to_wait_for(self) -> int:
        if self.wait_for_workers is not None:
            return self.wait_for_workers
        return max(1, self.scale or (self.adapt[0] if self.adapt else 0) or 1)

    def load(self) -> type:
        """The cluster class, imported; ConfigError (exit 2, before any work) when it cannot be imported, is no
        Dask cluster class, or does not take the options given."""
        import importlib
        import inspect

        module_name, _, class_name = self.class_path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise errors.ConfigError(
                f"[cluster] class {self.class_path!r} cannot be imported ({errors.first_line(exc)})",
                fix=f"install the package that provides it (e.g. pip install {module_name.split('.')[0]}) or fix "
                "the import path") from exc
        found = getattr(module, class_name, None)
        from distributed.deploy import Cluster

        if not (isinstance(found, type) and issubclass(found, Cluster)):
            what = f"not in {module_name}" if found is None else "no Dask cluster"
            raise errors.ConfigError(
                f"[cluster] class {self.class_path!r} is {what}",
                fix="name a distributed.deploy.Cluster class, e.g. distributed.LocalCluster, "
                "dask_jobqueue.SLURMCluster, dask_kubernetes.operator.KubeCluster or coiled.Cluster")
        try:
            inspect.signature(found).bind_partial(**self.options)
        except TypeError as exc:
            raise errors.ConfigError(f"[cluster] {self.class_path} does not take the options given ({exc})",
                                     fix="fix [cluster.options]: the class's keyword arguments") from exc
        unknown = _unknown_worker_options(found, self.options)
        if unknown:
            raise errors.ConfigError(
                f"[cluster] {self.class_path} does not take the option(s) {', '.join(unknown)} (neither it nor its "
                "workers have such an argument)", fix="fix [cluster.options]: the class's keyword arguments")
        return found

    def __repr__(self) -> str:  # options named like secrets (a token) never shown
        return f"ClusterSpec({self.as_manifest()})"

    def as_manifest(self) -> dict[str, Any]:
        from cropmon.io.store import REDACTED, is_secret

        options = {k: REDACTED if is_secret(k) else v for k, v in self.options.items()}
        return {"class": self.class_path, "options": options,
                "scale": self.scale, "adapt": list(self.adapt) if self.adapt else None,
                "wait_for_workers": self.workers_to_wait_for, "start_timeout": self.start_timeout}


def _unknown_worker_options(cls: type, options: dict[str, Any]) -> list[str]:
    """Options a LocalCluster (or a subclass) passes on to its workers that no worker takes: caught here, since a
    worker process that fails to start prints its traceback from another process before the cluster says why."""
    import inspect

    from distributed import LocalCluster, Nanny, Worker

    if not issubclass(cls, LocalCluster):
        return []
    known = set()
    for function in (cls.__init__, LocalCluster.__init__, Nanny.__init__, Worker.__init__):
        known |= {name for name, p in inspect.signature(function).parameters.items()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return sorted(set(options) - known)


@dataclass
class ClusterHandle:
    """A connected Dask client and what run.json says about it. Tasks are submitted under a stage name (their key
    prefix), so the task stream tells which worker ran which stage."""

    kind: str  # "threads" | "local" | "remote" | "client" (the caller's own Client, see use_client)
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


def resolve_scheduler(scheduler: str | None) -> str:
    """`--scheduler` wins, then DASK_SCHEDULER_ADDRESS, then a local cluster."""
    return scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or "local"


@dataclass(frozen=True)
class ClusterSettings:
    """Which cluster a run uses and how it connects: `RunConfig.cluster_settings` derives it once from the run's
    settings. `scheduler`: an address, 'local' or 'threads' (None: DASK_SCHEDULER_ADDRESS, else 'local');
    `spec`: a cluster to create from its class (the config's [cluster] table) instead."""

    scheduler: str | None = None
    workers: int | None = None  # of a local cluster (default: cores, at most 4)
    threads_per_worker: int | None = None  # of a local cluster (default 1; in-process: every core)
    memory_limit: str | None = "auto"  # per local worker
    dashboard_address: str = "127.0.0.1:8787"  # of a local cluster
    tls: TLSFiles = field(default_factory=TLSFiles)  # client TLS files for a tls:// scheduler
    connect_timeout: float = 30.0  # seconds a remote scheduler may take to answer
    no_worker_timeout: float = 60.0  # seconds the cluster may have no worker before the run fails
    spec: ClusterSpec | None = None
    # Variables every worker sets (the run's storage settings: runtime.settings_plugin); secrets: never shown.
    environment: dict[str, str] = field(default_factory=dict, repr=False, hash=False)


Warmup = Callable[[], None] | Sequence[Callable[[], None]] | None


@contextlib.contextmanager
def connect(settings: ClusterSettings, *, warm_up: Warmup = None) -> Iterator[ClusterHandle]:
    """Yield a ClusterHandle for the chosen backend and close what this function started (never a remote one).

    A remote scheduler may take `connect_timeout` s to answer (a slow network); a port that refuses connections
    fails after REFUSED_GRACE_S instead. `warm_up` (one function or several, in priority order) runs once on every
    worker while the caller goes on (e.g. the engine's imports and first calls, then the tail's imports).
    `environment` is set on every worker, workers that join later included, and taken off a remote cluster's
    workers again when the run ends.
    """
    scheduler, spec, environment = settings.scheduler, settings.spec, settings.environment
    no_worker_timeout, tls, timeout = settings.no_worker_timeout, settings.tls, settings.connect_timeout
    choice = resolve_scheduler(scheduler)
    import distributed  # noqa: F401 (it sets up its log handlers, on which the noise filter goes)

    runtime.quiet_distributed_noise()
    if spec is not None:
        with _spec_client(spec) as (client, address):
            yield _handle("deployed", client, address, warm_up, no_worker_timeout, environment=environment,
                          cluster_class=spec.class_path)
        return
    if choice in ("threads", "local"):
        with _local_client(choice, workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                           memory_limit=settings.memory_limit,
                           dashboard_address=settings.dashboard_address) as (client, address):
            yield _handle(choice, client, address, warm_up, no_worker_timeout, environment=environment)
        return
    if "://" not in choice and ":" not in choice:
        raise errors.ConfigError(
            f"--scheduler {choice!r} is not an address", fix="use tcp://HOST:PORT, tls://HOST:PORT, local or threads"
        )
    security = tls.security()
    if choice.startswith("tls://") and security is None:
        import dask

        if not dask.config.get("distributed.comm.tls.ca-file", None):
            raise errors.ConfigError(
                f"{choice} needs TLS certificates",
                fix="pass --tls-ca-file, --tls-cert and --tls-key (or set distributed.comm.tls.* in Dask config)",
            )
    unreachable = _unreachable(choice, timeout=timeout)
    if unreachable:
        raise errors.ClusterError(f"cannot reach the Dask scheduler at {choice} ({unreachable}); start it, check "
                                  "the address, or use --scheduler local")
    try:
        client = _client_within(choice, security=security, timeout=timeout)
    except OSError as exc:
        raise errors.ClusterError(
            f"cannot reach the Dask scheduler at {choice} ({exc}); start it, or use --scheduler local"
        ) from exc
    try:
        dashboard = _dashboard_link(client)
        log.info("connected to %s, dashboard %s", choice, dashboard or "none (the scheduler serves none)")
        with client.as_current():  # graphs that hold futures look up "the" client
            yield _handle("remote", client, choice, warm_up, no_worker_timeout, dashboard=dashboard,
                          environment=environment)
    finally:
        if environment:  # the run's credentials do not stay on workers that outlive it
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(runtime.SETTINGS_PLUGIN)
        client.close()


REFUSED_GRACE_S = 2.0  # a port that refuses connections this long has no scheduler (one starting opens it sooner)


def _unreachable(address: str, *, timeout: float) -> str | None:
    """Why nothing answers on a tcp:// or tls:// scheduler's port, or None when something does (or the protocol is
    another). distributed's own connect retries a refused port until its timeout (30 s by default) runs out; a
    refused connection says at once that no scheduler listens there."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    protocol, location = parse_address(address)
    if protocol not in ("tcp", "tls"):
        return None
    host, port = parse_host_port(location)
    deadline = time.monotonic() + timeout
    refused_since: float | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no answer in {timeout:g} s"
        try:
            with socket.create_connection((host, port), timeout=left) as sock:
                if protocol == "tls":  # a TLS server waits for the client's hello
                    return None
                # A Dask scheduler speaks first (its handshake); a silent peer would hold distributed's Client
                # forever, whatever its timeout. (The scheduler logs at INFO that the probe closed early.)
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                if not sock.recv(1):
                    return "the connection was closed at once: no Dask scheduler listens there"
                return None
        except ConnectionRefusedError:
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since >= REFUSED_GRACE_S:
                return "connection refused: nothing listens on that port"
            time.sleep(0.2)
        except socket.gaierror as exc:
            return f"unknown host {host!r}: {exc.strerror}"
        except TimeoutError:
            return f"no answer in {timeout:g} s (a slow network: raise --connect-timeout)"
        except OSError as exc:
            return exc.strerror or str(exc)


def _client_within(address: str, *, security, timeout: float):
    """distributed's Client, connected within `timeout` s (+ a few for its start), else ClusterError: its own
    timeout bounds the TCP connection, not the handshake, so a peer that accepts and stalls would hold it forever.
    The stalled attempt is left in a daemon thread (the run ends with exit 3 anyway)."""
    import threading

    from distributed import Client

    made: dict[str, Any] = {}

    def make() -> None:
        try:
            made["client"] = Client(address, security=security, timeout=timeout, set_as_default=False)
        except BaseException as exc:  # handed to the caller
            made["error"] = exc

    thread = threading.Thread(target=make, name="cropmon-connect", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive():
        raise errors.ClusterError(f"cannot reach the Dask scheduler at {address} (no Dask handshake in "
                                  f"{timeout + 5:g} s; a slow network: raise --connect-timeout)")
    if "error" in made:
        raise made["error"]
    return made["client"]


def _dashboard_link(client) -> str | None:
    """The dashboard's link, or None when the scheduler serves none: distributed formats a link from the port of
    the scheduler's HTTP server, which also runs (for /health) when the dashboard is off."""

    def serves_dashboard(dask_scheduler) -> bool:  # runs on the scheduler (pickled by value: nested)
        return bool(getattr(dask_scheduler.http_application, "applications", [True]))

    try:
        if not client.run_on_scheduler(serves_dashboard):
            return None
    except Exception as exc:  # a scheduler that refuses to run functions: keep distributed's link
        log.debug("could not ask the scheduler whether it serves a dashboard: %s", exc)
    return client.dashboard_link


def _handle(kind: str, client, address: str, warm_up, no_worker_timeout: float, *,
            dashboard: str | None = None, environment: dict[str, str] | None = None,
            cluster_class: str | None = None) -> ClusterHandle:
    """Tune every worker's process (runtime.worker_plugin; waits: fast) and give it the run's storage settings
    (not in-process: the client has them); the warm-ups start with the first task."""
    try:
        client.register_plugin(runtime.worker_plugin())
    except Exception as exc:  # a worker that cannot import cropmon fails the run later, with the real error
        log.debug("could not prepare the workers: %s", exc)
    if environment and kind != "threads":
        try:
            client.register_plugin(runtime.settings_plugin(environment))
        except Exception as exc:  # as above; said without the plugin's contents
            log.debug("could not give the workers the storage settings: %s", type(exc).__name__)
    warm_ups = [] if warm_up is None else [warm_up] if callable(warm_up) else list(warm_up)
    if kind == "local":
        dashboard = client.dashboard_link
    if kind == "deployed":
        dashboard = client.dashboard_link
    handle = ClusterHandle(kind=kind, client=client, address=address, dashboard_link=dashboard,
                           no_worker_timeout=no_worker_timeout, warm_ups=warm_ups, cluster_class=cluster_class)
    client.get_task_stream(start=time.time())  # installs the scheduler's task-stream plugin from the start
    return handle


@contextlib.contextmanager
def _local_client(kind: str, *, workers: int | None, threads_per_worker: int | None, memory_limit: str | None,
                  dashboard_address: str) -> Iterator[tuple[Any, str]]:
    """A LocalCluster on 127.0.0.1 (`local`: worker processes) or in this process (`threads`), and its client."""
    from distributed import Client, LocalCluster

    if kind == "threads":
        # In this process, no dashboard. The scheduler and the worker still serve /health over HTTP, on every
        # interface unless they listen on an address of their own: TCP on loopback, random ports.
        options = dict(n_workers=1, threads_per_worker=threads_per_worker or (os.cpu_count() or 1), processes=False,
                       protocol="tcp://", host="127.0.0.1", dashboard_address=None, memory_limit=0,
                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    else:
        options = dict(n_workers=workers or max(1, min(os.cpu_count() or 1, 4)),
                       threads_per_worker=threads_per_worker or 1, processes=True, host="127.0.0.1",
                       dashboard_address=dashboard_address, memory_limit=memory_limit)
    with contextlib.ExitStack() as stack:
        stack.callback(runtime.CLOSING.clear)
        local = stack.enter_context(LocalCluster(silence_logs=logging.WARNING, **options))
        client = stack.enter_context(Client(local))
        stack.callback(runtime.CLOSING.set)  # first thing on the way out: the closing cluster's noise is dropped
        log.info("%s Dask cluster: %d workers%s", kind, options["n_workers"],
                 f", dashboard {client.dashboard_link}" if kind == "local" else "")
        yield client, local.scheduler_address


@contextlib.contextmanager
def _spec_client(spec: ClusterSpec) -> Iterator[tuple[Any, str]]:
    """Create the cluster of a [cluster] table, scale or adapt it, wait for its workers, and close it at the end.

    Arguments the class refuses when it starts (a TypeError or ValueError of its own) are bad settings: exit 2,
    before any work. Workers that do not join in `start_timeout` seconds fail the run as a cluster error (exit 3)."""
    from distributed import Client

    cls = spec.load()
    with contextlib.ExitStack() as stack:
        stack.callback(runtime.CLOSING.clear)
        try:
            cluster = stack.enter_context(cls(**spec.options))
        except Exception as exc:
            refused = next((e for e in errors.chain(exc) if isinstance(e, TypeError | ValueError)), None)
            if refused is not None:
                raise errors.ConfigError(
                    f"[cluster] {spec.class_path} refused its options ({errors.first_line(refused)})",
                    fix="fix [cluster.options]: the class's keyword arguments") from exc
            raise errors.ClusterError(f"the {spec.class_path} cluster could not be created "
                                      f"({errors.first_line(exc)})") from exc
        if spec.scale is not None:
            cluster.scale(spec.scale)
        elif spec.adapt is not None:
            cluster.adapt(minimum=spec.adapt[0], maximum=spec.adapt[1])
        client = stack.enter_context(Client(cluster, set_as_default=False))
        stack.callback(runtime.CLOSING.set)  # first thing on the way out: the closing cluster's noise is dropped
        n = spec.workers_to_wait_for
        try:
            client.wait_for_workers(n, timeout=spec.start_timeout)
        except TimeoutError as exc:
            raise errors.ClusterError(
                f"the {spec.class_path} cluster did not get {n} worker(s) in {spec.start_timeout:g} s; check its "
                "job queue or pods, or raise [cluster] start_timeout") from exc
        log.info("%s cluster: %d workers, dashboard %s", spec.class_path,
                 len(client.scheduler_info(n_workers=-1)["workers"]), client.dashboard_link)
        with client.as_current():
            yield client, cluster.scheduler_address


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
