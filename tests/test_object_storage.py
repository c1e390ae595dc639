"""Inputs and outputs in object storage, against a real S3 API server on 127.0.0.1 (moto's, tests/s3_server.py):
raster (striped and COG) and fields (every format) from a bucket give the local files' per-field results; outputs
go to the bucket with a run per prefix and a pointer written last; the storage settings reach workers that share
nothing with the client (later ones too) and never appear in any output; bad storage input is one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cluster_procs import start_cluster, wait_for_workers
from conftest import cli_process, overlapping_fields, random_fields, write_fields, write_prediction_raster
from s3_server import NO_INSTANCE_METADATA, S3Server
from test_formats import by_field, write_as

from cropmon import cli, errors
from cropmon.config import build_config
from cropmon.engine.job import EngineSettings, analyse_fields
from cropmon.io import published, store

BUCKET = "cropmon"
SECRET = "s3cr3t-4f9a1c-never-written"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server.start(tmp_path_factory.mktemp("s3"))
    try:
        server.make_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """This process (and what it starts) reaches the server; nothing else is asked for credentials."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "CROPMON_GDAL_"))]:
        monkeypatch.delenv(name)
    for name, value in s3.settings(secret=SECRET).items():
        monkeypatch.setenv(name, value)
    store.clear_caches()
    yield s3
    store.clear_caches()


@pytest.fixture(scope="module")
def inputs(s3, tmp_path_factory):
    """A striped raster and its COG, fields in several formats, each uploaded to the bucket beside the local file;
    and the reference per-field results from the local files."""
    import rasterio.shutil

    tmp = tmp_path_factory.mktemp("objects")
    rng = np.random.default_rng(7)
    classes = rng.choice([3, 5, 7, 28], size=(96, 120)).astype(np.int16)
    confidence = rng.integers(5, 99, size=(96, 120)).astype(np.int16)
    raster = write_prediction_raster(tmp / "p.tif", classes, confidence)
    cog = tmp / "p_cog.tif"
    rasterio.shutil.copy(raster, cog, driver="COG", blocksize=32, compress="DEFLATE")
    fields = pd.concat([random_fields(rng, 96, 120, 60), overlapping_fields(rng, 96, 120, 6)], ignore_index=True)
    gpkg = write_fields(tmp / "fields.gpkg", fields)
    local = {"gpkg": (str(gpkg), {})}
    for kind in ("geoparquet", "geojson", "fgb", "shp"):
        local[kind] = write_as(fields, tmp, kind)
    remote = {}
    for kind, (path, kwargs) in local.items():
        path = Path(path)
        parts = [p for p in path.parent.iterdir() if p.stem == path.stem] if kind == "shp" else [path]
        for part in parts:
            s3.upload(part, f"{BUCKET}/in/{kind}/{part.name}")
        remote[kind] = (f"s3://{BUCKET}/in/{kind}/{path.name}", kwargs)
    s3.upload(raster, f"{BUCKET}/in/p.tif")
    s3.upload(cog, f"{BUCKET}/in/p_cog.tif")
    reference = by_field(analyse_fields(raster, gpkg, settings=EngineSettings(chunk_rows=32)))
    return {
        "tmp": tmp,
        "raster": raster,
        "local": local,
        "remote": remote,
        "reference": reference,
        "raster_url": f"s3://{BUCKET}/in/p.tif",
        "cog_url": f"s3://{BUCKET}/in/p_cog.tif",
    }


# -- paths and settings, no server ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "gdal", "url"),
    [
        ("s3://b/dir/p.tif", "/vsis3/b/dir/p.tif", "s3://b/dir/p.tif"),
        ("/vsis3/b/dir/p.tif", "/vsis3/b/dir/p.tif", "s3://b/dir/p.tif"),
        ("gs://b/p.tif", "/vsigs/b/p.tif", "gs://b/p.tif"),
        ("gcs://b/p.tif", "/vsigs/b/p.tif", "gs://b/p.tif"),
        ("az://container/a/p.tif", "/vsiaz/container/a/p.tif", "az://container/a/p.tif"),
        ("/vsiaz/container/a/p.tif", "/vsiaz/container/a/p.tif", "az://container/a/p.tif"),
    ],
)
def test_object_urls_and_gdal_paths_name_the_same_object(given, gdal, url):
    assert store.gdal_path(given) == gdal
    assert store.url_of(given) == url
    assert store.parse(gdal) == store.parse(url)


@pytest.mark.parametrize(
    "path", ["fields.gpkg", "/data/p.tif", "/vsizip/a.zip/f.shp", "https://h/p.tif", "/vsicurl/https://h/p.tif"]
)
def test_other_paths_are_no_object_storage(path):
    assert not store.is_object_store(path)
    assert store.gdal_path(path) == path


def test_pyarrow_reaches_the_endpoint_gdal_is_given():
    env = {
        "AWS_S3_ENDPOINT": "minio:9000",
        "AWS_HTTPS": "NO",
        "AWS_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "key",
        "AWS_SESSION_TOKEN": "tok",
    }
    assert store.s3_options(env) == {
        "endpoint_override": "minio:9000",
        "scheme": "http",
        "region": "eu-west-3",
        "access_key": "id",
        "secret_key": "key",
        "session_token": "tok",
    }
    assert store.s3_options({"AWS_S3_ENDPOINT": "https://s3.example:443/"})["endpoint_override"] == "s3.example:443"
    assert store.s3_options({"AWS_NO_SIGN_REQUEST": "YES", "AWS_ACCESS_KEY_ID": "i"}) == {"anonymous": True}
    assert store.s3_options({"AWS_VIRTUAL_HOSTING": "TRUE"}) == {"force_virtual_addressing": True}


def test_storage_settings_merge_in_order_and_never_show_secrets(tmp_path):
    config_file = tmp_path / "c.toml"
    config_file.write_text(
        '[gdal]\nAWS_S3_ENDPOINT = "file:9000"\nAWS_SECRET_ACCESS_KEY = "from-the-file"\n'
        "GDAL_HTTP_MAX_RETRY = 3\nAWS_VIRTUAL_HOSTING = false\n"
    )
    environ = {
        "AWS_S3_ENDPOINT": "ambient:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_CA_BUNDLE": "/etc/ca.pem",
        "CROPMON_GDAL_AWS_S3_ENDPOINT": "env:9000",
        "HOME": "/root",
    }
    config = build_config({}, config_file=str(config_file), environ=environ)
    assert config.gdal.as_dict() == {
        "AWS_REGION": "eu-west-1",  # forwarded from the client's environment
        "AWS_S3_ENDPOINT": "env:9000",  # CROPMON_GDAL_* over [gdal] over the environment
        "AWS_SECRET_ACCESS_KEY": "from-the-file",
        "AWS_VIRTUAL_HOSTING": "NO",
        "GDAL_HTTP_MAX_RETRY": "3",
    }  # AWS_CA_BUNDLE names a file of the client's machine: not forwarded
    api = build_config({"gdal": {"AWS_S3_ENDPOINT": "api:9000"}}, config_file=str(config_file), environ=environ)
    assert api.gdal.as_dict()["AWS_S3_ENDPOINT"] == "api:9000"
    shown = json.dumps(config.as_manifest()) + repr(config)
    assert "from-the-file" not in shown
    assert config.as_manifest()["gdal"]["AWS_SECRET_ACCESS_KEY"] == store.REDACTED
    assert config.as_manifest()["gdal"]["AWS_S3_ENDPOINT"] == "env:9000"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('[gdal]\n"not a name" = "x"\n', "no GDAL configuration option name"),
        ("[gdal]\nAWS_REGION = [1, 2]\n", "not a text or a number"),
        ('gdal = "AWS_REGION=x"\n', "[gdal] must be a table"),
    ],
)
def test_bad_storage_settings_fail_in_one_line(tmp_path, table, problem):
    path = tmp_path / "c.toml"
    path.write_text(table)
    with pytest.raises(errors.ConfigError, match="^" + str(path)) as caught:
        build_config({}, config_file=str(path), environ={})
    assert problem in str(caught.value)


def test_credentials_are_looked_for_where_gdal_and_the_sdks_look(tmp_path):
    home = {"HOME": str(tmp_path), **NO_INSTANCE_METADATA}
    assert store.credentials_source("s3", home) is None
    assert "access key" in store.credentials_source(
        "s3", {**home, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    )
    assert "public" in store.credentials_source("s3", {**home, "AWS_NO_SIGN_REQUEST": "YES"})
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    assert "profile default" in store.credentials_source("s3", home)
    assert store.credentials_source("az", {}) is None
    assert "account key" in store.credentials_source(
        "az", {"AZURE_STORAGE_ACCOUNT": "a", "AZURE_STORAGE_ACCESS_KEY": "k"}
    )


# -- inputs from the bucket ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpkg", "geoparquet", "geojson", "fgb", "shp"])
def test_fields_from_the_bucket_give_the_local_results(s3_env, inputs, kind, tmp_path):
    path, kwargs = inputs["remote"][kind]
    remote = EngineSettings(chunk_rows=32, scratch_dir=tmp_path / "r", **kwargs)
    got = by_field(analyse_fields(inputs["raster_url"], path, settings=remote))
    local = by_field(
        analyse_fields(inputs["raster"], inputs["local"][kind][0],
                       settings=EngineSettings(chunk_rows=32, scratch_dir=tmp_path / "l", **kwargs))
    )
    pd.testing.assert_frame_equal(got, local)  # the same file, here or in the bucket: identical
    pd.testing.assert_frame_equal(got, inputs["reference"], check_dtype=False)  # any format: the GeoPackage's


@pytest.mark.parametrize("which", ["striped", "cog"])
def test_striped_and_cog_rasters_from_the_bucket_give_the_local_results(s3_env, inputs, which):
    local = inputs["raster"] if which == "striped" else inputs["tmp"] / "p_cog.tif"
    url = s3_env.upload(local, f"{BUCKET}/in/{which}-{os.urandom(4).hex()}.tif")  # a key no GDAL cache has seen
    got = analyse_fields(url, inputs["remote"]["gpkg"][0], settings=EngineSettings(chunk_rows=32))
    pd.testing.assert_frame_equal(by_field(got), inputs["reference"])
    reads = [r for r in s3_env.requests() if r["path"] == "/" + url.removeprefix("s3://") and r["method"] == "GET"]
    assert reads and all(r["range"] for r in reads), "GDAL read the raster in ranged requests"
    assert sum(r["bytes"] for r in reads) <= 2 * local.stat().st_size


def test_geoparquet_in_the_bucket_is_read_by_pyarrow(s3_env, inputs):
    from cropmon.io import geoparquet

    path = store.gdal_path(inputs["remote"]["geoparquet"][0])
    assert geoparquet.is_geoparquet(path)
    info = geoparquet.inspect_geoparquet(path)
    assert info.n_rows == len(inputs["reference"])
    assert "normalized_label" in info.columns


# -- one line, exit 2, nothing written -----------------------------------------------------------------------------


def run_cli(*args: str, capsys) -> tuple[int, list[str]]:
    code = cli.main(["run", "--progress", "off", "--scheduler", "threads", *map(str, args)])
    captured = capsys.readouterr()
    return code, [line for line in (captured.err + captured.out).splitlines() if line.startswith("cropmon:")]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no credentials", "no S3 credentials found"),
        ("raster bucket", "the bucket 'nobucket' does not exist"),
        ("raster key", "no such object"),
        ("fields bucket", "the bucket 'nobucket' does not exist"),
        ("fields key", "no such object"),
        ("out bucket", "the bucket 'nobucket' does not exist"),
        ("scratch bucket", "the bucket 'nobucket' does not exist"),
    ],
)
def test_bad_storage_input_is_one_line_exit_2_and_writes_nothing(
    s3_env, inputs, monkeypatch, capsys, tmp_path, case, message
):
    raster, fields = inputs["raster_url"], inputs["remote"]["gpkg"][0]
    out, extra = f"s3://{BUCKET}/bad/{case.replace(' ', '-')}", []
    if case == "no credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
    elif case.startswith("raster"):
        raster = "s3://nobucket/p.tif" if case.endswith("bucket") else f"s3://{BUCKET}/in/none.tif"
    elif case.startswith("fields"):
        fields = "s3://nobucket/f.gpkg" if case.endswith("bucket") else f"s3://{BUCKET}/in/none.gpkg"
    elif case == "out bucket":
        out = "s3://nobucket/out"
    else:
        out, extra = (
            tmp_path / "out",
            ["--scratch-dir", "s3://nobucket/scratch", "--fields", inputs["remote"]["geojson"][0]],
        )
    objects = s3_env.objects(BUCKET)
    code, lines = run_cli("--raster", raster, "--fields", fields, "--out", out, *extra, capsys=capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("cropmon: error: "), lines
    assert message in lines[0] and "Fix:" in lines[0], lines[0]
    assert s3_env.objects(BUCKET) == objects, "something was written to the bucket"
    assert not list(tmp_path.iterdir()) or case == "no credentials", "something was written locally"


# -- outputs to the bucket -----------------------------------------------------------------------------------------


def bucket_run(s3: S3Server, out: str) -> tuple[str, dict[str, bytes]]:
    """The run the pointer names under `out` (s3://BUCKET/...) and its files (relative name -> bytes)."""
    pointer = json.loads(s3.read(f"{out.removeprefix('s3://')}/{published.POINTER}"))
    prefix = pointer["url"].removeprefix("s3://")
    return pointer["run_id"], {key[len(prefix) + 1 :]: s3.read(key) for key in s3.objects(prefix)}


def run_ids(s3: S3Server, runs: str) -> set[str]:
    prefix = runs.removeprefix("s3://")
    return {key[len(prefix) + 1 :].split("/")[0] for key in s3.objects(prefix)}


def digest(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_outputs_in_the_bucket_are_a_local_run_s_files_under_a_pointer(s3_env, inputs, tmp_path, capsys):
    local = tmp_path / "local"
    assert (
        cli.main(
            [
                "run",
                "--progress",
                "off",
                "--scheduler",
                "threads",
                "--raster",
                str(inputs["raster"]),
                "--fields",
                inputs["local"]["gpkg"][0],
                "--out",
                str(local),
            ]
        )
        == 0
    )
    out = f"s3://{BUCKET}/runs-test/v1"
    ids = []
    for _ in range(3):
        code, lines = run_cli(
            "--raster", inputs["raster_url"], "--fields", inputs["remote"]["gpkg"][0], "--out", out, capsys=capsys
        )
        assert code == 0, lines
        run_id, files = bucket_run(s3_env, out)
        ids.append(run_id)
        assert lines[-1].endswith(f"-> {out}/runs/{run_id}")
    manifest = json.loads(files["run.json"])
    assert manifest["output"] == {
        "url": out,
        "run_id": ids[-1],
        "run_url": f"{out}/runs/{ids[-1]}",
        "pointer": f"{out}/latest.json",
    }
    assert manifest["object_storage"]["s3"]["endpoint"] == f"http://{s3_env.endpoint}"
    local_files = {p.name: p.read_bytes() for p in local.iterdir()}
    assert sorted(files) == sorted(local_files)
    tables = [n for n in files if n.endswith(".csv")]
    assert {n: digest(files)[n] for n in tables} == {n: digest(local_files)[n] for n in tables}
    import geopandas as gpd
    import pyarrow as pa

    got = gpd.read_parquet(pa.BufferReader(files["fields.parquet"]))
    assert got.equals(gpd.read_parquet(local / "fields.parquet"))
    # The current run and the one before it stay (a reader may be in it); the oldest is gone.
    assert run_ids(s3_env, f"{out}/runs") == set(ids[1:])
    assert json.loads(s3_env.read(f"{BUCKET}/runs-test/v1/latest.json"))["previous_run_id"] == ids[1]


@pytest.mark.slow
def test_an_interrupted_run_leaves_the_previous_run_and_the_pointer(s3_env, inputs):
    out = f"s3://{BUCKET}/interrupted"
    args = [
        "--raster",
        inputs["raster_url"],
        "--fields",
        inputs["remote"]["gpkg"][0],
        "--out",
        out,
        "--scheduler",
        "threads",
    ]
    first = cli_process(*args)
    assert first.wait(timeout=300) == 0, first.stdout.read()
    before_id, before = bucket_run(s3_env, out)
    second = cli_process(*args, "--chunk-rows", "1")
    for line in second.stdout:
        if "compute ..." in line:
            break
    time.sleep(0.3)
    second.send_signal(signal.SIGINT)
    rest = second.stdout.read()
    assert second.wait(timeout=120) == 130, rest
    after_id, after = bucket_run(s3_env, out)
    assert (after_id, digest(after)) == (before_id, digest(before))
    assert run_ids(s3_env, f"{out}/runs") == {before_id}, "the interrupted run's objects were left"


# -- disk-less workers ---------------------------------------------------------------------------------------------


@pytest.fixture
def bare_cluster(tmp_path, monkeypatch):
    """A scheduler and 2 workers whose environment has no storage settings at all (they share no settings and,
    for what cropmon writes, no disk with the client: every path they get is in the bucket)."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "CPL_AWS", "CROPMON_GDAL_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in NO_INSTANCE_METADATA.items():
        monkeypatch.setenv(name, value)
    cluster = start_cluster(tmp_path, n_workers=2, no_nanny=True)
    yield cluster
    cluster.stop()


def grep_everything(s3: S3Server, text: str, *places) -> list[str]:
    hits = [key for key in s3.objects(BUCKET) if text.encode() in s3.read(key)]
    for place in places:
        paths = [place] if Path(place).is_file() else Path(place).rglob("*") if Path(place).is_dir() else []
        hits += [str(p) for p in paths if Path(p).is_file() and text.encode() in Path(p).read_bytes()]
    return hits


@pytest.mark.cluster
@pytest.mark.slow
def test_workers_sharing_nothing_get_the_settings_and_no_secret_is_written(s3, inputs, bare_cluster, tmp_path):
    settings = s3.settings(secret=SECRET)
    del settings["GDAL_DISABLE_READDIR_ON_OPEN"]  # cropmon's default for a run on object storage
    config = tmp_path / "cropmon.toml"
    config.write_text("[gdal]\n" + "".join(f'{k} = "{v}"\n' for k, v in settings.items()))
    out = f"s3://{BUCKET}/bare/v1"
    # GeoJSON: read through a GeoPackage copy, which goes to the bucket (OUT/.cropmon-scratch) for these workers.
    job = cli_process(
        "--config",
        config,
        "--raster",
        inputs["cog_url"],
        "--fields",
        inputs["remote"]["geojson"][0],
        "--out",
        out,
        "--scheduler",
        bare_cluster.address,
        "--profile",
        f"{out}/profile.html",
    )
    output = job.communicate(timeout=300)[0]
    (tmp_path / "job.log").write_text(output)
    assert job.returncode == 0, output
    _, files = bucket_run(s3, out)
    manifest = json.loads(files["run.json"])
    assert manifest["cluster"]["kind"] == "remote" and manifest["cluster"]["n_workers_used"] == 2
    assert manifest["inputs"]["fields"]["read_from"].startswith(f"/vsis3/{BUCKET}/bare/v1/.cropmon-scratch/")
    assert "profile.html" in files
    import geopandas as gpd
    import pyarrow as pa

    got = gpd.read_parquet(pa.BufferReader(files["fields.parquet"])).set_index("field_id")
    expected = inputs["reference"]
    assert got.loc[expected.index, "majority_crop"].equals(expected["majority_crop"])
    assert np.allclose(got.loc[expected.index, "confidence_score"], expected["confidence_score"], equal_nan=True)
    # The secret is in no object (outputs, profile, fields copy), no log of the job, the scheduler or the workers.
    logs = sorted(tmp_path.glob("*.log"))
    assert {p.name for p in logs} >= {"job.log", "scheduler.log", "worker0.log", "worker1.log"}
    assert grep_everything(s3, SECRET, *logs) == []
    assert manifest["settings"]["gdal"]["AWS_SECRET_ACCESS_KEY"] == "(secret: not recorded)"
    assert manifest["settings"]["gdal"]["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    from distributed import Client

    with Client(bare_cluster.address, timeout=30) as client:  # the run took its settings off the workers
        assert set(client.run(os.getenv, "AWS_SECRET_ACCESS_KEY").values()) == {None}


@pytest.mark.cluster
def test_a_worker_that_joins_later_gets_the_settings(s3, bare_cluster, tmp_path):
    from cluster_procs import DASK, _spawn

    from cropmon.cluster import ClusterSettings, connect

    settings = s3.settings(secret=SECRET)
    with connect(ClusterSettings(bare_cluster.address, environment=settings)) as handle:
        late = _spawn(
            [
                *DASK,
                "worker",
                bare_cluster.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--no-nanny",
                "--name",
                "late",
            ],
            tmp_path / "late.log",
        )
        bare_cluster.workers.append(late)
        wait_for_workers(bare_cluster.address, 3)
        seen = handle.client.run(os.getenv, "AWS_S3_ENDPOINT")
        assert len(seen) == 3 and set(seen.values()) == {s3.endpoint}
        opened = handle.client.run(store.info, f"s3://{BUCKET}/in/p.tif")
        assert len({tuple(v) for v in opened.values()}) == 1
    with connect(ClusterSettings(bare_cluster.address)) as handle:
        assert set(handle.client.run(os.getenv, "AWS_S3_ENDPOINT").values()) == {None}


@pytest.mark.cluster
@pytest.mark.slow
def test_a_worker_killed_mid_run_with_everything_in_the_bucket(s3, inputs, bare_cluster, tmp_path):
    from cluster_procs import worker_pids  # noqa: F401 (the kill below uses the Popen's pid)
    from test_faults import wait_for_progress

    config = tmp_path / "cropmon.toml"
    config.write_text("[gdal]\n" + "".join(f'{k} = "{v}"\n' for k, v in s3.settings(secret=SECRET).items()))
    out = f"s3://{BUCKET}/killed"
    job = cli_process(
        "--config",
        config,
        "--raster",
        inputs["raster_url"],
        "--fields",
        inputs["remote"]["gpkg"][0],
        "--out",
        out,
        "--scheduler",
        bare_cluster.address,
        "--chunk-rows",
        "1",
    )
    wait_for_progress(bare_cluster.address, finished=30)
    victim = bare_cluster.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    output = job.communicate(timeout=300)[0]
    assert job.returncode == 0, output
    assert victim.wait(timeout=10) == -signal.SIGKILL
    _, files = bucket_run(s3, out)
    import geopandas as gpd
    import pyarrow as pa

    got = gpd.read_parquet(pa.BufferReader(files["fields.parquet"])).set_index("field_id")
    expected = inputs["reference"]
    assert got.loc[expected.index, "majority_crop"].equals(expected["majority_crop"])
    assert got.loc[expected.index, "n_pixels"].equals(expected["n_pixels"])


def test_the_api_takes_the_settings_for_one_call_and_restores_the_environment(s3, inputs, monkeypatch):
    import cropmon

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in NO_INSTANCE_METADATA.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    got = cropmon.analyse(
        inputs["raster_url"],
        inputs["remote"]["gpkg"][0],
        scheduler="threads",
        gdal=s3.settings(secret=SECRET),
        chunk_rows=32,
    )
    pd.testing.assert_frame_equal(by_field(got), inputs["reference"])
    assert dict(os.environ) == before


def test_several_aois_into_the_bucket_are_one_run_under_the_pointer(s3_env, inputs, capsys):
    out = f"s3://{BUCKET}/aois"
    raster, fields = inputs["raster_url"], inputs["remote"]["gpkg"][0]
    code, lines = run_cli(
        "--aoi", f"a={raster},{fields}", "--aoi", f"b={inputs['cog_url']},{fields}", "--out", out, capsys=capsys
    )
    assert code == 0, lines
    run_id, files = bucket_run(s3_env, out)
    assert {"run.json", "crop_metrics_pooled.csv", "a/run.json", "b/fields.parquet", "b/report.html"} <= set(files)
    assert json.loads(files["run.json"])["output"]["run_id"] == run_id
    assert json.loads(files["a/run.json"])["output"]["run_id"] == run_id
    assert files["a/crop_metrics.csv"] == files["b/crop_metrics.csv"]  # the striped file and its COG


def test_runs_no_reader_needs_are_removed_and_a_run_in_progress_is_left(s3_env, tmp_path, monkeypatch):
    out = f"s3://{BUCKET}/retention"
    base = f"{BUCKET}/retention/runs"
    s3_env.filesystem().open_output_stream(f"{base}/0-in-progress/fields.gpkg").close()  # no run.json yet
    ids = []
    for _ in range(3):
        staging = tmp_path / f"s{len(ids)}"
        staging.mkdir()
        (staging / "run.json").write_text("{}")
        ids.append(published.new_run_id())
        published.publish(out, ids[-1], staging)
    assert run_ids(s3_env, f"s3://{base}") == {"0-in-progress", *ids[1:]}
    monkeypatch.setattr(published, "STALE_RUN_S", -1)  # as if it had not changed for a day: abandoned
    ids.append(published.new_run_id())
    published.publish(out, ids[-1], staging)
    assert run_ids(s3_env, f"s3://{base}") == set(ids[2:])
    assert published.pointer(out)["run_id"] == ids[-1]
