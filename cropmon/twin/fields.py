"""The twin's ground truth: which parcels are GT fields, the no-pixel-centre slivers, labels, ids and the GeoPackage.

Fields are a size-weighted sample of farmland parcels, so their size distribution follows the real one whatever
the landscape's; crops go to fields by rank-matching sizes, so each crop keeps its real median size. Every random
draw here comes from the geometry stream: changing the model's quality never changes a field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import rasterio.features
import shapely
from rasterio.transform import Affine

from cropmon.errors import ConfigError
from cropmon.labels import CROP_NAMES, LABELS_DICT, N_CLASSES
from cropmon.quotas import apportion
from cropmon.twin.landscape import (
    COORD_DECIMALS,
    FARMLAND,
    Landscape,
    TwinGrid,
    to_metric,
    transform_geometries,
)
from cropmon.twin.params import (
    ALIAS_SHARES,
    FIELD_SIZE_QUANTILES_UTM_PX,
    GT_LAYER,
    GT_YEAR,
    MAX_FIELD_AREA_M2,
    MEDIAN_PX_UTM,
    N_RADISH_FIELDS,
    NO_CENTRE_FIELDS_AT_SCALE_1,
    PIXEL_SIZE_DEG,
    REAL_FIELD_CONFUSION,
    UTM_PX_AREA_M2,
)

logger = logging.getLogger(__name__)

RADISH = -1  # crop code of the fields labelled `radish` (in no class)
SMALLEST_FIELD_UTM_PX = 1.5  # lower end of the size distribution (below the real p1 of 4 px)
SIZE_BINS = 96  # log-spaced area bins of the size-weighted sample
MEDIAN_FIT_ROUNDS = 12  # rounds of the per-crop size-shift fit
# Slivers: kept this far (pixels) inside the cell between four pixel centres, so rounding to 6 decimals
# (< 0.004 px) can never bring a centre inside.
SLIVER_MARGIN_PX = 0.06
GT_CLEARANCE_DEG = 1e-5  # ~1 m: a sliver never touches a regular field
FALLBACK_WEIGHT = 1e-9  # selection weight of parcels outside GT farmland (only used when nothing else is left)
GPKG_TIMESTAMP = "2022-12-31T00:00:00.000Z"


@dataclass(frozen=True)
class GroundTruth:
    """The GT fields in file order: regular fields (parcels) first drawn, then shuffled together with slivers."""

    wkb: np.ndarray  # WKB Polygons, EPSG:4326, rounded to 6 decimals
    parcel: np.ndarray  # int64 id-grid value of each field (slivers get ids after the last parcel)
    crop: np.ndarray  # int16 GT class id; RADISH for the radish fields
    label: np.ndarray  # normalized_label strings
    field_id: np.ndarray  # uuid4 strings
    area_m2: np.ndarray  # float64, EPSG:3035 area of the written geometry
    is_sliver: np.ndarray  # bool: no pixel centre inside (all-touched only)


def crop_field_counts(scale: float) -> np.ndarray:
    """Fields per GT crop at `scale`: the real row sums (exactly at scale 1), apportioned by largest remainder."""
    real = np.asarray(REAL_FIELD_CONFUSION).sum(axis=1)
    return apportion(real, round(real.sum() * scale))


def no_centre_field_count(scale: float) -> int:
    """How many fields hold no pixel centre (the all-touched trap): ~188 at scale 1, proportionally fewer below."""
    return round(NO_CENTRE_FIELDS_AT_SCALE_1 * scale)


def build_ground_truth(
    landscape: Landscape, id_grid: np.ndarray, grid: TwinGrid, scale: float, rng: np.random.Generator
) -> GroundTruth:
    """Pick the GT parcels, add the slivers, label everything; burns the slivers' touched pixels into id_grid."""
    counts = crop_field_counts(scale)
    n_slivers = no_centre_field_count(scale)
    n_regular = int(counts.sum()) + N_RADISH_FIELDS - n_slivers
    centre_px = np.bincount(id_grid.ravel(), minlength=len(landscape.wkb) + 1)[1:]
    parcels = select_parcels(landscape, centre_px, n_regular, rng)
    is_gt = np.zeros(len(landscape.wkb) + 1, dtype=bool)
    is_gt[parcels + 1] = True
    sliver_wkb = make_slivers(landscape, is_gt, id_grid, grid, n_slivers, rng)
    sliver_ids = np.arange(len(sliver_wkb)) + len(landscape.wkb) + 1
    burn_touched(sliver_wkb, sliver_ids, id_grid, grid)

    wkb = np.concatenate([landscape.wkb[parcels], sliver_wkb])
    grid_id = np.concatenate([parcels + 1, sliver_ids])
    area = field_areas(wkb)
    is_sliver = np.arange(len(wkb)) >= len(parcels)
    crop = np.full(len(wkb), RADISH, dtype=np.int16)
    labelled = np.ones(len(wkb), dtype=bool)
    labelled[rng.choice(len(parcels), N_RADISH_FIELDS, replace=False)] = False
    crop[labelled] = assign_crops(area[labelled], counts, rng)
    label = assign_aliases(crop, rng)
    order = rng.permutation(len(wkb))  # file order carries no spatial locality, like a uuid-keyed export
    field_id = random_uuid4(len(wkb), rng)
    logger.info("ground truth: %d fields (%d slivers, %d radish)", len(wkb), is_sliver.sum(), N_RADISH_FIELDS)
    return GroundTruth(wkb[order], grid_id[order], crop[order], label[order], field_id, area[order], is_sliver[order])


def target_size_cdf(area_m2: np.ndarray) -> np.ndarray:
    """The real field-size distribution (piecewise linear in UTM pixels between the published quantiles)."""
    px = [SMALLEST_FIELD_UTM_PX, *FIELD_SIZE_QUANTILES_UTM_PX.values()]
    q = [0.0, *FIELD_SIZE_QUANTILES_UTM_PX]
    return np.interp(np.asarray(area_m2) / UTM_PX_AREA_M2, px, q)


def target_size_quantile(q: np.ndarray) -> np.ndarray:
    """Inverse of target_size_cdf, in m2."""
    px = [SMALLEST_FIELD_UTM_PX, *FIELD_SIZE_QUANTILES_UTM_PX.values()]
    return np.interp(q, [0.0, *FIELD_SIZE_QUANTILES_UTM_PX], px) * UTM_PX_AREA_M2


def select_parcels(landscape: Landscape, centre_px: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Size-weighted sample of n parcels (sequential Poisson sampling: exact n, inclusion ~ p).

    Farmland parcels of GT blocks are weighted by their block's propensity; any other parcel holding a pixel centre
    keeps a negligible weight, so it is only taken when a tiny twin has too few farmland parcels.
    """
    area = landscape.area_m2
    propensity = landscape.block_gt_propensity[landscape.parcel_block]
    eligible = (centre_px > 0) & (area <= MAX_FIELD_AREA_M2)
    if eligible.sum() < n:
        raise ConfigError(f"the twin's window holds {eligible.sum()} parcels for {n} fields", fix="use a larger scale")
    farmland = landscape.block_kind[landscape.parcel_block] == FARMLAND
    weight = np.where(eligible, np.where(farmland & (propensity > 0), propensity, FALLBACK_WEIGHT), 0.0)
    edges = np.geomspace(SMALLEST_FIELD_UTM_PX * UTM_PX_AREA_M2 / 2, MAX_FIELD_AREA_M2, SIZE_BINS + 1)
    target_share = np.diff(target_size_cdf(edges))
    size_bin = np.clip(np.searchsorted(edges, area, side="right") - 1, 0, SIZE_BINS - 1)
    bin_weight = np.bincount(size_bin, weights=weight, minlength=SIZE_BINS)
    p = n * target_share[size_bin] * weight / np.maximum(bin_weight[size_bin], 1e-300)
    logger.debug("size-weighted sample: %d parcels capped at p=1 (too few of their size)", (p > 1).sum())
    key = np.where(eligible, rng.random(len(p)) / np.maximum(p, 1e-300), np.inf)
    return np.sort(np.argpartition(key, n - 1)[:n])


def assign_crops(area_m2: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop per field: exact counts per crop, sizes rank-matched so each crop lands near its real median size."""
    crops = np.repeat(np.arange(N_CLASSES), counts)
    u = (np.arange(len(crops)) + rng.random(len(crops))) / len(crops)
    u = rng.permutation(u)  # a stratified uniform draw per field-to-be
    wanted = np.array([MEDIAN_PX_UTM.get(name, 46.0) for name in CROP_NAMES]) * UTM_PX_AREA_M2
    base = np.log(target_size_quantile(u))
    shift = np.log(wanted / np.median(target_size_quantile(u)))
    size_order = np.argsort(area_m2, kind="stable")
    assigned = np.empty(len(crops), dtype=np.int16)
    for _ in range(MEDIAN_FIT_ROUNDS):
        assigned[size_order] = crops[np.argsort(base + shift[crops], kind="stable")]
        achieved = pd.Series(area_m2).groupby(assigned).median()
        present = achieved.index.to_numpy()
        shift[present] += 0.7 * np.log(wanted[present] / achieved.to_numpy())
    return assigned


def assign_aliases(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """normalized_label per field: the crop's aliases in the documented split (every alias used when possible)."""
    label = np.full(len(crop), "radish", dtype=object)
    for class_id, name in enumerate(CROP_NAMES):
        fields = rng.permutation(np.flatnonzero(crop == class_id))
        if fields.size == 0:
            continue
        shares = ALIAS_SHARES.get(name, {LABELS_DICT[name][0]: 1.0})
        per_alias = apportion(np.array(list(shares.values())), fields.size, at_least_one=True)
        label[fields] = np.repeat(np.array(list(shares), dtype=object), per_alias)
    return label


def random_uuid4(n: int, rng: np.random.Generator) -> np.ndarray:
    """n uuid4 strings from the seeded generator (uuid.uuid4() would break determinism)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexes = [row.tobytes().hex() for row in raw]
    return np.array([f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes], dtype=object)


def field_areas(wkb: np.ndarray) -> np.ndarray:
    """Equal-area (EPSG:3035) m2 of the written, rounded geometries; matches geodesic areas within 0.01 %."""
    return shapely.area(transform_geometries(shapely.from_wkb(wkb), to_metric()))


def make_slivers(
    landscape: Landscape, is_gt: np.ndarray, id_grid: np.ndarray, grid: TwinGrid, n: int, rng: np.random.Generator
) -> np.ndarray:
    """n thin strips / tiny plots that hold no pixel centre, touch only non-GT pixels and clear every GT field."""
    flat_ids = id_grid.reshape(-1)
    used: set[int] = set()
    slivers: list[bytes] = []
    while len(slivers) < n:
        poly = _sliver_candidate(grid, rng)
        touched = _touched_pixels(poly, grid, all_touched=True)
        if _touched_pixels(poly, grid, all_touched=False).size or touched.size == 0:
            continue  # rounding or the shape put a pixel centre inside: not a sliver
        if is_gt[flat_ids[touched]].any() or used.intersection(touched.tolist()):
            continue
        if _near_gt_field(poly, int(touched[0]), landscape, is_gt, id_grid):
            continue
        used.update(touched.tolist())
        slivers.append(shapely.to_wkb(poly))
    return np.array(slivers, dtype=object)


def _sliver_candidate(grid: TwinGrid, rng: np.random.Generator) -> shapely.Polygon:
    """A thin strip between two rows (or columns) of pixel centres, or a tiny plot between four centres."""
    centre = np.array([rng.integers(4, grid.width - 12), rng.integers(4, grid.height - 12)]) + 0.5
    kind = rng.choice(3, p=[0.35, 0.35, 0.3])
    shape = _tiny_plot(rng) if kind == 2 else _thin_strip(rng, across_columns=kind == 1)
    lonlat = np.round(_pixel_to_lonlat(shapely.get_coordinates(shape) + centre, grid.transform), COORD_DECIMALS)
    return shapely.normalize(shapely.set_coordinates(shape, lonlat))


def _thin_strip(rng: np.random.Generator, *, across_columns: bool) -> shapely.Polygon:
    """A slanted strip 0.15-0.45 px thick whose long edges stay strictly between two lines of centres (y=0, y=1)."""
    m = SLIVER_MARGIN_PX
    thickness = rng.uniform(0.15, 0.45)
    length = rng.uniform(1.2, 5.0)
    y_left, y_right = rng.uniform(m, 1 - m - thickness, 2)
    x = rng.uniform(0.0, 1.0)
    xy = np.array([(x, y_left), (x + length, y_right), (x + length, y_right + thickness), (x, y_left + thickness)])
    return shapely.Polygon(xy[:, ::-1] if across_columns else xy)


def _tiny_plot(rng: np.random.Generator) -> shapely.Polygon:
    """A rotated rectangle cut to the square between four centres (0..1 x 0..1, minus the margin)."""
    m = SLIVER_MARGIN_PX
    half = rng.uniform(0.15, 0.5, 2)
    angle = rng.uniform(0, np.pi)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * half
    rectangle = shapely.Polygon(corners @ rotation + rng.uniform(0.3, 0.7, 2))
    return shapely.intersection(rectangle, shapely.box(m, m, 1 - m, 1 - m))


def _pixel_to_lonlat(xy: np.ndarray, transform: Affine) -> np.ndarray:
    """(col, row) pixel coordinates -> (lon, lat)."""
    return np.column_stack([transform.c + xy[:, 0] * transform.a, transform.f + xy[:, 1] * transform.e])


def _touched_pixels(poly: shapely.Polygon, grid: TwinGrid, *, all_touched: bool) -> np.ndarray:
    """Flat indices of the pixels a polygon burns (rasterio's own rule, as the engine will use), in a small window."""
    west, south, east, north = shapely.bounds(poly)
    r0 = int(np.floor((grid.transform.f - north) / PIXEL_SIZE_DEG)) - 1
    r1 = int(np.floor((grid.transform.f - south) / PIXEL_SIZE_DEG)) + 2
    c0 = int(np.floor((west - grid.transform.c) / PIXEL_SIZE_DEG)) - 1
    c1 = int(np.floor((east - grid.transform.c) / PIXEL_SIZE_DEG)) + 2
    burnt = rasterio.features.rasterize(
        [(poly, 1)],
        out_shape=(r1 - r0, c1 - c0),
        transform=grid.transform * Affine.translation(c0, r0),
        all_touched=all_touched,
    )
    rows, cols = np.nonzero(burnt)
    return (rows + r0) * grid.width + cols + c0


def _near_gt_field(
    poly: shapely.Polygon, pixel: int, landscape: Landscape, is_gt: np.ndarray, id_grid: np.ndarray
) -> bool:
    """Whether the sliver comes within ~1 m of a GT field with pixel centres around it."""
    row, col = divmod(pixel, id_grid.shape[1])
    around = id_grid[max(row - 8, 0) : row + 16, max(col - 8, 0) : col + 16]
    near = np.unique(around[is_gt[around]]) - 1
    if near.size == 0:
        return False
    return bool(shapely.dwithin(landscape.geometries(near), poly, GT_CLEARANCE_DEG).any())


def burn_touched(wkb: np.ndarray, ids: np.ndarray, id_grid: np.ndarray, grid: TwinGrid) -> None:
    """Write each sliver's id on the pixels it touches (they hold no GT pixel centre, so no vote moves)."""
    flat_ids = id_grid.reshape(-1)
    for blob, value in zip(wkb, ids, strict=True):
        flat_ids[_touched_pixels(shapely.from_wkb(blob), grid, all_touched=True)] = value


def write_fields(gt: GroundTruth, path: Path) -> None:
    """The real GeoPackage layout: one layer, geometry column `geom`, Polygon, EPSG:4326, four columns.

    OGR_CURRENT_DATE pins the timestamp GDAL writes into gpkg_contents, so the same seed gives the same bytes.
    """
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
    try:
        pyogrio.raw.write(
            str(path),
            geometry=gt.wkb,
            field_data=[gt.field_id, gt.area_m2, gt.label, np.full(len(gt.wkb), GT_YEAR, dtype=np.int64)],
            fields=["field_id", "area_m2", "normalized_label", "year"],
            layer=GT_LAYER,
            driver="GPKG",
            geometry_type="Polygon",
            crs="EPSG:4326",
        )
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})
