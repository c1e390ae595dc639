"""The engine on a real multi-process cluster: `dask scheduler` + `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from cluster_procs import start_cluster
from conftest import write_random_inputs

from cropmon.cli import main
from cropmon.cluster import ClusterSettings, TLSFiles, connect
from cropmon.engine.job import EngineSettings, analyse_fields
from cropmon.errors import ConfigError

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def small_inputs(tmp_path):
    return write_random_inputs(tmp_path, np.random.default_rng(11), 120, 90, n_classes=6, n_cells=60)


def test_scheduler_and_two_worker_processes_match_threads(tmp_path, small_inputs):
    raster, fields = small_inputs
    expected = analyse_fields(raster, fields, settings=EngineSettings(chunk_rows=16))
    cluster = start_cluster(tmp_path, n_workers=2)
    try:
        with connect(ClusterSettings(cluster.address)) as handle:
            got = analyse_fields(raster, fields, settings=EngineSettings(chunk_rows=16), cluster=handle)
            info = handle.describe()
        for profile in (tmp_path / "profile.html", tmp_path / "out" / "profile.html"):  # beside and inside the outputs
            code = main(["run", "--raster", str(raster), "--fields", str(fields), "--out", str(tmp_path / "out"),
                         "--scheduler", cluster.address, "--profile", str(profile), "--progress", "off"])
            assert code == 0 and profile.stat().st_size > 10_000, "a Dask performance report of the remote run"
    finally:
        cluster.stop()
    table_cols = [c for c in expected.table.columns if c != "geometry"]
    pd.testing.assert_frame_equal(got.table[table_cols], expected.table[table_cols])
    pd.testing.assert_frame_equal(got.class_counts, expected.class_counts)
    assert info["kind"] == "remote" and info["n_workers"] == 2
    assert info["n_workers_used"] == 2, f"both workers should run tasks: {info['workers']}"
    assert cluster.address.startswith("tcp://127.0.0.1:")


def test_outputs_sent_to_the_client_equal_outputs_written_by_the_workers(tmp_path, small_inputs, monkeypatch):
    """A cluster without a shared filesystem: the workers send their files and the client writes them, piece by
    piece (pieces made tiny here so every file takes several); the outputs equal those the workers write."""
    from cropmon.io import products

    raster, fields = small_inputs
    cluster = start_cluster(tmp_path, n_workers=2)
    try:
        runs = {}
        for via in ("shared", "client"):
            if via == "client":
                monkeypatch.setattr(products, "PIECE_BYTES", 4096)
            runs[via] = tmp_path / via
            code = main(["run", "--raster", str(raster), "--fields", str(fields), "--out", str(runs[via]),
                         "--scheduler", cluster.address, "--outputs-via", via, "--progress", "off"])
            assert code == 0
        with connect(ClusterSettings(cluster.address)) as handle:
            assert handle.workers_see(runs["shared"] / "run.json")
            assert not handle.workers_see(tmp_path / "no-such-file")
    finally:
        cluster.stop()
    names = sorted(p.name for p in runs["shared"].iterdir())
    assert names == sorted(p.name for p in runs["client"].iterdir()) and "fields.gpkg" in names
    assert (runs["client"] / "fields.gpkg").stat().st_size > 4 * 4096
    for name in names:
        if name.endswith((".csv", ".png")):
            assert (runs["shared"] / name).read_bytes() == (runs["client"] / name).read_bytes(), name
    for name in ("fields.parquet", "field_class_counts.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(runs["shared"] / name), pd.read_parquet(runs["client"] / name))
    stages = json.loads((runs["client"] / "run.json").read_text())["cluster"]["stages"]
    assert stages["pull"]["tasks"] > len([n for n in names if n != "run.json"]), "several pieces per file"
    assert {"diagnosis", "field-gpkg", "field-parquet", "report", "image", "assemble-table"} <= set(stages)


def make_throwaway_tls(directory) -> dict[str, str]:
    """A CA and one certificate for 127.0.0.1 / localhost (client and server), made with openssl."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca_key, ca, key, csr, cert = (str(directory / n) for n in ("ca.key", "ca.pem", "node.key", "node.csr", "node.pem"))
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
            "-subj", "/CN=cropmon-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
            "-extfile", str(ext))
    return {"ca": ca, "cert": cert, "key": key}


def test_tls_scheduler_and_worker_give_the_same_results(tmp_path, small_inputs):
    raster, fields = small_inputs
    expected = analyse_fields(raster, fields, settings=EngineSettings(chunk_rows=16))
    tls = make_throwaway_tls(tmp_path)
    cluster = start_cluster(tmp_path, n_workers=1, tls=tls)
    try:
        assert cluster.address.startswith("tls://127.0.0.1:")
        with connect(ClusterSettings(cluster.address, tls=TLSFiles(tls["ca"], tls["cert"], tls["key"]))) as handle:
            got = analyse_fields(raster, fields, settings=EngineSettings(chunk_rows=16), cluster=handle)
        with pytest.raises(ConfigError, match="needs TLS certificates"), connect(ClusterSettings(cluster.address)):
            pass
    finally:
        cluster.stop()
    table_cols = [c for c in expected.table.columns if c != "geometry"]
    pd.testing.assert_frame_equal(got.table[table_cols], expected.table[table_cols])


def test_a_converted_fields_file_is_read_by_remote_workers(tmp_path, small_inputs):
    """GeoJSON is read through a GeoPackage copy: the remote workers open the copy, checked before the compute."""
    import pyogrio

    raster, fields = small_inputs
    geojson = tmp_path / "fields.geojson"
    pyogrio.write_dataframe(pyogrio.read_dataframe(fields), geojson, driver="GeoJSON")
    expected = analyse_fields(raster, fields, settings=EngineSettings(chunk_rows=16))
    cluster = start_cluster(tmp_path, n_workers=1)
    try:
        with connect(ClusterSettings(cluster.address)) as handle:
            workers = sorted(handle.client.scheduler_info()["workers"])
            assert handle.workers_that_cannot_read(str(tmp_path / "nowhere.gpkg")) == workers
            assert handle.workers_that_cannot_read(str(raster)) == []
            settings = EngineSettings(chunk_rows=16, scratch_dir=tmp_path / "scratch")
            got = analyse_fields(raster, geojson, settings=settings, cluster=handle)
    finally:
        cluster.stop()
    assert got.source.path.startswith(str(tmp_path / "scratch"))
    columns = ["n_pixels", "majority_crop", "confidence_score", "pixel_rule"]
    pd.testing.assert_frame_equal(got.table[columns], expected.table[columns])


@pytest.mark.parametrize("scheduler", ["threads", "local"])
def test_clusters_listen_on_loopback_only(scheduler):
    """The in-process and the local cluster bind every server (scheduler, workers, their HTTP /health) to
    127.0.0.1: distributed's defaults would put the in-process ones on every interface."""
    import os

    import psutil

    with connect(ClusterSettings(scheduler, workers=1, dashboard_address="127.0.0.1:0")) as handle:
        processes = [psutil.Process(os.getpid()), *psutil.Process(os.getpid()).children(recursive=True)]
        listening = {c.laddr.ip for p in processes for c in p.net_connections("inet") if c.status == "LISTEN"}
        assert handle.n_workers() == 1
    assert listening == {"127.0.0.1"}, listening



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator thresholds (runtime.py)")
def test_workers_reuse_freed_memory(tmp_path):
    """A worker started by a nanny (MALLOC_TRIM_THRESHOLD_=65536) maps and faults in every array anew (~500 page
    faults per 16 MiB array here, 10,406 for 20); the worker plugin lets it reuse what the last array freed (543)."""

    def page_faults_of_reallocations() -> int:  # defined here: travels by value to the worker
        import resource

        import numpy

        numpy.ones(2 * 2**20).sum()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            numpy.ones(2 * 2**20).sum()  # 16 MiB each
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    cluster = start_cluster(tmp_path, n_workers=1)
    try:
        with connect(ClusterSettings(cluster.address)) as handle:
            faults = handle.client.submit(page_faults_of_reallocations, pure=False).result()
    finally:
        cluster.stop()
    assert faults < 2_000, f"{faults} page faults for 20 arrays of 16 MiB: freed memory is not reused"


TRIM_PROBE = """
import numpy
from cropmon import runtime

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

runtime.reuse_freed_memory()
arrays = [numpy.ones(2**17) for _ in range(300)]  # 300 x 1 MiB on the heap (under the 32 MiB mmap threshold)
kept = arrays[::30] + [numpy.ones(2**17)]  # a few live arrays pin the heap, the last one at its top
del arrays
freed = rss_mib()
trimmed = runtime.trim_freed_memory()
print(trimmed, freed, rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim (runtime.py)")
def test_trim_gives_freed_memory_back():
    """With the thresholds of `reuse_freed_memory`, freed heap pages stay in the process (the top of the heap is
    pinned by a live array); `trim_freed_memory`, which the table's assembly and the diagnosis call, returns them."""
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True)
    trimmed, freed, after = out.stdout.split()
    assert trimmed == "True"
    assert float(freed) - float(after) > 200, f"RSS {freed} MiB before the trim, {after} MiB after"
