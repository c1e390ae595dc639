"""Faults lose nothing: interrupted runs keep the previous outputs, a killed worker is survived, losing all fails;
SIGTERM, a lost or unreachable scheduler, a bad input read on the workers and a second run into the same --out
each end in one line with their own exit code."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from cluster_procs import start_cluster, worker_pids
from conftest import cli_process as cli
from conftest import write_random_inputs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def medium_inputs(tmp_path_factory):
    """Big enough that a run takes a few seconds with small chunks, so it can be hit mid-run."""
    tmp = tmp_path_factory.mktemp("medium")
    return write_random_inputs(tmp, np.random.default_rng(21), 900, 700, n_classes=8, n_cells=3000)


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def wait_for_progress(address: str, *, finished: int, timeout: float = 120) -> None:
    """Block until the scheduler has finished about `finished` tasks. Results are fetched and released as they
    finish, so the tasks in memory at one moment are no measure of progress: the scheduler's transition counter
    is (a task takes ~5 transitions, waiting -> processing -> memory -> released -> forgotten)."""
    from distributed import Client

    def count(dask_scheduler) -> int:
        return dask_scheduler.transition_counter // 5

    with Client(address, timeout=30) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.run_on_scheduler(count) >= finished:
                return
            time.sleep(0.05)
    raise TimeoutError("the job made no progress")


def test_interrupted_run_keeps_previous_outputs(tmp_path, medium_inputs):
    raster, fields = medium_inputs
    out = tmp_path / "out"
    first = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", "threads")
    assert first.wait(timeout=300) == 0, first.stdout.read()
    before = digest(out)

    second = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", "threads", "--chunk-rows", "4")
    for line in second.stdout:
        if "compute ..." in line:
            break
    time.sleep(0.5)
    second.send_signal(signal.SIGINT)
    rest = second.stdout.read()
    assert second.wait(timeout=120) == 130, rest
    assert "interrupted" in rest
    assert digest(out) == before, "the previous outputs changed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "a staging directory was left"


def test_killed_worker_is_survived_with_identical_results(tmp_path, medium_inputs):
    raster, fields = medium_inputs
    clean = tmp_path / "clean"
    ok = cli("--raster", raster, "--fields", fields, "--out", clean, "--scheduler", "threads")
    assert ok.wait(timeout=300) == 0, ok.stdout.read()

    cluster = start_cluster(tmp_path, n_workers=2, no_nanny=True)
    try:
        out = tmp_path / "faulty"
        job = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", cluster.address,
                  "--chunk-rows", "2")
        wait_for_progress(cluster.address, finished=20)
        victim = cluster.workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        output = job.communicate(timeout=300)[0]
        assert job.returncode == 0, output
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        cluster.stop()
    import geopandas as gpd

    expected = gpd.read_parquet(clean / "fields.parquet")
    got = gpd.read_parquet(out / "fields.parquet")
    assert got.drop(columns="geometry").equals(expected.drop(columns="geometry"))
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["cluster"]["kind"] == "remote"


def wait_for_stage(address: str, stage: str, *, timeout: float = 180) -> str:
    """Block until a task of `stage` (its key prefix) is running; return the address of the worker running it."""
    from distributed import Client

    def running(dask_scheduler, prefix: str) -> list[str]:
        return [ts.processing_on.address for ts in dask_scheduler.tasks.values()
                if ts.state == "processing" and ts.processing_on is not None and str(ts.key).startswith(prefix)]

    with Client(address, timeout=30) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = client.run_on_scheduler(running, prefix=f"{stage}-")
            if found:
                return found[0]
            time.sleep(0.02)
    raise TimeoutError(f"no task of {stage} ran")


def test_worker_killed_during_the_tail_reruns_with_identical_outputs(tmp_path, medium_inputs):
    """The tail (field files, diagnosis, pictures, report) runs on the workers: kill the worker that writes the
    per-field files while it writes them, and the run still ends with the outputs of an undisturbed run."""
    raster, fields = medium_inputs
    clean = tmp_path / "clean"
    ok = cli("--raster", raster, "--fields", fields, "--out", clean, "--scheduler", "threads")
    assert ok.wait(timeout=300) == 0, ok.stdout.read()

    cluster = start_cluster(tmp_path, n_workers=2, no_nanny=True)
    try:
        out = tmp_path / "faulty"
        job = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", cluster.address)
        writer = wait_for_stage(cluster.address, "field-gpkg")
        os.kill(worker_pids(cluster.address)[writer], signal.SIGKILL)
        output = job.communicate(timeout=300)[0]
        assert job.returncode == 0, output
    finally:
        cluster.stop()
    import geopandas as gpd

    tables = [n for n in digest(clean) if n.endswith(".csv")]
    # with accuracy_assessment.csv, error_matrix_area.csv, mapped_area.csv, suspect_labels.csv, and for the fields
    # without a usable label unlabelled_quotas.csv and unlabelled_to_label.csv
    assert len(tables) == 14
    assert {n: digest(out)[n] for n in tables} == {n: digest(clean)[n] for n in tables}
    pd_equal = gpd.read_parquet(out / "fields.parquet").equals(gpd.read_parquet(clean / "fields.parquet"))
    assert pd_equal, "fields.parquet differs from the undisturbed run"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.iterdir())
    assert not [p for p in out.rglob(".parts")], "the tasks' scratch was left in the outputs"
    assert json.loads((out / "run.json").read_text())["cluster"]["stages"]["field-gpkg"]["tasks"] >= 1


def test_losing_the_only_worker_fails_clearly_without_partial_outputs(tmp_path, medium_inputs):
    raster, fields = medium_inputs
    cluster = start_cluster(tmp_path, n_workers=1, no_nanny=True)
    try:
        out = tmp_path / "lost"
        job = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", cluster.address,
                  "--chunk-rows", "2", env={"CROPMON_NO_WORKER_TIMEOUT": "3"})
        wait_for_progress(cluster.address, finished=10)
        os.kill(cluster.workers[0].pid, signal.SIGKILL)
        output = job.communicate(timeout=300)[0]
    finally:
        cluster.stop()
    assert job.returncode == 3, output
    assert "no worker for 3 s" in output and "Traceback" not in output
    assert not out.exists(), "no output directory may appear"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lost.")], "a staging directory was left"


# -- the faults of a deployment: a signal, a lost or unreachable scheduler, a bad input on the workers, two runs -----


def one_line(output: str, prefix: str) -> str:
    """The output's only line that starts with `prefix` (the run's own log lines aside), with no traceback and no
    ERROR or WARNING line of distributed."""
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output
    assert "Traceback" not in output and " - ERROR - " not in output and " - WARNING - " not in output, output
    return lines[0]


def test_sigterm_stops_like_sigint_and_leaves_no_worker_process(tmp_path, medium_inputs):
    """`docker stop`, Kubernetes and systemd send SIGTERM: exit 143, the previous outputs intact, no staging,
    and every process of the local cluster (nannies, workers) gone."""
    import psutil

    raster, fields = medium_inputs
    out = tmp_path / "out"
    first = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", "threads")
    assert first.wait(timeout=300) == 0, first.stdout.read()
    before = digest(out)

    job = cli("--raster", raster, "--fields", fields, "--out", out, "--chunk-rows", "2", "--workers", "2")
    for line in job.stdout:
        if "compute ..." in line:
            break
    children = psutil.Process(job.pid).children(recursive=True)
    assert len(children) >= 2, "the local cluster's worker processes"
    job.send_signal(signal.SIGTERM)
    rest = job.stdout.read()
    assert job.wait(timeout=120) == 143, rest
    assert one_line(rest, "cropmon:") == "cropmon: terminated (SIGTERM); previous outputs left as they were"
    assert digest(out) == before, "the previous outputs changed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "a staging directory was left"
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], f"left running: {alive}"


def test_a_lost_scheduler_is_exit_3_in_one_line_with_no_output(tmp_path, medium_inputs):
    """The external scheduler killed mid-run: distributed cancels every future (FuturesCancelledError from wait);
    that is the cluster failing, not a bug. The scheduler runs without a dashboard: no link is printed."""
    raster, fields = medium_inputs
    cluster = start_cluster(tmp_path, n_workers=1, no_nanny=True)
    try:
        out = tmp_path / "lost"
        job = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", cluster.address,
                  "--chunk-rows", "2")
        wait_for_progress(cluster.address, finished=10)
        os.kill(cluster.scheduler.pid, signal.SIGKILL)
        killed = time.monotonic()
        output = job.communicate(timeout=300)[0]
        took = time.monotonic() - killed
    finally:
        cluster.stop()
    assert job.returncode == 3, output
    assert took < 20, f"{took:.0f} s: the run waited for the client's reconnection timeout"
    line = one_line(output, "cropmon:")
    assert line.startswith(f"cropmon: cluster error: lost the connection to the Dask scheduler at {cluster.address}")
    assert "Dask dashboard" not in output and "dashboard none" in output
    assert not out.exists(), "no output directory may appear"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lost.")], "a staging directory was left"


def test_a_refused_connection_fails_in_seconds(tmp_path, medium_inputs):
    """Nothing listens on the port: fail after the 2 s grace (distributed alone retries for its 30 s timeout)."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    raster, fields = medium_inputs
    started = time.monotonic()
    job = cli("--raster", raster, "--fields", fields, "--out", tmp_path / "out", "--scheduler",
              f"tcp://127.0.0.1:{port}")
    output = job.communicate(timeout=120)[0]
    took = time.monotonic() - started
    assert job.returncode == 3, output
    assert "connection refused" in one_line(output, "cropmon:") and took < 15, (took, output)
    assert not (tmp_path / "out").exists()


def test_a_scheduler_that_does_not_answer_waits_for_the_connect_timeout():
    """A port that accepts but never speaks Dask (a slow network, a wrong service): --connect-timeout decides."""
    import socket

    from cropmon import errors
    from cropmon.cluster import ClusterSettings, connect

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(errors.ClusterError, match="cannot reach the Dask scheduler"), \
                connect(ClusterSettings(address, connect_timeout=2)):
            pass
        assert 1.5 < time.monotonic() - started < 12


def test_a_bad_input_read_on_the_workers_prints_one_line(tmp_path, medium_inputs):
    """A corrupted raster: its header reads, its pixels do not, on the workers. The user sees one line; the
    workers' "Compute Failed" log with its traceback is dropped, on a local cluster (whose workers share the
    run's stderr) and on external workers (their own log)."""
    import rasterio

    raster, fields = medium_inputs
    truncated = tmp_path / "corrupted.tif"
    with rasterio.open(raster) as src, rasterio.open(tmp_path / "deflate.tif", "w",
                                                     **{**src.profile, "compress": "deflate"}) as dst:
        dst.write(src.read())
    data = bytearray((tmp_path / "deflate.tif").read_bytes())
    data[len(data) // 3 : len(data) // 3 + 5000] = bytes(5000)  # a few strips' compressed bytes zeroed
    truncated.write_bytes(bytes(data))
    job = cli("--raster", truncated, "--fields", fields, "--out", tmp_path / "local")
    output = job.communicate(timeout=300)[0]
    assert job.returncode == 2, output
    line = one_line(output, "cropmon:")
    assert line.startswith(f"cropmon: error: {truncated}: its pixels cannot be read"), line
    assert "Compute Failed" not in output

    cluster = start_cluster(tmp_path, n_workers=1)
    try:
        job = cli("--raster", truncated, "--fields", fields, "--out", tmp_path / "remote", "--scheduler",
                  cluster.address)
        output = job.communicate(timeout=300)[0]
    finally:
        cluster.stop()
    assert job.returncode == 2, output
    one_line(output, "cropmon:")
    worker_log = (tmp_path / "worker0.log").read_text()
    assert "Starting Worker plugin cropmon-process-tuning" in worker_log, "cropmon's plugin ran on that worker"
    assert "Compute Failed" not in worker_log, worker_log[-3000:]


def test_a_second_run_into_the_same_out_is_refused_while_the_first_finishes(tmp_path, medium_inputs):
    """Two runs into one --out (a cron job overlapping itself): the second is refused in one line (exit 5) and
    touches nothing; the first, whose staging the second run used to delete, finishes with complete outputs."""
    raster, fields = medium_inputs
    out = tmp_path / "out"
    first = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", "threads", "--chunk-rows", "4")
    for line in first.stdout:
        if "compute ..." in line:
            break
    second = cli("--raster", raster, "--fields", fields, "--out", out, "--scheduler", "threads")
    output = second.communicate(timeout=120)[0]
    assert second.returncode == 5, output
    line = one_line(output, "cropmon:")
    assert f"another cropmon run (pid {first.pid} on " in line and "Fix: wait for it to finish" in line
    rest = first.communicate(timeout=300)[0]
    assert first.returncode == 0, rest
    manifest = json.loads((out / "run.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["outputs"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "staging or lock left"


def test_the_sync_cancel_race_of_an_interrupt_is_dropped_and_nothing_else_is():
    """An interrupt that lands before distributed's sync() made its future makes sync's own `cancel` callback raise
    NameError on the event loop, which tornado logs as an ERROR with a traceback: the filter drops exactly that
    (raised from distributed/utils.py's `cancel`), and keeps the same NameError raised anywhere else."""
    import logging

    import distributed.utils

    from cropmon.runtime import DistributedNoise

    def raised(filename: str) -> BaseException:
        # sync()'s shape: `future` declared for the closure, unset when cancel runs
        source = "def make():\n    future: object\n    def cancel():\n        return future\n    return cancel\n"
        scope: dict = {}
        exec(compile(source, filename, "exec"), scope)
        try:
            scope["make"]()()
        except NameError as exc:
            return exc
        raise AssertionError("the closure did not raise")

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord("tornado.application", logging.ERROR, __file__, 1, "Exception in callback %r",
                                 ("cancel",), (type(exc), exc, exc.__traceback__))

    assert DistributedNoise().filter(record(raised(distributed.utils.__file__))) is False
    assert DistributedNoise().filter(record(raised(__file__))) is True
    assert DistributedNoise().filter(record(ValueError("no"))) is True
