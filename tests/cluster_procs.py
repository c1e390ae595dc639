"""Start a real `dask scheduler` and `dask worker` processes on 127.0.0.1 for tests, and stop them by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DASK = [sys.executable, "-m", "dask"]


@dataclass
class LocalProcesses:
    """A scheduler and its workers, each a process this test started."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def start_cluster(
    tmp: Path, *, n_workers: int = 2, nthreads: int = 1, tls: dict[str, str] | None = None, no_nanny: bool = False
) -> LocalProcesses:
    """`dask scheduler` on 127.0.0.1 (random port, no dashboard) + `n_workers` single-process workers."""
    scheduler_file = tmp / "scheduler.json"
    tls_args: list[str] = []
    if tls:
        tls_args = ["--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]
    protocol = "tls" if tls else "tcp"
    scheduler = _spawn(
        [*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--protocol", protocol,
         "--scheduler-file", str(scheduler_file), *tls_args],
        tmp / "scheduler.log",
    )
    deadline = time.monotonic() + 60
    while not scheduler_file.exists():
        if scheduler.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dask scheduler did not start: {(tmp / 'scheduler.log').read_text()[-2000:]}")
        time.sleep(0.2)
    time.sleep(0.3)
    address = json.loads(scheduler_file.read_text())["address"]
    cluster = LocalProcesses(address=address, scheduler=scheduler, log_dir=tmp)
    for i in range(n_workers):
        cluster.workers.append(
            _spawn(
                [*DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", str(nthreads), "--nworkers", "1",
                 "--no-dashboard", "--memory-limit", "2GiB", "--name", f"w{i}",
                 *(["--no-nanny"] if no_nanny else []), *tls_args],
                tmp / f"worker{i}.log",
            )
        )
    wait_for_workers(address, n_workers, tls=tls)
    return cluster


def wait_for_workers(address: str, n: int, *, tls: dict[str, str] | None = None, timeout: float = 90) -> None:
    from distributed import Client
    from distributed.security import Security

    security = None
    if tls:
        security = Security(
            tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"], require_encryption=True
        )
    with Client(address, security=security, timeout=30) as client:
        client.wait_for_workers(n, timeout=timeout)


def worker_pids(address: str) -> dict[str, int]:
    """PID of each worker process (the process running the worker, not its nanny)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        return client.run(os.getpid)
