"""The digital twin: real layouts, determinism, believable fields, calibrated outcomes, the real traps.

Most tests read one small twin (scale 1/16: 1,304 x 1,304 pixels, ~9,600 fields, ~4 s) through the independent
vote check of cropmon.twin.check, which counts every pixel centre of every field (a pixel in two fields counts in
both); the check itself is tested against brute-force point-in-polygon counts. Overlaps are classified with shapely
from the written GeoPackage. Comparisons with the real files skip when ../shared/reference is absent.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import geopandas
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
import shapely.affinity
from hypothesis import given
from hypothesis import strategies as st
from pyproj import Geod
from scipy.special import ndtri

from cropmon.errors import ConfigError
from cropmon.labels import CLASS_IDS, CROP_NAMES, LABELS_DICT
from cropmon.quotas import apportion
from cropmon.twin import default_twin_dir, ensure_twin, make_twin, twin_cache_dir
from cropmon.twin.check import agreement_by_crop, field_votes
from cropmon.twin.fields import (
    crop_field_counts,
    no_centre_crop_counts,
    no_centre_field_count,
    overlap_plan,
)
from cropmon.twin.landscape import TwinGrid, to_metric, transform_geometries, twin_grid
from cropmon.twin.model import Predictions, shared_outcome
from cropmon.twin.overlaps import SharedPixels
from cropmon.twin.params import (
    CONF_WHEN_RIGHT,
    CONF_WHEN_WRONG,
    FIELD_SIZE_QUANTILES_UTM_PX,
    FULL_SIDE_PX,
    GT_LAYER,
    GT_YEAR,
    MEDIAN_PX_UTM,
    PIXEL_SIZE_DEG,
    REAL_FIELD_CONFUSION,
    REAL_OVERALL_AGREEMENT,
    UTM_PX_AREA_M2,
)
from cropmon.twin.raster import decide_classes

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
SCALE = 1 / 16
REAL = np.asarray(REAL_FIELD_CONFUSION)
REAL_AGREEMENT = np.divide(np.diag(REAL), REAL.sum(axis=1), out=np.zeros(len(REAL)), where=REAL.sum(axis=1) > 0)
PLAN = overlap_plan(SCALE)


def reference(name: str) -> Path:
    """A file of ../shared/reference, or skip with the reason."""
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the real reference files only sit beside a checkout with ../shared")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory):
    return make_twin(tmp_path_factory.mktemp("twin16"), scale=SCALE, seed=0)


@pytest.fixture(scope="module")
def votes(twin) -> pd.DataFrame:
    return field_votes(twin.raster, twin.fields)


@pytest.fixture(scope="module")
def fields(twin):
    return pyogrio.read_dataframe(twin.fields)


# --- layouts -------------------------------------------------------------------------------------------------------


def test_raster_profile_matches_the_real_clip(twin) -> None:
    with rasterio.open(reference("real_clip/u0c_clip.tif")) as real, rasterio.open(twin.raster) as ours:
        assert ours.count == real.count == 10
        assert ours.dtypes == real.dtypes
        assert ours.descriptions == real.descriptions
        assert ours.crs == real.crs
        assert ours.res == real.res
        assert ours.block_shapes[0] == (1, ours.width) and real.block_shapes[0] == (1, real.width)
        assert ours.profile["tiled"] is False
        assert ours.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == real.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"]
        assert ours.tags()["AREA_OR_POINT"] == real.tags()["AREA_OR_POINT"] == "Area"
        assert ours.nodata is None and real.nodata is None
        assert ours.compression is None and real.compression is None
        offset = np.array([real.transform.c - ours.transform.c, ours.transform.f - real.transform.f]) / ours.res[0]
        np.testing.assert_allclose(offset, np.round(offset), atol=1e-6)  # the same pixel grid


def test_full_grid_puts_the_clip_where_the_real_file_has_it() -> None:
    grid = twin_grid(1.0)
    assert (grid.width, grid.height) == (FULL_SIDE_PX, FULL_SIDE_PX)
    col = (1.9390135407719873 - grid.transform.c) / PIXEL_SIZE_DEG
    row = (grid.transform.f - 49.93869411713038) / PIXEL_SIZE_DEG
    assert col == pytest.approx(1977, abs=1e-6) and row == pytest.approx(2547, abs=1e-6)


@pytest.mark.parametrize(("scale", "side"), [(1 / 16, 1304), (1 / 64, 652), (4.0, 10436)])
def test_scaled_grids_are_centred_windows_of_the_same_pixel_grid(scale: float, side: int) -> None:
    full, grid = twin_grid(1.0), twin_grid(scale)
    assert grid.width == grid.height == side
    offset_cols = (grid.transform.c - full.transform.c) / PIXEL_SIZE_DEG
    offset_rows = (full.transform.f - grid.transform.f) / PIXEL_SIZE_DEG
    assert offset_cols == pytest.approx(round(offset_cols), abs=1e-6)
    assert offset_cols == pytest.approx((FULL_SIDE_PX - side) // 2, abs=1e-6) == offset_rows


def test_geopackage_schema_matches_the_real_one(twin) -> None:
    real = pyogrio.read_info(reference("real_clip/u0c_clip_fields.gpkg"))
    ours = pyogrio.read_info(twin.fields)
    assert [list(layer) for layer in pyogrio.list_layers(twin.fields)] == [[GT_LAYER, "Polygon"]]
    for key in ("layer_name", "crs", "geometry_name", "geometry_type", "fid_column"):
        assert ours[key] == real[key], key
    assert list(ours["fields"]) == list(real["fields"])
    assert list(ours["dtypes"]) == list(real["dtypes"])
    assert ours["ogr_types"] == real["ogr_types"]


def test_columns_hold_real_looking_values(fields) -> None:
    assert (
        fields["field_id"].str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}").all()
    )
    assert fields["field_id"].is_unique
    assert (fields["year"] == 2022).all()
    coords = shapely.get_coordinates(fields.geometry.values)
    np.testing.assert_array_equal(coords, np.round(coords, 6))  # 6 decimals, like the real file


# --- determinism and the quality knob ------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = make_twin(tmp_path / "a", scale=1 / 64, seed=7)
    b = make_twin(tmp_path / "b", scale=1 / 64, seed=7)
    c = make_twin(tmp_path / "c", scale=1 / 64, seed=8)
    assert digest(a.raster) == digest(b.raster)
    assert digest(a.fields) == digest(b.fields)  # GPKG timestamps pinned by OGR_CURRENT_DATE
    assert digest(a.raster) != digest(c.raster)
    assert not set(pyogrio.read_dataframe(a.fields)["field_id"]) & set(pyogrio.read_dataframe(c.fields)["field_id"])


def test_quality_changes_predictions_but_never_fields(tmp_path: Path) -> None:
    base = make_twin(tmp_path / "base", scale=1 / 16, seed=1)
    better = make_twin(tmp_path / "better", scale=1 / 16, seed=1, quality={"Spring Barley": 0.9, "Fallow": 0.95})
    assert digest(base.fields) == digest(better.fields)
    assert digest(base.raster) != digest(better.raster)
    before = agreement_by_crop(field_votes(base.raster, base.fields))["agreement"]
    after = agreement_by_crop(field_votes(better.raster, better.fields))["agreement"]
    n = agreement_by_crop(field_votes(better.raster, better.fields))["num_fields"]
    assert after["Spring Barley"] == pytest.approx(0.9, abs=1 / n["Spring Barley"])
    assert after["Fallow"] == pytest.approx(0.95, abs=1 / n["Fallow"])
    assert after["Winter Wheat"] == before["Winter Wheat"]  # crops not named keep their real row


def test_a_quality_multiplier_scales_every_error(tmp_path: Path) -> None:
    harder = make_twin(tmp_path / "harder", scale=1 / 64, seed=2, quality=2.0)
    table = agreement_by_crop(field_votes(harder.raster, harder.fields))
    expected = 1 - np.minimum(1, 2 * (1 - REAL_AGREEMENT))
    for crop, row in table.iterrows():
        assert row["agreement"] == pytest.approx(expected[CLASS_IDS[crop]], abs=1 / row["num_fields"] + 1e-9), crop


# --- fields --------------------------------------------------------------------------------------------------------


def overlapping_pairs(fields) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every pair of intersecting fields, by kind: the same polygon, one inside the other, or a partial overlap."""
    geoms = fields.geometry.values
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    left, right = left[left < right], right[left < right]
    same = shapely.to_wkb(geoms[left]) == shapely.to_wkb(geoms[right])
    inside = ~same & (
        shapely.contains_properly(geoms[left], geoms[right]) | shapely.contains_properly(geoms[right], geoms[left])
    )
    kinds = {"same polygon": same, "inside": inside, "partial": ~same & ~inside}
    return {kind: (left[mask], right[mask]) for kind, mask in kinds.items()}


def pixel_centres_inside(geom: shapely.Geometry, transform: rasterio.Affine) -> int:
    """Pixel centres of the twin's grid inside a geometry (brute force, shapely)."""
    west, south, east, north = shapely.bounds(geom)
    cols = np.arange(np.floor((west - transform.c) / transform.a), np.ceil((east - transform.c) / transform.a))
    rows = np.arange(np.floor((transform.f - north) / -transform.e), np.ceil((transform.f - south) / -transform.e))
    x, y = np.meshgrid(transform.c + (cols + 0.5) * transform.a, transform.f + (rows + 0.5) * transform.e)
    return int(shapely.contains_xy(geom, x, y).sum())


def test_fields_are_valid_polygons(fields) -> None:
    geoms = fields.geometry.values
    assert shapely.is_valid(geoms).all()
    assert (shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON).all()


def test_fields_overlap_exactly_as_designed(twin, fields) -> None:
    """Duplicates (same polygon, another field_id, the same or another label), fields inside a larger field and
    neighbours sharing a strip of pixel centres, in the planned numbers; no field in two overlaps."""
    pairs = overlapping_pairs(fields)
    left, right = pairs["same polygon"]
    assert len(left) == PLAN.duplicates
    same_label = fields["normalized_label"].to_numpy()[left] == fields["normalized_label"].to_numpy()[right]
    assert same_label.sum() == PLAN.same_label_duplicates > 0
    assert (~same_label).sum() == PLAN.other_label_duplicates > 0
    assert len(pairs["inside"][0]) == PLAN.contained > 0
    left, right = pairs["partial"]
    assert len(left) == PLAN.partial_pairs > 0
    with rasterio.open(twin.raster) as src:
        transform = src.transform
    strips = shapely.intersection(fields.geometry.values[left], fields.geometry.values[right])
    assert min(pixel_centres_inside(strip, transform) for strip in strips) >= 2  # a strip of pixel centres
    in_pairs = np.concatenate([pair for both in pairs.values() for pair in both])
    assert np.bincount(in_pairs).max() == 1


def test_fields_are_neither_axis_aligned_rectangles_nor_on_a_grid(fields) -> None:
    metric = transform_geometries(fields.geometry.values, to_metric())
    rectangle = shapely.area(metric) / shapely.area(shapely.envelope(metric)) > 0.99
    assert rectangle.mean() < 0.01
    rotated = shapely.oriented_envelope(metric)
    edge = np.diff(shapely.get_coordinates(rotated).reshape(-1, 5, 2)[:, :2], axis=1)[:, 0]
    angle = np.degrees(np.arctan2(edge[:, 1], edge[:, 0])) % 90
    share_per_10_degrees = np.histogram(angle, bins=9, range=(0, 90))[0] / len(angle)
    assert share_per_10_degrees.max() < 0.3  # orientations vary block by block
    assert shapely.get_num_coordinates(metric).mean() > 6  # digitised-like outlines, not bare quads


def test_area_m2_matches_the_geometry(fields) -> None:
    metric = transform_geometries(fields.geometry.values, to_metric())
    np.testing.assert_allclose(fields["area_m2"], shapely.area(metric), rtol=1e-9)
    geod = Geod(ellps="WGS84")
    sample = fields.sample(300, random_state=0)
    geodesic = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in sample.geometry])
    np.testing.assert_allclose(sample["area_m2"], geodesic, rtol=1e-4)
    assert fields["area_m2"].max() <= 10.0e4  # the GT is filtered at ~10 ha


def test_field_sizes_follow_the_real_quantiles(votes) -> None:
    pixels = votes.loc[votes["pixel_rule"] == "centre", "n_pixels"]
    for q, utm_px in FIELD_SIZE_QUANTILES_UTM_PX.items():
        if 0.10 <= q <= 0.95:  # native pixel counts = 0.91 x the published (UTM-grid) ones
            assert pixels.quantile(q) == pytest.approx(0.91 * utm_px, rel=0.15), q


def test_crops_keep_their_real_median_size(fields, votes) -> None:
    utm_px = fields["area_m2"] / UTM_PX_AREA_M2
    for class_id, median in utm_px.groupby(votes["gt_class"]).median().items():
        if (votes["gt_class"] == class_id).sum() >= 30:
            assert median == pytest.approx(MEDIAN_PX_UTM[CROP_NAMES[class_id]], rel=0.1), CROP_NAMES[class_id]


def test_ground_truth_is_clustered_with_gaps(twin) -> None:
    with rasterio.open(twin.raster) as src:
        ids = rasterio.features.rasterize(
            pyogrio.read_dataframe(twin.fields).geometry, out_shape=src.shape, transform=src.transform
        )
    covered = ids > 0
    assert 0.2 < covered.mean() < 0.45  # the real GT covers roughly a third of the AOI
    squares = covered[:1280, :1280].reshape(40, 32, 40, 32).mean(axis=(1, 3))  # ~0.6 x 1 km each
    assert (squares < 0.02).mean() > 0.1  # gaps: squares without GT (woods, villages, farms outside the GT)
    assert (squares > 0.5).mean() > 0.1  # clusters: squares mostly covered by GT fields


# --- calibration ---------------------------------------------------------------------------------------------------


def test_field_counts_per_crop_are_the_real_ones_at_scale_1() -> None:
    np.testing.assert_array_equal(crop_field_counts(1.0), REAL.sum(axis=1))
    plan = overlap_plan(1.0)
    assert no_centre_field_count(1.0) == plan.no_centre == 67  # issue 13: ~67 real fields hold no pixel centre
    assert plan.covered == 138  # ~138 real fields lose every pixel to overlapping polygons in one zone grid
    assert plan.duplicates > plan.contained > 0 and plan.same_label_duplicates > plan.other_label_duplicates > 0
    assert plan.partial_pairs == 400


def test_no_centre_fields_spread_over_crops_at_scale_1() -> None:
    """Slivers and tiny plots: remnants of split fields (mostly Winter Wheat) and tiny plots (mostly Fallow)."""
    counts = no_centre_crop_counts(1.0)
    assert counts.sum() == 67
    assert counts[CLASS_IDS["Fallow"]] / counts.sum() < 0.4
    assert counts[CLASS_IDS["Winter Wheat"]] >= 10
    assert (counts > 0).sum() >= 10
    assert (counts <= REAL.sum(axis=1)).all()


def test_per_crop_agreement_is_the_real_one(votes) -> None:
    """Outcomes are dealt by exact counts, so the only slack is the rounding of each crop's row: < 1 field."""
    table = agreement_by_crop(votes)
    assert table["num_fields"].sum() == crop_field_counts(SCALE).sum()
    for crop, row in table.iterrows():
        assert row["agreement"] == pytest.approx(REAL_AGREEMENT[CLASS_IDS[crop]], abs=1 / row["num_fields"]), crop
    assert votes["match"].mean() == pytest.approx(REAL_OVERALL_AGREEMENT, abs=0.01)


def test_every_field_gets_its_designed_outcome_counting_every_pixel_centre(votes) -> None:
    """Under per-field counting (a pixel in two fields counts in both) the twin's field confusion matrix is exactly
    the real one's rows dealt out to each crop's fields: duplicates, covered and overlapping fields included."""
    designed = np.stack([apportion(row, n) for row, n in zip(REAL, crop_field_counts(SCALE), strict=True)])
    known = votes[votes["gt_class"].notna()]
    twin = pd.crosstab(known["gt_class"].astype(int), known["majority"]).reindex(
        index=range(len(REAL)), columns=range(len(REAL)), fill_value=0
    )
    np.testing.assert_array_equal(twin.to_numpy(), designed)
    overlapping = known[known["overlaps"]]
    assert len(overlapping) == 2 * (PLAN.covered + PLAN.partial_pairs)  # both sides of every overlap are scored
    assert (~overlapping["match"].astype(bool)).any() and overlapping["match"].astype(bool).any()


def test_confusions_follow_the_real_rows(votes) -> None:
    known = votes[votes["gt_class"].notna()]
    spring_barley = known[known["gt_class"] == CLASS_IDS["Spring Barley"]]
    assert (spring_barley["majority"] == CLASS_IDS["Winter Barley"]).mean() == pytest.approx(0.42, abs=0.01)
    predicted = set(votes["majority"])
    for never_right in ("Winter Rye", "Spring Rye", "Beans", "Turnips", "Trees"):
        assert CLASS_IDS[never_right] not in predicted
    assert CLASS_IDS["Grassland Cultivated"] in predicted  # predicted, though absent from GT


def test_majorities_hold_most_pixels(votes) -> None:
    purity = votes.groupby("gt_class")["purity"].mean()
    for easy in ("Winter Wheat", "Canola", "Sugarbeets"):
        assert 0.96 <= purity[CLASS_IDS[easy]] < 1.0, easy
    assert purity[CLASS_IDS["Trees"]] < 0.9


def test_confidence_is_higher_when_right(votes) -> None:
    known = votes[votes["match"].notna()]
    right, wrong = known[known["match"].astype(bool)], known[~known["match"].astype(bool)]
    assert right["confidence"].mean() > wrong["confidence"].mean() + 10
    for crop, gap in ((c, CONF_WHEN_RIGHT[c] - CONF_WHEN_WRONG[c]) for c in CONF_WHEN_RIGHT):
        sub = known[known["gt_class"] == CLASS_IDS[crop]]
        r, w = sub.loc[sub["match"].astype(bool), "confidence"], sub.loc[~sub["match"].astype(bool), "confidence"]
        if gap > 10 and min(len(r), len(w)) >= 20:
            assert r.mean() > w.mean() + 5, crop


def test_every_alias_of_the_present_classes_is_used(fields, votes) -> None:
    labels = set(fields["normalized_label"])
    for name, aliases in LABELS_DICT.items():
        n = (votes["gt_class"] == CLASS_IDS[name]).sum()
        if n >= len(aliases):
            assert set(aliases) <= labels, name


# --- the traps -----------------------------------------------------------------------------------------------------


def test_two_fields_are_radish(fields, votes) -> None:
    radish = fields["normalized_label"] == "radish"
    assert radish.sum() == 2
    assert votes.loc[radish, "gt_class"].isna().all() and (votes.loc[radish, "n_pixels"] > 0).all()


def test_some_fields_hold_no_pixel_centre(votes) -> None:
    no_centre = votes["pixel_rule"] == "all_touched"
    assert no_centre.sum() == no_centre_field_count(SCALE) == 4
    assert (votes.loc[no_centre, "n_pixels"] > 0).all()  # all-touched finds their pixels
    assert votes.loc[no_centre, "match"].notna().all()
    crops = np.bincount(votes.loc[no_centre, "gt_class"].astype(int), minlength=len(REAL))
    np.testing.assert_array_equal(crops, no_centre_crop_counts(SCALE))


def test_covered_fields_hold_pixels_alone_but_lose_them_in_one_zone_grid(votes) -> None:
    """Like the real file (issue 13): rasterized alone, duplicates and fields inside another hold pixel centres,
    all of them shared; burnt into one zone grid in file order, exactly the planned number get no pixel."""
    centre = votes["pixel_rule"] == "centre"
    all_shared = centre & (votes["n_shared_pixels"] == votes["n_pixels"])
    assert all_shared.sum() == 2 * PLAN.duplicates + PLAN.contained  # both copies of a duplicate, and every part
    some_shared = votes["overlaps"] & ~all_shared
    assert some_shared.sum() == 2 * PLAN.partial_pairs + PLAN.contained  # both neighbours, and every container
    assert (votes.loc[some_shared, "n_shared_pixels"] <= 0.4 * votes.loc[some_shared, "n_pixels"]).all()
    single_grid_empty = votes["n_single_grid_pixels"] == 0
    assert (single_grid_empty & centre).sum() == PLAN.covered
    assert single_grid_empty.sum() == PLAN.covered + PLAN.no_centre


def test_a_duplicate_pair_takes_one_outcome_from_both_rows() -> None:
    rng = np.random.default_rng(0)
    remaining = np.zeros((32, 32), dtype=np.int64)
    remaining[5, [5, 7]] = [10, 3]  # Winter Barley: 10 right, 3 predicted Winter Wheat
    remaining[7, [5, 7]] = [2, 20]  # Winter Wheat: 2 predicted Winter Barley, 20 right
    before = remaining.copy()
    p = shared_outcome(remaining, (5, 7), rng)
    assert p in (5, 7)  # both rows hold both: one is right, the other wrong
    assert (before - remaining).sum() == 2 and (before - remaining)[[5, 7], p].tolist() == [1, 1]
    same = np.zeros((32, 32), dtype=np.int64)
    same[20, [20, 21]] = [1, 4]  # Grain Corn: only outcome 21 is left twice
    assert shared_outcome(same, (20, 20), rng) == 21 and same[20, 21] == 2
    no_common = np.zeros((32, 32), dtype=np.int64)
    no_common[5, [5, 28]] = [4, 2]
    no_common[7, [7, 3]] = [6, 1]
    p = shared_outcome(no_common, (5, 7), rng)  # a wrong outcome stands in: each crop keeps its right outcomes
    assert (no_common[5, 5], no_common[7, 7]) == (4 - (p == 5), 6 - (p == 7))
    assert no_common[[5, 7]].sum(axis=1).tolist() == [5, 6]
    perfect = np.zeros((32, 32), dtype=np.int64)
    perfect[5, 5], perfect[7, 7] = 3, 3
    p = shared_outcome(perfect, (5, 7), rng)  # nothing else left: one crop loses a right outcome
    assert perfect[5, 5] + perfect[7, 7] == 4


def test_a_field_keeps_its_majority_when_the_pixels_it_shares_outvote_it() -> None:
    """Field 1 is noisy (its minority class is 7) and reaches into field 2 (pure class 7): counted with the shared
    pixels, class 7 would win; the raster must give field 1 pure own pixels (its own region outnumbers the shared)."""
    grid = TwinGrid(64, 64, rasterio.transform.from_origin(2.0, 50.0, PIXEL_SIZE_DEG, PIXEL_SIZE_DEG))
    id_grid = np.zeros((64, 64), dtype=np.int32)
    id_grid[:, :30], id_grid[:, 30:] = 1, 2
    n_ids = 3
    pred = Predictions(
        majority=np.array([0, 5, 7], dtype=np.int8),
        second=np.array([0, 7, 5], dtype=np.int8),
        third=np.array([0, 7, 5], dtype=np.int8),
        noise_threshold=ndtri(np.array([0.5, 0.35, 1e-9])).astype(np.float32),
        conf_mean=np.full(n_ids, 60.0, dtype=np.float32),
        conf_sd=np.full(n_ids, 5.0, dtype=np.float32),
        crop2=np.zeros(n_ids, dtype=np.int8),
        offsets=np.zeros((n_ids, 5), dtype=np.float32),
        is_field=np.array([False, True, True]),
    )
    field_1 = np.flatnonzero((id_grid <= 2).ravel() & (np.arange(64 * 64) % 64 < 50))  # 30 own + 20 shared columns
    shared = SharedPixels.of([1], [field_1])
    classes = decide_classes(id_grid, pred, shared, grid, np.random.SeedSequence(0))
    assert np.bincount(classes.ravel()[field_1], minlength=32).argmax() == 5
    assert (classes[:, :30] == 5).all()  # made pure: 35 % noise of class 7 plus the shared 40 % would have won
    assert (classes[:, 30:] == 7).all()  # the neighbour's pixels are left alone


def test_field_votes_count_every_pixel_centre_of_overlapping_fields(tmp_path: Path) -> None:
    """The independent check against brute force (shapely point-in-polygon on every pixel centre) on fields a
    generator picks: rotated rectangles overlapping at random, exact duplicates, a field inside another, a field
    shifted over its copy, and a sliver holding no pixel centre."""
    rng = np.random.default_rng(3)
    height, width = 60, 80
    transform = rasterio.transform.from_origin(2.0, 50.0, PIXEL_SIZE_DEG, PIXEL_SIZE_DEG)
    bands = rng.integers(12, 97, size=(10, height, width), dtype=np.int16)
    bands[2] = rng.integers(0, 4, size=(height, width))  # few classes: contested majorities
    profile = {"driver": "GTiff", "count": 10, "dtype": "int16", "crs": "EPSG:4326", "transform": transform}
    with rasterio.open(tmp_path / "r.tif", "w", width=width, height=height, **profile) as dst:
        dst.write(bands)
    geoms = _random_rectangles(rng, 30, width, height, transform)
    shifted = shapely.affinity.translate(geoms[3], xoff=3 * PIXEL_SIZE_DEG)
    sliver = shapely.box(*(transform * (10.55, 20.2)), *(transform * (10.95, 22.8)))  # between two centre columns
    geoms = np.array([*geoms, geoms[0], geoms[1], shapely.affinity.scale(geoms[2], 0.5, 0.5), shifted, sliver])
    n = len(geoms)
    table = pd.DataFrame(
        {"field_id": [f"f{i}" for i in range(n)], "area_m2": 1.0, "normalized_label": "wheat_winter", "year": GT_YEAR}
    )
    pyogrio.write_dataframe(geopandas.GeoDataFrame(table, geometry=geoms, crs="EPSG:4326"), tmp_path / "f.gpkg")

    votes = field_votes(tmp_path / "r.tif", tmp_path / "f.gpkg")

    rows, cols = np.mgrid[0:height, 0:width]
    x, y = transform * (cols + 0.5, rows + 0.5)
    inside = np.stack([shapely.contains_xy(g, x, y) for g in geoms])
    n_pixels = inside.sum(axis=(1, 2))
    counts = np.stack([np.bincount(bands[2][m], minlength=32) for m in inside])
    centre = n_pixels > 0
    assert (votes["pixel_rule"] == np.where(centre, "centre", "all_touched")).all() and (~centre).sum() == 1
    np.testing.assert_array_equal(votes["n_pixels"][centre], n_pixels[centre])
    np.testing.assert_array_equal(votes["majority"][centre], counts.argmax(axis=1)[centre])
    confidence = [bands[3][m].mean() for m in inside[centre]]
    np.testing.assert_allclose(votes["confidence"][centre], confidence)
    shared = (inside & (inside.sum(axis=0) > 1)).sum(axis=(1, 2))
    np.testing.assert_array_equal(votes["n_shared_pixels"], shared)
    assert (shared == n_pixels)[[0, 1, n - 5, n - 4, n - 3]].all() and (shared > 0).sum() >= 12
    # one zone grid burnt in file order: the last field holding a pixel centre keeps it (rasterio's own burn)
    one_grid = rasterio.features.rasterize(zip(geoms, range(1, n + 1), strict=True), out_shape=(height, width),
                                           transform=transform, dtype="int32")  # fmt: skip
    last_holder = np.where(inside.any(axis=0), np.argmax(inside[::-1], axis=0), -1)
    np.testing.assert_array_equal(one_grid, np.where(last_holder >= 0, n - last_holder, 0))
    np.testing.assert_array_equal(votes["n_single_grid_pixels"], np.bincount(one_grid.ravel(), minlength=n + 1)[1:])
    assert (votes["n_single_grid_pixels"] == 0)[[0, 1]].all()  # their later copies take every pixel


def _random_rectangles(
    rng: np.random.Generator, n: int, width: int, height: int, transform: rasterio.Affine
) -> list[shapely.Polygon]:
    """n rotated rectangles (2-7 pixels half-sides) inside the raster, in lon/lat."""
    shapes = []
    for _ in range(n):
        centre = rng.uniform([9, 9], [width - 9, height - 9])
        half = rng.uniform(2.0, 7.0, 2)
        angle = rng.uniform(0, np.pi)
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * half @ rotation + centre
        shapes.append(shapely.Polygon(np.column_stack(transform * corners.T)))
    return shapes


# --- the other bands -----------------------------------------------------------------------------------------------


def test_bands_vary_where_the_real_ones_do(twin) -> None:
    with rasterio.open(reference("real_clip/u0c_clip.tif")) as real:
        real_bands = real.read()
    with rasterio.open(twin.raster) as src:
        ours = src.read(window=rasterio.windows.Window(300, 300, 328, 240))
    for band in range(10):
        assert (ours[band].std() > 0) == (real_bands[band].std() > 0), band + 1
        low, high = real_bands[band].min(), real_bands[band].max()
        span = max(high - low, 1)
        assert low - 0.1 * span <= ours[band].min() and ours[band].max() <= high + 0.1 * span, band + 1


def test_band_values_are_plausible(twin) -> None:
    with rasterio.open(twin.raster) as src:
        bands = src.read(window=rasterio.windows.Window(0, 0, src.width, 200)).astype(np.int64)
    assert (bands[0] == 0).all()
    assert bands[2].min() >= 0 and bands[2].max() <= 31
    assert bands[3].min() >= 12 and bands[3].max() <= 97
    for band in (4, 5, 8, 9):
        assert bands[band].min() >= 18620 and bands[band].max() <= 18632
    assert set(np.unique(bands[6])) <= set(range(8)) and np.isin([0, 1], bands[6]).all()
    assert (bands[7] > bands[3]).mean() > 0.5  # second-cycle confidence: no top-2 margin


# --- parameters against the reference files ------------------------------------------------------------------------


def test_constants_transcribe_the_reference_files() -> None:
    csv = pd.read_csv(reference("u0c_field_confusion_counts.csv"), index_col=0)
    assert list(csv.index) == list(CROP_NAMES) == list(csv.columns)
    np.testing.assert_array_equal(csv.to_numpy(), REAL)
    calibration = json.loads(reference("u0c_calibration.json").read_text())
    for entry in calibration["classes"]:
        assert MEDIAN_PX_UTM[entry["crop"]] == entry["median_px"]
        right = entry["mode_conf_when_right"]
        if right is not None and not math.isnan(right):
            assert CONF_WHEN_RIGHT[entry["crop"]] == right
        assert CONF_WHEN_WRONG[entry["crop"]] == entry["mode_conf_when_wrong"]
    assert list(FIELD_SIZE_QUANTILES_UTM_PX.values()) == list(calibration["field_pixel_count_quantiles"].values())


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40), st.integers(0, 50_000))
def test_apportion_keeps_the_total_and_stays_within_one(weights: list[int], total: int) -> None:
    counts = apportion(np.array(weights), total)
    if sum(weights) == 0:
        assert counts.sum() == 0
        return
    assert counts.sum() == total
    exact = np.array(weights) / sum(weights) * total
    assert (np.abs(counts - exact) < 1).all()


# --- API -----------------------------------------------------------------------------------------------------------


def test_ensure_twin_builds_once_then_reuses(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "twin"
    first = ensure_twin(target, scale=1 / 64, seed=4)
    stamp = first.raster.stat().st_mtime_ns
    second = ensure_twin(target, scale=1 / 64, seed=4)
    assert second == first and second.raster.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in target.parent.iterdir()) == ["twin"]  # no staging directory left behind


def test_default_twin_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CROPMON_DATA_DIR", str(tmp_path / "data"))
    assert default_twin_dir() == tmp_path / "data"
    monkeypatch.delenv("CROPMON_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_twin_dir() == tmp_path / "xdg" / "cropmon" / twin_cache_dir().name
    assert twin_cache_dir().name.endswith("-scale1-seed0")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": 0},
        {"scale": 1e-5},
        {"compress": "zstd"},
        {"seed": -1},
        {"quality": {"Wheat": 0.9}},
        {"quality": {"Rice": 0.9}},
        {"quality": {"Canola": 1.2}},
        {"quality": -1.0},
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        make_twin(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_a_failed_build_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cropmon.twin.write_raster", broken_disk)
    with pytest.raises(OSError, match="No space"):
        make_twin(tmp_path / "t", scale=1 / 64)
    assert list((tmp_path / "t").iterdir()) == []


def test_compressed_twin_holds_the_same_pixels(tmp_path: Path) -> None:
    plain = make_twin(tmp_path / "plain", scale=1 / 64, seed=5)
    packed = make_twin(tmp_path / "packed", scale=1 / 64, seed=5, compress="deflate")
    with rasterio.open(plain.raster) as a, rasterio.open(packed.raster) as b:
        assert b.compression.value == "DEFLATE" and b.block_shapes[0] == (1, b.width)
        np.testing.assert_array_equal(a.read(), b.read())


def test_progress_is_monotone_and_ends_done(tmp_path: Path) -> None:
    calls: list[tuple[str, float]] = []
    make_twin(tmp_path / "p", scale=1 / 64, progress=lambda step, fraction: calls.append((step, fraction)))
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and calls[-1] == ("done", 1.0)
    assert {"landscape", "fields", "raster"} <= {step for step, _ in calls}


# --- full scale ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_twin_has_the_real_counts_and_traps(tmp_path: Path) -> None:
    paths = make_twin(tmp_path / "full", scale=1.0, seed=0)
    votes = field_votes(paths.raster, paths.fields)
    plan = overlap_plan(1.0)
    assert len(votes) == REAL.sum() + 2
    centre = votes["pixel_rule"] == "centre"
    assert (~centre).sum() == plan.no_centre == 67
    assert ((votes["n_single_grid_pixels"] == 0) & centre).sum() == plan.covered == 138
    assert (votes["n_single_grid_pixels"] == 0).sum() == 205  # the real ~205 fields empty in one zone grid
    assert votes["overlaps"].sum() == 2 * (plan.covered + plan.partial_pairs)
    table = agreement_by_crop(votes)
    np.testing.assert_array_equal(table["num_fields"], REAL.sum(axis=1)[[CLASS_IDS[c] for c in table.index]])
    assert votes["match"].mean() == pytest.approx(REAL_OVERALL_AGREEMENT, abs=0.001)
    for crop, row in table.iterrows():
        assert row["agreement"] == pytest.approx(REAL_AGREEMENT[CLASS_IDS[crop]], abs=0.001), crop
