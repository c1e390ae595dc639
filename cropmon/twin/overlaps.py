"""Fields that overlap other fields, as in the real ground-truth export: parts of a field re-declared inside it, and
neighbours whose outlines reach into each other by a strip of pixel centres. (Exact duplicates need no geometry:
fields.py copies a polygon.)

The model's pixels follow an id grid with one region per pixel: a contained field gets a region of its own, cut
out of its container's (the model sees the part as a plot of its own); a strip stays in the region of the
neighbour it lies in (it is that neighbour's land), and the hedge pixels the reaching field now covers join its
region. A field then counts its own region plus, for a container or a reaching field, pixels of another region
(`SharedPixels`). Every overlap leaves each field more own pixels than shared ones (MAX_SHARED_SHARE), so a field
whose own region is pure wins its vote whatever the model does on the shared pixels: raster.decide_classes relies
on that. Everything random here comes from the geometry stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer

from cropmon.errors import ConfigError
from cropmon.twin.landscape import (
    COORD_DECIMALS,
    MAX_EDGE_LENGTH_M,
    TwinGrid,
    burnt_pixels,
    to_lonlat,
    to_metric,
    transform_geometries,
)
from cropmon.twin.params import MAX_FIELD_AREA_M2

logger = logging.getLogger(__name__)

MAX_SHARED_SHARE = 0.4  # of a field's pixel centres that may also be another field's
MIN_CONTAINER_PX = 12  # pixel centres a container needs for a part of at least one pixel
PART_LENGTH_SHARE = (0.2, 0.5)  # a contained part: this share of its container's length, cut across it
PART_CUT_TILT_RAD = 0.3  # the cut leans up to ~17 degrees from square
PART_MARGIN_M = 1.0  # a part stays ~1 m inside its container (6-decimal rounding moves points < 0.1 m)
STRIP_DEPTH_M = (10.0, 30.0)  # how far past the hedge a field reaches into its neighbour (pixels are 19 x 30 m)
MIN_STRIP_PX = 2  # a strip holds at least this many pixel centres
NEIGHBOUR_DEG = 1.5e-4  # ~11-17 m: parcels across one hedge (hedges are 3-8 m wide)


@dataclass(frozen=True)
class SharedPixels:
    """Fields whose pixel centres reach beyond their own id-grid region, with all their pixel centres."""

    region: np.ndarray  # int64 id-grid value of each such field's own pixels
    offsets: np.ndarray  # int64 (len(region) + 1): field k's centres are pixels[offsets[k]:offsets[k + 1]]
    pixels: np.ndarray  # int64 flat grid indices

    @classmethod
    def of(cls, regions: list[int], pixel_lists: list[np.ndarray]) -> SharedPixels:
        """From one region and one array of flat pixel indices per field."""
        sizes = [len(p) for p in pixel_lists]
        return cls(
            np.asarray(regions, dtype=np.int64),
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            np.concatenate([np.zeros(0, dtype=np.int64), *pixel_lists]).astype(np.int64),
        )

    @classmethod
    def joined(cls, *parts: SharedPixels) -> SharedPixels:
        """The fields of several SharedPixels, in order."""
        sizes = np.concatenate([np.diff(part.offsets) for part in parts])
        return cls(
            np.concatenate([part.region for part in parts]),
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            np.concatenate([part.pixels for part in parts]),
        )

    def owner(self) -> np.ndarray:
        """The field (0..len(region)-1) of each entry of `pixels`."""
        return np.repeat(np.arange(len(self.region)), np.diff(self.offsets))


@dataclass(frozen=True)
class ContainedParts:
    """Fields lying inside a larger GT field, each with its own id-grid region."""

    wkb: np.ndarray  # WKB Polygons, EPSG:4326, rounded
    container: np.ndarray  # int64 index (in the parcel selection) of each part's container
    region: np.ndarray  # int64 id-grid value of each part's pixels
    containers: SharedPixels  # every pixel centre of each container


@dataclass(frozen=True)
class ParcelSelection:
    """The GT parcels being edited: WKB (rewritten in place), id-grid regions, pixel centres, and which are busy
    (already in an overlap: a field takes part in one at most)."""

    wkb: np.ndarray
    region: np.ndarray
    centre_px: np.ndarray
    busy: np.ndarray


def size_biased_order(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of the items, drawn without replacement in proportion to `weights`."""
    return np.argsort(rng.exponential(size=len(weights)) / weights, kind="stable")


def make_contained(
    parcels: ParcelSelection, id_grid: np.ndarray, grid: TwinGrid, n: int, first_id: int, rng: np.random.Generator
) -> ContainedParts:
    """n parts of GT fields (containers picked in proportion to size), each given id first_id + k in id_grid.

    A part is the end of its container cut across at a slant (a split-off piece re-declared while the whole parcel
    stayed in the export), ~1 m inside the container's outline. Marks the containers busy.
    """
    metric, lonlat = to_metric(), to_lonlat()
    wkb, region, centre_px, busy = parcels.wkb, parcels.region, parcels.centre_px, parcels.busy
    parts: list[bytes] = []
    containers, container_pixels = [], []
    candidates = np.flatnonzero(~busy & (centre_px >= MIN_CONTAINER_PX))
    for c in candidates[size_biased_order(centre_px[candidates].astype(np.float64), rng)]:
        if len(parts) == n:
            break
        container = shapely.from_wkb(wkb[c])
        part = _end_part(container, metric, lonlat, rng)
        if part is None:
            continue
        pixels = burnt_pixels(part, grid)
        if not 0 < pixels.size <= MAX_SHARED_SHARE * centre_px[c] or (id_grid.flat[pixels] != region[c]).any():
            continue
        id_grid.flat[pixels] = first_id + len(parts)
        parts.append(shapely.to_wkb(part))
        containers.append(c)
        container_pixels.append(burnt_pixels(container, grid))
        busy[c] = True
    if len(parts) < n:
        raise ConfigError(
            f"the twin's window holds only {len(parts)} fields to nest {n} fields in", fix="use a larger scale"
        )
    containers_arr = np.asarray(containers, dtype=np.int64)
    return ContainedParts(
        np.array(parts, dtype=object),
        containers_arr,
        first_id + np.arange(n, dtype=np.int64),
        SharedPixels.of(region[containers_arr].tolist(), container_pixels),
    )


def _end_part(
    container: shapely.Polygon, metric: Transformer, lonlat: Transformer, rng: np.random.Generator
) -> shapely.Polygon | None:
    """One end of the container, cut across its long axis at a slant, shrunk by PART_MARGIN_M; None if degenerate."""
    shape = transform_geometries(np.array([container]), metric)[0]
    corners = shapely.get_coordinates(shapely.oriented_envelope(shape))[:3]
    sides = np.diff(corners, axis=0)
    along = sides[np.argmax(np.hypot(*sides.T))]
    angle = np.arctan2(along[1], along[0]) + rng.uniform(-PART_CUT_TILT_RAD, PART_CUT_TILT_RAD)
    axis = np.array([np.cos(angle), np.sin(angle)]) * rng.choice([-1.0, 1.0])
    across = np.array([-axis[1], axis[0]])
    position = shapely.get_coordinates(shape) @ axis
    cut = position.min() + rng.uniform(*PART_LENGTH_SHARE) * np.ptp(position)
    far = 10.0 * np.ptp(position) + 1e3
    on_line = shapely.get_coordinates(shapely.centroid(shape))[0] @ np.outer(across, across) + axis * cut
    on_cut, behind = on_line + across * far * np.array([[1.0], [-1.0]]), -axis * far
    keep = shapely.Polygon([on_cut[0], on_cut[1], on_cut[1] + behind, on_cut[0] + behind])  # the side x.axis <= cut
    part = shapely.buffer(shapely.intersection(shape, keep), -PART_MARGIN_M, join_style="mitre")
    if shapely.get_type_id(part) != shapely.GeometryType.POLYGON or part.is_empty:
        return None
    part = transform_geometries(np.array([shapely.segmentize(part, MAX_EDGE_LENGTH_M)]), lonlat, COORD_DECIMALS)[0]
    return part if part.is_valid and shapely.contains_properly(container, part) else None


def make_strips(
    parcels: ParcelSelection, id_grid: np.ndarray, grid: TwinGrid, n: int, rng: np.random.Generator
) -> SharedPixels:
    """n pairs of neighbouring GT fields, the first's outline moved across the hedge into the second; returns
    every pixel centre of each reaching field.

    Rewrites the reaching field's WKB in `parcels.wkb` and gives it the hedge pixels it now covers in id_grid; the
    strip's pixels stay the neighbour's. Each field is in at most one pair (marked busy); the reaching field covers
    no other field and keeps more own pixel centres than shared ones, and so does its neighbour.
    """
    metric, lonlat = to_metric(), to_lonlat()
    wkb, region, centre_px, busy = parcels.wkb, parcels.region, parcels.centre_px, parcels.busy
    geoms = shapely.from_wkb(wkb)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="dwithin", distance=NEIGHBOUR_DEG)
    left, right = left[left < right], right[left < right]
    flip = rng.random(len(left)) < 0.5
    first, second = np.where(flip, right, left), np.where(flip, left, right)
    reaching: list[int] = []
    pixel_lists: list[np.ndarray] = []
    moved: list[shapely.Geometry] = []
    for k in rng.permutation(len(first)):
        if len(reaching) == n:
            break
        a, b = first[k], second[k]
        if busy[a] or busy[b]:
            continue
        grown = _reach_into(geoms[a], geoms[b], metric, lonlat, rng)
        if grown is None or _covers_others(grown, (a, b), tree, moved):
            continue
        pixels = burnt_pixels(grown, grid)
        ids = id_grid.flat[pixels]
        strip = ids == region[b]
        if not np.isin(ids, (0, region[a], region[b])).all() or not _fair_share(strip.sum(), pixels.size, centre_px[b]):
            continue
        id_grid.flat[pixels[ids == 0]] = region[a]
        wkb[a] = shapely.to_wkb(grown)
        busy[[a, b]] = True
        reaching.append(a)
        pixel_lists.append(pixels)
        moved.append(grown)
    if len(reaching) < n:
        raise ConfigError(
            f"the twin's window holds only {len(reaching)} neighbour pairs for {n}", fix="use a larger scale"
        )
    return SharedPixels.of(region[reaching].tolist(), pixel_lists)


def _reach_into(
    field: shapely.Polygon,
    neighbour: shapely.Polygon,
    metric: Transformer,
    lonlat: Transformer,
    rng: np.random.Generator,
) -> shapely.Polygon | None:
    """The field's outline moved across the hedge into its neighbour by STRIP_DEPTH_M (parcels are convex, so the
    convex hull of the field and the neighbour's near strip spans the hedge and nothing else); None if too big."""
    own, other = transform_geometries(np.array([field, neighbour]), metric)
    reach = shapely.distance(own, other) + rng.uniform(*STRIP_DEPTH_M)
    strip = shapely.intersection(shapely.buffer(own, reach, join_style="mitre"), other)
    grown = shapely.segmentize(shapely.convex_hull(shapely.union(own, strip)), MAX_EDGE_LENGTH_M)
    if shapely.area(strip) < 1.0 or shapely.area(grown) > MAX_FIELD_AREA_M2:
        return None
    grown = transform_geometries(np.array([grown]), lonlat, COORD_DECIMALS)[0]
    return grown if grown.is_valid else None


def _covers_others(grown: shapely.Polygon, pair: tuple[int, int], tree: shapely.STRtree, moved: list) -> bool:
    """Whether the grown outline meets a GT field other than its pair, or another already grown outline."""
    hits = tree.query(grown, predicate="intersects")
    return bool(np.setdiff1d(hits, pair).size) or bool(moved and shapely.intersects(grown, np.array(moved)).any())


def _fair_share(shared: int, reaching_px: int, neighbour_px: int) -> bool:
    """A strip of at least MIN_STRIP_PX centres, and at most MAX_SHARED_SHARE of either field's centres."""
    return MIN_STRIP_PX <= shared <= MAX_SHARED_SHARE * min(reaching_px, neighbour_px)
