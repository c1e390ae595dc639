"""The twin's ground truth: which parcels are GT fields, the overlapping and covered fields, the no-pixel-centre
slivers, labels, ids and the GeoPackage.

Fields are a size-weighted sample of farmland parcels, so their size distribution follows the real one whatever
the landscape's; crops go to fields by rank-matching sizes, so each crop keeps its real median size. Like the real
export, the ground truth is not topologically clean (issue 13): some fields are exact duplicates of another field
(a new field_id, the same or another label), some lie inside a larger field, some pairs of neighbours share a strip
of pixel centres (overlaps.py), and a few slivers and tiny plots hold no pixel centre at all. Every random draw here
comes from the geometry stream: changing the model's quality never changes a field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pyogrio
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
    burnt_pixels,
    to_metric,
    transform_geometries,
)
from cropmon.twin.overlaps import (
    ParcelSelection,
    SharedPixels,
    make_contained,
    make_strips,
    size_biased_order,
)
from cropmon.twin.params import (
    ALIAS_SHARES,
    COVERED_FIELD_MIX,
    COVERED_FIELDS_AT_SCALE_1,
    FIELD_SIZE_QUANTILES_UTM_PX,
    GT_LAYER,
    GT_YEAR,
    MAX_FIELD_AREA_M2,
    MEDIAN_PX_UTM,
    N_RADISH_FIELDS,
    NO_CENTRE_FIELDS_AT_SCALE_1,
    NO_CENTRE_REMNANT_SHARE,
    PARTIAL_OVERLAP_PAIRS_AT_SCALE_1,
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
MIN_DUPLICATED_CROP_FIELDS = 20  # crops with fewer fields (at this scale) get no duplicates
GPKG_TIMESTAMP = "2022-12-31T00:00:00.000Z"


@dataclass(frozen=True)
class OverlapPlan:
    """How many fields of each overlapping kind a twin carries."""

    same_label_duplicates: int
    other_label_duplicates: int
    contained: int
    partial_pairs: int
    no_centre: int

    @property
    def duplicates(self) -> int:
        """Exact copies of another field's polygon."""
        return self.same_label_duplicates + self.other_label_duplicates

    @property
    def covered(self) -> int:
        """Fields whose every pixel centre is also another field's (a duplicate or a field inside another)."""
        return self.duplicates + self.contained


@dataclass(frozen=True)
class GroundTruth:
    """The GT fields in file order (a shuffle in which every container comes after the field lying inside it)."""

    wkb: np.ndarray  # WKB Polygons, EPSG:4326, rounded to 6 decimals
    parcel: np.ndarray  # int64 id-grid value of the field's own pixels (a duplicate: its original's)
    crop: np.ndarray  # int16 GT class id; RADISH for the radish fields
    label: np.ndarray  # normalized_label strings
    field_id: np.ndarray  # uuid4 strings
    area_m2: np.ndarray  # float64, EPSG:3035 area of the written geometry
    is_sliver: np.ndarray  # bool: no pixel centre inside (all-touched only)
    original: np.ndarray  # int64 index of the field a duplicate copies; -1 for every other field
    shared: SharedPixels  # fields that also count pixels of another region (containers, fields reaching a neighbour)
    n_ids: int  # id-grid values in use, 0 (roads and hedges) included
    plan: OverlapPlan


def crop_field_counts(scale: float) -> np.ndarray:
    """Fields per GT crop at `scale`: the real row sums (exactly at scale 1), apportioned by largest remainder."""
    real = np.asarray(REAL_FIELD_CONFUSION).sum(axis=1)
    return apportion(real, round(real.sum() * scale))


def no_centre_field_count(scale: float) -> int:
    """How many fields hold no pixel centre (the all-touched trap): 67 at scale 1, proportionally fewer below."""
    return round(NO_CENTRE_FIELDS_AT_SCALE_1 * scale)


def no_centre_crop_counts(scale: float) -> np.ndarray:
    """No-centre fields per GT crop: remnants of split fields follow every crop's field count, tiny plots follow
    each crop's count of fields below the real p1 size (its size distribution shifted to its own median)."""
    fields = np.asarray(REAL_FIELD_CONFUSION, dtype=np.float64).sum(axis=1)
    median_px = np.array([MEDIAN_PX_UTM.get(name, np.inf) for name in CROP_NAMES])
    overall_median_px = FIELD_SIZE_QUANTILES_UTM_PX[0.50]
    p1_px = FIELD_SIZE_QUANTILES_UTM_PX[0.01]
    tiny = fields * target_size_cdf(p1_px * overall_median_px / median_px * UTM_PX_AREA_M2)
    weights = NO_CENTRE_REMNANT_SHARE * fields / fields.sum() + (1 - NO_CENTRE_REMNANT_SHARE) * tiny / tiny.sum()
    return apportion(weights, no_centre_field_count(scale))


def overlap_plan(scale: float) -> OverlapPlan:
    """The overlapping fields of a twin of `scale`: the issue-13 figures at scale 1, proportionally fewer below."""
    covered = apportion(np.array(list(COVERED_FIELD_MIX.values())), round(COVERED_FIELDS_AT_SCALE_1 * scale))
    by_kind = dict(zip(COVERED_FIELD_MIX, covered.tolist(), strict=True))
    return OverlapPlan(
        same_label_duplicates=by_kind["same_label_duplicate"],
        other_label_duplicates=by_kind["other_label_duplicate"],
        contained=by_kind["contained"],
        partial_pairs=round(PARTIAL_OVERLAP_PAIRS_AT_SCALE_1 * scale),
        no_centre=no_centre_field_count(scale),
    )


def build_ground_truth(
    landscape: Landscape, id_grid: np.ndarray, grid: TwinGrid, scale: float, rng: np.random.Generator
) -> GroundTruth:
    """Pick the GT parcels, nest, overlap, duplicate, add the slivers and label everything.

    Edits id_grid: contained fields get regions of their own, reaching fields take the hedge pixels they cover,
    slivers' touched pixels get the slivers' ids.
    """
    plan = overlap_plan(scale)
    counts = crop_field_counts(scale)
    n_parcels = int(counts.sum()) + N_RADISH_FIELDS - plan.no_centre - plan.covered
    centre_px = np.bincount(id_grid.ravel(), minlength=len(landscape.wkb) + 1)
    parcels = select_parcels(landscape, centre_px[1:], n_parcels, rng)
    selection = ParcelSelection(landscape.wkb[parcels], parcels + 1, centre_px[parcels + 1], np.zeros(n_parcels, bool))
    first_part_id = len(landscape.wkb) + 1
    parts = make_contained(selection, id_grid, grid, plan.contained, first_part_id, rng)
    reaching = make_strips(selection, id_grid, grid, plan.partial_pairs, rng)
    wkb, region = np.concatenate([selection.wkb, parts.wkb]), np.concatenate([selection.region, parts.region])

    first_sliver_id = first_part_id + plan.contained
    is_gt = np.zeros(first_sliver_id, dtype=bool)
    is_gt[region] = True
    sliver_wkb = make_slivers(shapely.STRtree(shapely.from_wkb(wkb)), is_gt, id_grid, grid, plan.no_centre, rng)
    sliver_region = np.arange(plan.no_centre) + first_sliver_id
    burn_touched(sliver_wkb, sliver_region, id_grid, grid)

    area = field_areas(wkb)
    crop, originals, duplicate_crop, sliver_crop = _crops(area, selection.busy, counts, plan, scale, rng)
    fields = _Assembled(
        wkb=np.concatenate([wkb, wkb[originals], sliver_wkb]),
        region=np.concatenate([region, region[originals], sliver_region]),
        crop=np.concatenate([crop, duplicate_crop, sliver_crop]).astype(np.int16),
        area=np.concatenate([area, area[originals], field_areas(sliver_wkb)]),
        original=np.concatenate([np.full(len(wkb), -1), originals, np.full(plan.no_centre, -1)]).astype(np.int64),
    )
    label = _labels(fields.crop, fields.original, rng)
    order = file_order(len(fields.wkb), parts.container, n_parcels + np.arange(plan.contained), rng)
    position = np.argsort(order)
    original = np.where(fields.original >= 0, position[np.maximum(fields.original, 0)], -1)
    field_id = random_uuid4(len(fields.wkb), rng)
    is_sliver = np.arange(len(fields.wkb)) >= len(fields.wkb) - plan.no_centre
    shared = SharedPixels.joined(parts.containers, reaching)
    logger.info(
        "ground truth: %d fields (%d duplicates, %d inside another, %d neighbour pairs sharing pixels, %d slivers, "
        "%d radish)",
        len(fields.wkb), plan.duplicates, plan.contained, plan.partial_pairs, plan.no_centre, N_RADISH_FIELDS,
    )  # fmt: skip
    return GroundTruth(
        wkb=fields.wkb[order],
        parcel=fields.region[order],
        crop=fields.crop[order],
        label=label[order],
        field_id=field_id,
        area_m2=fields.area[order],
        is_sliver=is_sliver[order],
        original=original[order],
        shared=shared,
        n_ids=first_sliver_id + plan.no_centre,
        plan=plan,
    )


@dataclass(frozen=True)
class _Assembled:
    """Every field in build order: parcels, contained parts, duplicates, slivers."""

    wkb: np.ndarray
    region: np.ndarray
    crop: np.ndarray
    area: np.ndarray
    original: np.ndarray


def _crops(
    area: np.ndarray, busy: np.ndarray, counts: np.ndarray, plan: OverlapPlan, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crops of the parcels and parts (rank-matched by size), the duplicates' originals and crops, the slivers' crops.

    The slivers' and the duplicates' crops are set aside first, so every crop keeps its exact field count.
    """
    n_parcels = len(busy)
    sliver_crop = rng.permutation(np.repeat(np.arange(N_CLASSES), no_centre_crop_counts(scale)))
    not_slivers = counts - np.bincount(sliver_crop, minlength=N_CLASSES)
    original_crop, duplicate_crop = duplicate_crops(plan, not_slivers, rng)
    radish = rng.choice(np.flatnonzero(~busy), N_RADISH_FIELDS, replace=False)
    crop = np.full(len(area), RADISH, dtype=np.int16)
    labelled = np.ones(len(area), dtype=bool)
    labelled[radish] = False
    ranked_counts = not_slivers - np.bincount(duplicate_crop, minlength=N_CLASSES)
    crop[labelled] = assign_crops(area[labelled], ranked_counts, rng)
    free = np.zeros(len(area), dtype=bool)
    free[:n_parcels] = ~busy
    free[radish] = False
    originals = pick_originals(crop, area, free, original_crop, rng)
    return crop, originals, duplicate_crop, sliver_crop


def duplicate_crops(plan: OverlapPlan, capacity: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(original's crop, duplicate's crop) of each duplicate: same-label ones first, then other-label ones.

    Same label: crops in proportion to their field counts. Another label: pairs of crops in proportion to how often
    the real model confuses them either way (re-declarations change a crop for a similar one).
    """
    capacity = np.where(capacity >= MIN_DUPLICATED_CROP_FIELDS, capacity, 0).astype(np.float64)
    real = np.asarray(REAL_FIELD_CONFUSION, dtype=np.float64)
    mutual = real + real.T
    np.fill_diagonal(mutual, 0.0)
    pairs = []
    for _ in range(plan.same_label_duplicates):
        crop = rng.choice(N_CLASSES, p=capacity / capacity.sum())
        capacity[crop] -= 2
        pairs.append((crop, crop))
    for _ in range(plan.other_label_duplicates):
        weights = (mutual * (capacity[:, None] >= 1) * (capacity[None, :] >= 1)).ravel()
        original, duplicate = divmod(int(rng.choice(weights.size, p=weights / weights.sum())), N_CLASSES)
        capacity[[original, duplicate]] -= 1
        pairs.append((original, duplicate))
    both = np.array(pairs, dtype=np.int16).reshape(-1, 2)
    return both[:, 0], both[:, 1]


def pick_originals(
    crop: np.ndarray, area: np.ndarray, free: np.ndarray, wanted_crop: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One free field of each wanted crop to be duplicated (never twice), picked in proportion to its area squared
    (params.COVERED_FIELD_MIX says why)."""
    free = free.copy()
    originals = np.empty(len(wanted_crop), dtype=np.int64)
    for k, c in enumerate(wanted_crop):
        candidates = np.flatnonzero(free & (crop == c))
        if candidates.size == 0:
            raise ConfigError(f"no {CROP_NAMES[c]} field left to duplicate", fix="use a larger scale")
        originals[k] = candidates[size_biased_order(area[candidates] ** 2, rng)[0]]
        free[originals[k]] = False
    return originals


def _labels(crop: np.ndarray, original: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """normalized_label per field; a duplicate of its original's crop repeats its original's label exactly."""
    same_label = np.flatnonzero((original >= 0) & (crop == crop[np.maximum(original, 0)]))
    labelled = np.ones(len(crop), dtype=bool)
    labelled[same_label] = False
    label = np.empty(len(crop), dtype=object)
    label[labelled] = assign_aliases(crop[labelled], rng)
    label[same_label] = label[original[same_label]]
    return label


def file_order(n: int, containers: np.ndarray, parts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shuffle (file order carries no spatial locality, like a uuid-keyed export) with every container after the
    part inside it: burnt into one zone grid in file order, the part loses every pixel, as the real ones did."""
    rank = rng.permutation(n)
    late = rank[containers] < rank[parts]
    rank[containers[late]], rank[parts[late]] = rank[parts[late]], rank[containers[late]]
    return np.argsort(rank)


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
    gt_fields: shapely.STRtree, is_gt: np.ndarray, id_grid: np.ndarray, grid: TwinGrid, n: int, rng: np.random.Generator
) -> np.ndarray:
    """n thin strips / tiny plots that hold no pixel centre, touch only non-GT pixels and clear every GT field."""
    used: set[int] = set()
    slivers: list[bytes] = []
    while len(slivers) < n:
        poly = _sliver_candidate(grid, rng)
        touched = burnt_pixels(poly, grid, all_touched=True)
        if burnt_pixels(poly, grid).size or touched.size == 0:
            continue  # rounding or the shape put a pixel centre inside: not a sliver
        if is_gt[id_grid.flat[touched]].any() or used.intersection(touched.tolist()):
            continue
        if gt_fields.query(poly, predicate="dwithin", distance=GT_CLEARANCE_DEG).size:
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
    return cast(shapely.Polygon, shapely.intersection(rectangle, shapely.box(m, m, 1 - m, 1 - m)))  # convex: a polygon


def _pixel_to_lonlat(xy: np.ndarray, transform: Affine) -> np.ndarray:
    """(col, row) pixel coordinates -> (lon, lat)."""
    return np.column_stack([transform.c + xy[:, 0] * transform.a, transform.f + xy[:, 1] * transform.e])


def burn_touched(wkb: np.ndarray, ids: np.ndarray, id_grid: np.ndarray, grid: TwinGrid) -> None:
    """Write each sliver's id on the pixels it touches (they hold no GT pixel centre, so no vote moves)."""
    for blob, value in zip(wkb, ids, strict=True):
        id_grid.flat[burnt_pixels(shapely.from_wkb(blob), grid, all_touched=True)] = value


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
