"""Faults lose nothing: interrupted runs keep the previous outputs, a killed worker is survived, losing all fails."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cluster_procs import start_cluster, worker_pids
from conftest import write_random_inputs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def medium_inputs(tmp_path_factory):
    """Big enough that a run takes a few seconds with small chunks, so it can be hit mid-run."""
    tmp = tmp_path_factory.mktemp("medium")
    return write_random_inputs(tmp, np.random.default_rng(21), 900, 700, n_classes=8, n_cells=3000)


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cropmon", "run", "--progress", "off", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


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
    assert len(tables) == 11  # with accuracy_assessment.csv, error_matrix_area.csv, mapped_area.csv
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
