"""The only place that makes a Dask client: `--scheduler ADDRESS` | `local` (a LocalCluster on 127.0.0.1) | `threads`
(an in-process cluster: scheduler and one worker as threads of this process), or the cluster of a `[cluster]` table.

It hands back a `tasks.ClusterHandle`, which runs the work on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cropmon import errors, runtime
from cropmon.tasks import ClusterHandle, HandleKind

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
            kind: HandleKind = "threads" if choice == "threads" else "local"
            yield _handle(kind, client, address, warm_up, no_worker_timeout, environment=environment)
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


def _handle(kind: HandleKind, client, address: str, warm_up, no_worker_timeout: float, *,
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
