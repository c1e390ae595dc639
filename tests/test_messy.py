"""Messy but usable input is repaired or reported, never dropped silently: every case counted with examples."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from conftest import pixel_to_lonlat, write_fields, write_prediction_raster

from cropmon.engine.job import analyse_fields


def px_box(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    (x0, x1), (y0, y1) = pixel_to_lonlat(np.array([c0, c1]), np.array([r1, r0]))
    return shapely.box(x0, y0, x1, y1)


def test_every_messy_case_is_kept_and_counted(tmp_path):
    classes = np.full((40, 40), 7, dtype=np.int16)
    classes[:, 20:] = 5
    classes[0:4, 0:4] = 45  # a class value outside 0..31
    classes[30:34, 30:34] = -9999  # nodata
    confidence = np.full((40, 40), 70, dtype=np.int16)
    confidence[36:38, 2:4] = 140  # a confidence outside 0..100
    raster = write_prediction_raster(tmp_path / "p.tif", classes, confidence, nodata=-9999)

    bow_tie = shapely.Polygon([
        tuple(pixel_to_lonlat(7, 7)), tuple(pixel_to_lonlat(17, 17)),
        tuple(pixel_to_lonlat(17, 7)), tuple(pixel_to_lonlat(7, 17)),
    ])
    rows = [
        ("ok", "wheat_winter", px_box(0, 0, 6, 6)),  # holds 16 invalid-class pixels
        ("bowtie", "wheat_winter", bow_tie),  # invalid: self-intersecting
        ("empty", "wheat_winter", shapely.Polygon()),
        ("multi", "barley_winter", shapely.MultiPolygon([px_box(22, 0, 26, 4), px_box(30, 0, 34, 4)])),
        ("dup", "Barley_Winter ", px_box(22, 20, 26, 24)),  # case/space variant
        ("dup", "barley_winter", px_box(22, 25, 26, 29)),  # duplicated field_id
        ("radish", "radish", px_box(8, 24, 12, 28)),  # unknown label
        ("nolabel", None, px_box(8, 30, 12, 34)),  # null label
        ("half_out", "barley_winter", px_box(36, 10, 46, 14)),  # partly outside the raster
        ("far", "wheat_winter", px_box(400, 400, 404, 404)),  # fully outside
        ("nodata", "barley_winter", px_box(30, 30, 34, 34)),  # only nodata pixels
        ("hotconf", "wheat_winter", px_box(2, 35, 4, 38)),  # 4 of its 6 pixels have confidence 140
        ("line", "wheat_winter", shapely.LineString([pixel_to_lonlat(1, 39), pixel_to_lonlat(5, 39)])),
    ]
    fields = gpd.GeoDataFrame(
        {"field_id": [r[0] for r in rows], "area_m2": 1.0, "normalized_label": [r[1] for r in rows], "year": 2022},
        geometry=[r[2] for r in rows],
        crs="EPSG:4326",
    )
    result = analyse_fields(raster, write_fields(tmp_path / "f.gpkg", fields))
    table = result.table
    assert len(table) == len(rows), "no row may be dropped"
    by_id = table.drop_duplicates("field_id").set_index("field_id")
    counts = result.report.counts

    assert by_id.loc["ok", "n_invalid"] == 16 and by_id.loc["ok", "n_pixels"] == 20
    assert by_id.loc["bowtie", "geometry_status"] == "repaired" and by_id.loc["bowtie", "n_pixels"] > 0
    assert by_id.loc["empty", "geometry_status"] == "empty" and by_id.loc["empty", "n_pixels"] == 0
    assert by_id.loc["multi", "geometry_status"] == "multipolygon" and by_id.loc["multi", "n_pixels"] == 32
    assert table.loc[table["field_id"] == "dup", "duplicate_id"].all()
    assert table.loc[table["field_id"] == "dup", "label_status"].tolist() == ["variant", "ok"]
    assert by_id.loc["radish", "gt_label"] == "" and by_id.loc["nolabel", "label_status"] == "null"
    assert by_id.loc["half_out", "n_pixels"] == 16  # 4 of 10 columns inside
    assert by_id.loc["far", "geometry_status"] == "outside" and by_id.loc["far", "pixel_rule"] == "none"
    assert by_id.loc["nodata", "n_nodata"] == 16 and by_id.loc["nodata", "n_pixels"] == 0
    assert by_id.loc["hotconf", "n_conf_invalid"] == 4 and by_id.loc["hotconf", "confidence_score"] == 70
    assert by_id.loc["line", "geometry_status"] == "not_polygon"

    assert counts["geometry_repaired"] == 1 and result.report.examples["geometry_repaired"] == ["bowtie"]
    assert counts["geometry_empty"] == 1 and counts["geometry_multipolygon"] == 1
    assert counts["geometry_not_polygon"] == 1 and counts["outside_raster"] == 1
    assert counts["duplicate_field_id"] == 1 and counts["label_variant"] == 1
    assert counts["label_unknown"] == 1 and counts["label_null"] == 1
    assert result.report.unknown_labels == {"radish": 1}
