"""Any Dask deployment from the config: a [cluster] table names a cluster class and its arguments with scale or
adapt bounds; cropmon creates it, waits for its workers, uses it and closes it. Tested with distributed.LocalCluster
through the same path (bound to 127.0.0.1); bad tables exit 2 before any work."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_random_inputs

from cropmon import cli, errors
from cropmon.cluster import ClusterSpec
from cropmon.config import build_config

LOCAL = {
    "n_workers": 0,
    "processes": True,
    "threads_per_worker": 1,
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:0",
    "memory_limit": "1GiB",
}


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    return write_random_inputs(
        tmp_path_factory.mktemp("cls"), np.random.default_rng(5), 80, 70, n_classes=6, n_cells=120
    )


def toml_value(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(path, *, lines: str = "", options: dict | None = None, class_path="distributed.LocalCluster"):
    body = f'[cluster]\nclass = "{class_path}"\n{lines}'
    if options is not None:
        body += "[cluster.options]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in options.items())
    path.write_text(body)
    return path


def workers_running() -> set[int]:
    """This process's children that are Dask worker processes (not multiprocessing's resource tracker)."""
    import psutil

    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                out.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def run(*args) -> int:
    return cli.main(["run", "--progress", "off", *map(str, args)])


@pytest.mark.cluster
@pytest.mark.parametrize("bounds", ["scale = 2\n", "adapt = { minimum = 1, maximum = 2 }\n"])
def test_a_local_cluster_from_the_table_runs_the_job_and_is_closed(small_inputs, tmp_path, bounds):
    raster, fields = small_inputs
    config = write_config(tmp_path / "c.toml", lines=bounds, options=LOCAL)
    threads = tmp_path / "threads"
    assert run("--raster", raster, "--fields", fields, "--out", threads, "--scheduler", "threads") == 0
    before = workers_running()
    out = tmp_path / "out"
    assert run("--config", config, "--raster", raster, "--fields", fields, "--out", out) == 0
    manifest = json.loads((out / "run.json").read_text())
    described = manifest["cluster"]
    assert described["kind"] == "deployed" and described["class"] == "distributed.LocalCluster"
    assert described["address"].startswith("tcp://127.0.0.1:")
    assert described["n_workers"] == (2 if bounds.startswith("scale") else described["n_workers"]) >= 1
    assert manifest["settings"]["cluster"]["class"] == "distributed.LocalCluster"
    expected = pd.read_parquet(threads / "fields.parquet").drop(columns="geometry")
    got = pd.read_parquet(out / "fields.parquet").drop(columns="geometry")
    pd.testing.assert_frame_equal(got, expected)
    assert workers_running() <= before, "the cluster's worker processes outlived the run"


@pytest.mark.parametrize(
    ("lines", "options", "class_path", "problem"),
    [
        ("scale = 1\n", None, "dask_jobqueue_absent.SLURMCluster", "cannot be imported"),
        ("scale = 1\n", None, "distributed.NoSuchCluster", "is not in distributed"),
        ("scale = 1\n", None, "collections.OrderedDict", "is no Dask cluster"),
        ("scale = 1\n", {"no_such_argument": 1}, "distributed.LocalCluster", "no_such_argument"),
        ("scale = 0\n", None, "distributed.LocalCluster", "scale = 0 is not an integer >= 1"),
        ("scale = 2\nadapt = { maximum = 3 }\n", None, "distributed.LocalCluster", "exclude each other"),
        ("adapt = { minimum = 3, maximum = 2 }\n", None, "distributed.LocalCluster", "adapt.maximum = 2"),
        ("workers = 2\n", None, "distributed.LocalCluster", "unknown key(s) workers"),
    ],
)
def test_a_bad_cluster_table_is_one_line_exit_2_before_any_work(
    small_inputs, tmp_path, capsys, lines, options, class_path, problem
):
    raster, fields = small_inputs
    config = write_config(tmp_path / "c.toml", lines=lines, options=options, class_path=class_path)
    before = workers_running()
    assert run("--config", config, "--raster", raster, "--fields", fields, "--out", tmp_path / "out") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("cropmon: error: ") and problem in err[0], err
    assert not (tmp_path / "out").exists()
    assert workers_running() <= before, "a cluster was started"


def test_the_table_and_a_scheduler_exclude_each_other(tmp_path):
    config = write_config(tmp_path / "c.toml", lines="scale = 1\n")
    with pytest.raises(errors.ConfigError, match="exclude each other"):
        build_config({"scheduler": "tcp://127.0.0.1:8786"}, config_file=str(config), environ={})


def test_the_spec_waits_for_scale_or_adapt_s_minimum():
    assert ClusterSpec.from_mapping({"class": "a.B", "scale": 4}, source="t").workers_to_wait_for == 4
    assert (
        ClusterSpec.from_mapping(
            {"class": "a.B", "adapt": {"minimum": 2, "maximum": 8}}, source="t"
        ).workers_to_wait_for
        == 2
    )
    assert ClusterSpec.from_mapping({"class": "a.B", "adapt": {"maximum": 8}}, source="t").workers_to_wait_for == 1
    assert (
        ClusterSpec.from_mapping({"class": "a.B", "scale": 8, "wait_for_workers": 2}, source="t").workers_to_wait_for
        == 2
    )
    shown = ClusterSpec.from_mapping(
        {"class": "coiled.Cluster", "options": {"token": "t0ps3cret", "n_workers": 2}}, source="t"
    ).as_manifest()
    assert "t0ps3cret" not in json.dumps(shown) and shown["options"]["n_workers"] == 2
    spec = ClusterSpec.from_mapping({"class": "coiled.Cluster", "options": {"token": "t0ps3cret"}}, source="t")
    assert "t0ps3cret" not in repr(spec)
