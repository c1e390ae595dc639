"""Per-field outputs stream the polygons from the fields file in batches: same files whatever the batch size."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import shapely
from conftest import pixel_to_lonlat, write_fields, write_prediction_raster

from cropmon.engine.job import analyse_fields
from cropmon.io import outputs
from cropmon.io.vector import FieldSource


def _messy_fields(crs: str) -> gpd.GeoDataFrame:
    boxes = [shapely.box(*pixel_to_lonlat(c, r + 3), *pixel_to_lonlat(c + 3, r)) for c in (1, 6, 11) for r in (1, 8)]
    geometry = [*boxes, None, shapely.LineString([pixel_to_lonlat(1, 15), pixel_to_lonlat(5, 15)])]
    n = len(geometry)
    fields = gpd.GeoDataFrame(
        {"field_id": [f"f{i}" for i in range(n)], "area_m2": np.arange(n, dtype=float),
         "normalized_label": ["wheat_winter", None, "radish", *(["barley_winter"] * (n - 3))], "year": 2022},
        geometry=geometry, crs="EPSG:4326",
    )
    return fields.to_crs(crs)


def _write(result, out, batch_rows: int):
    out.mkdir()
    staged = outputs.StagedOutput(final=out, staging=out)
    # what the tail's field-gpkg and field-parquet tasks write, side by side in a run
    outputs.write_fields_gpkg(result.table, result.source, result.fids, staged.path("fields.gpkg"),
                              batch_rows=batch_rows)
    outputs.write_fields_parquet(result.table, result.class_counts, result.source, result.fids,
                                 staged.path("fields.parquet"), staged.path("field_class_counts.parquet"),
                                 batch_rows=batch_rows)
    return staged


def test_streamed_outputs_equal_the_input_polygons_and_the_table(tmp_path):
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 4, size=(20, 20)).astype(np.int16)
    raster = write_prediction_raster(tmp_path / "p.tif", classes, np.full((20, 20), 60, np.int16))
    source = _messy_fields("EPSG:3857")
    result = analyse_fields(raster, write_fields(tmp_path / "f.gpkg", source))
    whole = _write(result, tmp_path / "whole", batch_rows=1000)
    batched = _write(result, tmp_path / "batched", batch_rows=3)
    assert sorted(batched.written) == ["field_class_counts.parquet", "fields.gpkg", "fields.parquet"]

    for out in (whole.final, batched.final):
        from_parquet = gpd.read_parquet(out / "fields.parquet")
        from_gpkg = pyogrio.read_dataframe(out / "fields.gpkg", layer="fields")
        for frame in (from_parquet, from_gpkg):
            assert frame.crs.to_epsg() == 3857, "outputs keep the fields' own CRS"
            assert frame.geometry.geom_equals_exact(source.geometry, tolerance=1e-6).sum() == len(source) - 1
            assert frame.geometry.isna().sum() == 1 or frame.geometry.is_empty.sum() == 1
            pd.testing.assert_series_equal(frame["field_id"].astype(str), result.table["field_id"].astype(str),
                                           check_names=False)
            np.testing.assert_array_equal(frame["n_pixels"], result.table["n_pixels"])
        geo = json.loads(pq.read_metadata(out / "fields.parquet").metadata[b"geo"])
        column = geo["columns"]["geometry"]
        assert column["encoding"] == "WKB" and set(column["geometry_types"]) == {"Polygon", "LineString"}
        np.testing.assert_allclose(column["bbox"], source.total_bounds)
        counts = pd.read_parquet(out / "field_class_counts.parquet")
        np.testing.assert_array_equal(counts.drop(columns="field_id").to_numpy(), result.class_counts.to_numpy())

    for name in ("fields.parquet", "field_class_counts.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(whole.final / name), pd.read_parquet(batched.final / name))


def test_a_worker_that_cannot_open_the_fields_file_names_file_and_fix(tmp_path):
    import pytest

    from cropmon import errors

    source = FieldSource(str(tmp_path / "elsewhere.gpkg"), "fields", "EPSG:4326")
    with pytest.raises(errors.NotAVectorFile) as caught:
        source.read_geometries(np.array([1, 2]))
    message = str(caught.value)
    assert "elsewhere.gpkg" in message and "2 fields" in message and "same path" in message
    import pickle

    import distributed  # noqa: F401  (installs tblib's pickling of exception chains, as on a worker)

    assert str(pickle.loads(pickle.dumps(caught.value))) == message, "the error must travel from a worker intact"


def test_wkb_kinds_read_from_the_header_equal_shapely():
    """GeoParquet's geometry_types come from each WKB's header, not from parsing it: equal to shapely's reading."""
    import pyarrow as pa
    import shapely

    from cropmon.io.outputs import GEOPARQUET_TYPES, wkb_kinds

    geometries = [shapely.box(0, 0, 1, 1), shapely.Polygon(), None, shapely.MultiPolygon([shapely.box(0, 0, 1, 1)]),
                  shapely.MultiPolygon(), shapely.Point(1, 2), shapely.LineString([(0, 0), (1, 1)]),
                  shapely.from_wkt("POLYGON Z ((0 0 1, 1 0 1, 1 1 1, 0 0 1))"),
                  shapely.GeometryCollection([shapely.Point(0, 0)])]
    names = {"Polygon": 3, "MultiPolygon": 6, "Point": 1, "LineString": 2, "GeometryCollection": 7}
    expected = [0 if g is None or g.is_empty else names[g.geom_type] for g in geometries]
    for byte_order in (0, 1):
        wkb = [None if g is None else shapely.to_wkb(g, byte_order=byte_order, flavor="iso") for g in geometries]
        assert wkb_kinds(pa.array(wkb, pa.binary())).tolist() == expected
        assert wkb_kinds(pa.array(wkb, pa.binary()).slice(3)).tolist() == expected[3:]
    assert set(GEOPARQUET_TYPES) >= set(expected) - {0}
