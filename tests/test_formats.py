"""Fields in every format users hand over give per-field results identical to the GeoPackage of the same fields."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from conftest import overlapping_fields, random_fields, write_fields, write_prediction_raster

from cropmon.engine.job import EngineSettings, analyse_fields
from cropmon.io import vector

RESULTS = ["n_pixels", "n_invalid", "majority_crop", "purity", "confidence_score", "runner_up_crop", "tie",
           "pixel_rule", "geometry_status", "n_pixels_shared", "gt_label", "label_status", "area_m2", "year"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A raster, fields that touch, overlap and repeat, and the reference results from their GeoPackage."""
    tmp = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(21)
    classes = rng.choice([3, 5, 7, 28], size=(60, 80)).astype(np.int16)
    confidence = rng.integers(5, 99, size=(60, 80)).astype(np.int16)
    raster = write_prediction_raster(tmp / "p.tif", classes, confidence)
    fields = pd.concat([random_fields(rng, 60, 80, 30), overlapping_fields(rng, 60, 80, 6)], ignore_index=True)
    reference = analyse_fields(raster, write_fields(tmp / "fields.gpkg", fields),
                               settings=EngineSettings(chunk_rows=16))
    assert reference.report.overlapping_pairs > 0, "the data must exercise overlaps in every format"
    return tmp, raster, fields, by_field(reference)


def by_field(result) -> pd.DataFrame:
    table = result.table.set_index("field_id")[RESULTS].sort_index()
    table["gt_label"] = table["gt_label"].astype(str)
    table["label_status"] = table["label_status"].astype(str)
    return table


def zipped(path, *members) -> str:
    archive = path.with_suffix(path.suffix + ".zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member in members or [path]:
            zf.write(member, member.name)
    return f"/vsizip/{archive}/{path.name}"


def write_as(fields, tmp, kind: str) -> tuple[str, dict]:
    """The fields in one format; returns the path and the keyword arguments the run needs."""
    if kind == "geojson":
        path = tmp / "fields.geojson"
        pyogrio.write_dataframe(fields, path, driver="GeoJSON")
    elif kind in ("fgb", "fgb_no_index"):
        path = tmp / f"{kind}.fgb"
        pyogrio.write_dataframe(fields, path, driver="FlatGeobuf",
                                layer_options={"SPATIAL_INDEX": "NO" if kind == "fgb_no_index" else "YES"})
    elif kind == "shp":
        path = tmp / "shp" / "fields.shp"
        path.parent.mkdir(exist_ok=True)
        with pytest.warns(RuntimeWarning, match="laundered"):
            pyogrio.write_dataframe(fields, path, driver="ESRI Shapefile")
        return str(path), {"label_column": "normalized"}
    elif kind == "geoparquet":
        path = tmp / "fields.parquet"
        fields.to_parquet(path)
    elif kind == "geoparquet_geoarrow":
        path = tmp / "geoarrow.parquet"
        fields.to_parquet(path, geometry_encoding="geoarrow")
    elif kind == "gpkg_layer":
        path = tmp / "two_layers.gpkg"
        write_fields(path, fields.iloc[:3], layer="other")
        write_fields(path, fields, layer="ground_truth")
        return str(path), {"layer": "ground_truth"}
    else:
        raise ValueError(kind)
    return str(path), {}


CONVERTED = {"geojson", "fgb_no_index", "geoparquet", "geoparquet_geoarrow"}


@pytest.mark.parametrize("kind", ["geojson", "fgb", "fgb_no_index", "shp", "geoparquet", "geoparquet_geoarrow",
                                  "gpkg_layer"])
def test_each_format_gives_the_geopackage_results(inputs, tmp_path, caplog, kind):
    _, raster, fields, expected = inputs
    path, options = write_as(fields, tmp_path, kind)
    scratch = tmp_path / "scratch"
    with caplog.at_level(logging.INFO, logger="cropmon"):
        result = analyse_fields(raster, path, settings=EngineSettings(chunk_rows=16, scratch_dir=scratch, **options))
    pd.testing.assert_frame_equal(by_field(result), expected, check_dtype=False)
    assert result.report.overlapping_pairs > 0
    copies = list(scratch.glob("*.gpkg")) if scratch.exists() else []
    if kind in CONVERTED:
        assert [result.source.path] == [str(c) for c in copies] and result.source.driver == "GPKG"
        assert "converted once to the GeoPackage" in caplog.text
        assert result.table.attrs["source"]["read_from"] == str(copies[0])
    else:
        assert copies == [] and result.source.path == path, "read in place: no copy"
    polygons = result.geometries(np.arange(len(result.table))).to_numpy()
    given = fields.set_index("field_id").geometry.loc[result.table["field_id"]].to_numpy()
    # Shapefiles store rings clockwise (other start and order of vertices); GeoJSON keeps 15 significant digits
    # (GDAL's default): 1e-13 degrees, far under a pixel (2.7e-4 degrees).
    assert (shapely.hausdorff_distance(polygons, given) < 1e-12).all(), "the outputs stream the input's polygons"


@pytest.mark.parametrize("kind", ["shp", "geojson", "geoparquet", "fgb"])
def test_the_same_through_vsizip(inputs, tmp_path, kind):
    _, raster, fields, expected = inputs
    path, options = write_as(fields, tmp_path, kind)
    if kind == "shp":
        members = sorted(p for p in (tmp_path / "shp").iterdir())
        virtual = zipped(tmp_path / "shp" / "fields.shp", *members)
    else:
        virtual = zipped(tmp_path / path.rsplit("/", 1)[1])
    settings = EngineSettings(chunk_rows=16, scratch_dir=tmp_path / "scratch", **options)
    result = analyse_fields(raster, virtual, settings=settings)
    pd.testing.assert_frame_equal(by_field(result), expected, check_dtype=False)


def test_a_copy_is_made_once_and_remade_when_the_input_changes(inputs, tmp_path, caplog):
    _, raster, fields, _ = inputs
    path, _ = write_as(fields, tmp_path, "geojson")
    scratch = tmp_path / "scratch"
    first = analyse_fields(raster, path, settings=EngineSettings(scratch_dir=scratch))
    stamp = (scratch / first.source.path).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="cropmon"):
        again = analyse_fields(raster, path, settings=EngineSettings(scratch_dir=scratch))
    assert again.source.path == first.source.path and (scratch / again.source.path).stat().st_mtime_ns == stamp
    assert "reused" in caplog.text
    pyogrio.write_dataframe(fields.iloc[:10], path, driver="GeoJSON")  # the user fixes the file
    changed = analyse_fields(raster, path, settings=EngineSettings(scratch_dir=scratch))
    assert changed.source.path != first.source.path and len(changed.table) == 10
    assert not list(scratch.glob(".*partial*")), "no half-written copy left"


def test_geoparquet_crs84_is_the_rasters_epsg4326(inputs, tmp_path):
    """GeoParquet's default CRS (OGC:CRS84, lon/lat) is EPSG:4326 in x/y order: nothing is reprojected."""
    _, raster, fields, expected = inputs
    path, _ = write_as(fields, tmp_path, "geoparquet")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    geo = table.schema.metadata[b"geo"].replace(b'"crs": ', b'"crs_dropped": ')  # no crs key: CRS84 by the spec
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"geo": geo}), tmp_path / "crs84.parquet")
    header = vector.inspect_fields(tmp_path / "crs84.parquet")
    assert header.crs == "OGC:CRS84" and header.driver == "GeoParquet"
    result = analyse_fields(raster, tmp_path / "crs84.parquet", settings=EngineSettings(scratch_dir=tmp_path / "s"))
    assert "reprojected_from" not in result.report.counts
    pd.testing.assert_frame_equal(by_field(result), expected, check_dtype=False)


def test_a_copy_the_workers_cannot_open_is_refused_before_the_compute(inputs, tmp_path, monkeypatch):
    """On a remote cluster whose workers do not see the scratch directory: one line naming the fix, before the
    graph is computed (the copy is made by the worker that reads the fields; the others must open it)."""
    from cropmon.cluster import ClusterSettings, connect
    from cropmon.errors import MissingFile
    from cropmon.tasks import ClusterHandle

    def no_compute(self, *args, **kwargs):
        raise AssertionError("nothing may be computed")

    _, raster, fields, _ = inputs
    path, _ = write_as(fields, tmp_path, "geojson")
    with connect(ClusterSettings("threads")) as handle:
        with monkeypatch.context() as patch:
            patch.setattr(ClusterHandle, "workers_that_cannot_read", lambda self, p: ["tcp://10.0.0.7:40000"])
            patch.setattr(ClusterHandle, "compute", no_compute)
            with pytest.raises(MissingFile, match=r"cannot be opened on 1 worker.*tcp://10\.0\.0\.7:40000.*--scratch-dir"):
                analyse_fields(raster, path, settings=EngineSettings(scratch_dir=tmp_path / "s"), cluster=handle)
        analyse_fields(raster, write_as(fields, tmp_path, "fgb")[0], cluster=handle)
