"""The Python API: cheap to import, the same answers from a GeoDataFrame or an opened raster as from their files,
a caller's own Client left running, the same tables as the CLI's files, typed errors."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import write_random_inputs

import cropmon
from cropmon import errors
from cropmon.cli import EXIT_OK, main

pytestmark = pytest.mark.usefixtures("restore_cropmon_logging")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("api")
    return write_random_inputs(directory, np.random.default_rng(7), 60, 80, n_classes=32, n_cells=70)


@pytest.fixture(scope="module")
def results(inputs):
    raster, fields = inputs
    return cropmon.analyse(raster, fields, scheduler="threads")


def test_import_is_cheap_and_the_names_load_on_use():
    code = ("import sys, cropmon; heavy = [m for m in ('dask', 'distributed', 'pandas', 'sklearn', 'matplotlib')"
            " if m in sys.modules]; assert not heavy, heavy; import cropmon.cli; assert 'dask' not in sys.modules;"
            # what the CLI's run loads on the client: the tail's libraries run on the workers
            " import cropmon.api; heavy = [m for m in ('sklearn', 'matplotlib', 'scipy') if m in sys.modules];"
            " assert not heavy, heavy;"
            " assert all(getattr(cropmon, n) is not None for n in cropmon.__all__); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr
    assert set(cropmon.__all__) <= set(dir(cropmon)) and cropmon.errors.InputError is errors.InputError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cropmon.nope


def test_results_carry_the_table_with_the_reference_columns_first(results):
    from cropmon.schema import REFERENCE_COLUMNS

    assert tuple(results.table.columns[: len(REFERENCE_COLUMNS)]) == REFERENCE_COLUMNS
    assert list(results.class_counts.columns) == list(cropmon.read_catalogue.__globals__["U0C"].names)
    assert results.class_counts.index.equals(results.table.index)


def test_a_geodataframe_gives_the_same_table_as_its_file(inputs, results):
    raster, fields = inputs
    frame = gpd.read_file(fields)
    from_frame = cropmon.analyse(raster, frame, scheduler="threads")
    pd.testing.assert_frame_equal(from_frame.table, results.table)
    pd.testing.assert_frame_equal(from_frame.class_counts, results.class_counts)
    scratch = from_frame.source.path
    assert os.path.exists(scratch) and from_frame.geometries(np.arange(3)).notna().all()  # polygons still readable
    del from_frame
    gc.collect()
    assert not os.path.exists(scratch)  # the temporary GeoPackage goes with the results


def test_an_opened_raster_is_read_from_its_file(inputs, results):
    import rioxarray

    raster, fields = inputs
    array = rioxarray.open_rasterio(raster)
    pd.testing.assert_frame_equal(cropmon.analyse(array, fields, scheduler="threads").table, results.table)
    with pytest.raises(errors.InputError, match="subset of its 60 x 80 file") as info:
        cropmon.analyse(array.isel(x=slice(0, 40)), fields, scheduler="threads")
    assert "to_raster" in str(info.value)
    with pytest.raises(errors.InputError, match="no file behind it"):
        cropmon.analyse(array.copy(data=array.values).assign_attrs() * 1, fields, scheduler="threads")


def test_a_callers_client_is_used_and_left_running(inputs, results):
    from distributed import Client, LocalCluster

    raster, fields = inputs
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        got = cropmon.analyse(raster, fields, client=client)
        assert client.status == "running"
        assert client.submit(sum, [1, 2]).result() == 3
    pd.testing.assert_frame_equal(got.table, results.table)


def test_bad_calls_raise_typed_errors(inputs):
    raster, fields = inputs
    with pytest.raises(errors.ConfigError, match="exclude each other"):
        cropmon.analyse(raster, fields, scheduler="threads", client=object())
    with pytest.raises(errors.ConfigError, match="no option seed"):
        cropmon.analyse(raster, fields, scheduler="threads", seed=3)
    with pytest.raises(errors.MissingCRS, match="set_crs"):
        cropmon.analyse(raster, gpd.read_file(fields).set_crs(None, allow_override=True), scheduler="threads")
    with pytest.raises(errors.MissingColumn, match="label column 'crop' is missing"):
        cropmon.analyse(raster, gpd.read_file(fields), scheduler="threads", label_column="crop")
    with pytest.raises(errors.BadCatalogue, match="matches two classes"):
        cropmon.analyse(raster, fields, scheduler="threads", classes={"A": ["wheat"], "B": ["WHEAT"]})
    with pytest.raises(errors.MissingFile):
        cropmon.analyse(raster + ".nope" if isinstance(raster, str) else raster.with_suffix(".nope"), fields,
                        scheduler="threads")
    with pytest.raises(errors.ConfigError, match="run\\(\\) has no option"):
        cropmon.run(rastr="a.tif")
    with pytest.raises(errors.ConfigError, match="FieldResults"):
        cropmon.diagnose(pd.DataFrame())


def test_classes_from_a_mapping(inputs):
    raster, fields = inputs
    classes = {"Barley": ["barley_winter"], "Wheat": ["wheat_winter"], "Corn": ["corn_silage"]}
    with pytest.raises(errors.CatalogueMismatch):  # a 32-class raster: most values are no class of these three
        cropmon.analyse(raster, fields, scheduler="threads", classes=classes)


def test_the_diagnosis_has_the_tables_of_the_cli_files(inputs, results, tmp_path, capsys):
    raster, fields = inputs
    settings = {"min_fields": 3, "block_km": 0.2, "buffer_km": 0.05, "eval_min_per_stratum": 5}
    d = cropmon.diagnose(results, settings=settings, seed=2)
    config = tmp_path / "run.toml"
    config.write_text("[diagnosis]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    code = main(["run", "--raster", str(raster), "--fields", str(fields), "--out", str(tmp_path / "o"), "--scheduler",
                 "threads", "--progress", "off", "--seed", "2", "--config", str(config)])
    assert code == EXIT_OK, capsys.readouterr().err
    tables = cropmon.tables_of(d, results)
    for name, table in (("crop_metrics", d.crop_metrics), ("underperforming_crops", tables["underperforming_crops"]),
                        ("label_plan", tables["label_plan"]), ("fields_to_label", tables["fields_to_label"]),
                        ("evaluation_fields", d.evaluation_fields)):
        written = pd.read_csv(tmp_path / "o" / f"{name}.csv")
        assert list(written.columns) == list(table.columns), name
        assert len(written) == len(table), name
        if len(table):
            assert list(written.iloc[:, 0].astype(str)) == list(table.iloc[:, 0].astype(str)), name
    confusion = pd.read_csv(tmp_path / "o" / "confusion_matrix.csv", index_col=0)
    np.testing.assert_array_equal(confusion.to_numpy(), d.confusion_matrix.to_numpy())
    assert d.pixel_confusion_matrix.to_numpy().sum() == results.table.loc[
        results.table["gt_class"].notna(), "n_pixels"].sum()
    report = cropmon.report_of(d, results)
    assert "<nav class='toc'" in report.html and report._repr_html_() == report.html
    assert report.title == f"Crop diagnosis: {os.path.basename(raster)}"
    assert "Underperforming crops" in d._repr_html_() and "Active-learning plan" not in d._repr_html_()
    saved = report.save(tmp_path / "r.html")
    assert saved.read_text().startswith("<!doctype html>")


def test_run_is_what_the_cli_does(inputs, tmp_path, monkeypatch, capsys):
    raster, fields = inputs
    outcome = cropmon.run(raster=raster, fields=fields, out=tmp_path / "o", scheduler="threads", progress="off",
                          diagnosis={"min_fields": 3})
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert outcome.out_dir == tmp_path / "o" and outcome.manifest["fields"] == manifest["fields"]
    assert set(outcome.paths) == set(manifest["outputs"]) and all(p.exists() for p in outcome.paths.values())
    # the per-field table stays on the cluster and in the outputs (issue 12): counted from the written file
    n_written = len(pd.read_parquet(outcome.paths["fields.parquet"], columns=["field_id"]))
    assert outcome.counts["n_input"] == n_written and outcome.timings["total"] > 0
    assert manifest["settings"]["diagnosis"]["min_fields"] == 3
    calls = []

    def fake_run(**kwargs):
        calls.append(kwargs)
        return outcome

    monkeypatch.setattr("cropmon.api.run", fake_run)
    assert main(["run", "--raster", str(raster), "--fields", str(fields), "--workers", "2"]) == EXIT_OK
    (call,) = calls
    assert (call["raster"], call["fields"], call["workers"], call["config"]) == (str(raster), str(fields), 2, None)
    assert f"-> {tmp_path / 'o'}" in capsys.readouterr().out
