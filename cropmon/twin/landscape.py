"""The twin's landscape: the raster grid, a road network of farm blocks, and the parcels inside each block.

Parcels are built in metres (EPSG:3035, equal-area) and handed out in lon/lat rounded to 6 decimals like the real
GeoPackage. A block is one cell of a coarse Voronoi tessellation (the roads) with its own direction. Most farmland
blocks are open fields: strips of irregular width cut across at slanted angles, so parcels are trapezoids of
varied length; the other blocks hold irregular Voronoi parcels of a jittered lattice drawn in a rotated, stretched
frame. Either way parcels are convex polygons with straight edges, never on a common grid, separated by hedges.
Woods and villages are blocks too: they get parcels (for the background's class patches) but never ground truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from pyproj import Transformer
from rasterio.transform import Affine

from cropmon.twin.params import FULL_ORIGIN_DEG, FULL_SIDE_PX, PIXEL_SIZE_DEG

logger = logging.getLogger(__name__)

METRIC_CRS = "EPSG:3035"  # equal-area: areas in m2 match geodesic ones within 0.01 %
COORD_DECIMALS = 6  # like the real GeoPackage

# The road network: ~6 km2 blocks (~2,600 over the cell); roads are ~12 m wide between blocks.
BLOCK_AREA_M2 = 6.0e6
ROAD_HALF_WIDTH_M = 6.0
# Block kinds: farmland carries the ground truth; woods and villages are the landscape's gaps.
FARMLAND, WOOD, VILLAGE = 0, 1, 2
BLOCK_KIND_SHARES = (0.78, 0.13, 0.09)
# Parcel size per block: lognormal (median m2, sigma of log) per block kind. Farms differ in parcel size: most
# farmland blocks are mixed, some are large-field estates; the mix is wide enough that the size-weighted GT sample
# finds >= ~2 candidates per field in every size class of the real distribution.
FARMLAND_PARCEL_SIZES = ((0.7, 3.5e4, 0.8), (0.3, 7.5e4, 0.3))  # (share of blocks, median m2, sigma)
OTHER_PARCEL_SIZES = {WOOD: (1.0e5, 0.3), VILLAGE: (3.0e4, 0.3)}
# Farmland blocks are mostly open-field strips (trapezoids); the others, and woods and villages, are irregular
# Voronoi parcels elongated by a block-wise stretch (aspect ratio = stretch**2, up to ~3.3).
STRIP_BLOCK_SHARE = 0.75
STRIP_ASPECT = (1.5, 6.0)  # length / width of strip fields (real clip fields: ~1.5-6)
STRIP_TILT = 0.08  # std of a strip boundary's tilt, in strip widths over the block's length
CUT_TILT = 0.35  # cuts across a strip lean up to ~20 degrees from square
MAX_LOG_STRETCH = 0.6
# Hedges/tracks between parcels: each parcel is shrunk by a block-wise half-gap.
HEDGE_HALF_GAP_M = (1.5, 4.0)
# Long parcel edges get intermediate vertices, as digitised boundaries have (real fields have 5-18 vertices).
MAX_EDGE_LENGTH_M = 120.0
BLOCKS_PER_BATCH = 256  # blocks per vectorised Voronoi call: bounds the intermediates' memory
ROWS_PER_RASTER_CHUNK = 512  # rasterize in row chunks: memory stays flat whatever the scale


@dataclass(frozen=True)
class TwinGrid:
    """The raster grid of a twin: the real file's pixel grid, a window of `height` x `width` pixels."""

    width: int
    height: int
    transform: Affine

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        west, north = self.transform.c, self.transform.f
        return west, north - self.height * PIXEL_SIZE_DEG, west + self.width * PIXEL_SIZE_DEG, north


@dataclass(frozen=True)
class Landscape:
    """All parcels of the twin (lon/lat, rounded, as WKB: ~10x smaller than live geometries) and their blocks."""

    wkb: np.ndarray  # object array of WKB Polygons, EPSG:4326
    area_m2: np.ndarray  # float64 area of each parcel
    rows: np.ndarray  # int64 (n, 2): first and last raster row each parcel's bounds reach
    parcel_block: np.ndarray  # int32 block index of each parcel
    block_kind: np.ndarray  # int8 FARMLAND | WOOD | VILLAGE
    block_gt_propensity: np.ndarray  # float64 0..1: how much of a block's farmland is in the ground truth


def twin_grid(scale: float) -> TwinGrid:
    """The grid of a twin of `scale` x the cell's area, centred on the cell and on the real file's pixel grid."""
    side = max(1, round(FULL_SIDE_PX * float(np.sqrt(scale))))
    offset = (FULL_SIDE_PX - side) // 2  # whole pixels, so every scale stays aligned with the real grid
    west = FULL_ORIGIN_DEG[0] + offset * PIXEL_SIZE_DEG
    north = FULL_ORIGIN_DEG[1] - offset * PIXEL_SIZE_DEG
    return TwinGrid(side, side, Affine(PIXEL_SIZE_DEG, 0.0, west, 0.0, -PIXEL_SIZE_DEG, north))


def to_metric() -> Transformer:
    """lon/lat -> EPSG:3035 metres."""
    return Transformer.from_crs("EPSG:4326", METRIC_CRS, always_xy=True)


def to_lonlat() -> Transformer:
    """EPSG:3035 metres -> lon/lat."""
    return Transformer.from_crs(METRIC_CRS, "EPSG:4326", always_xy=True)


def transform_geometries(geoms: np.ndarray, transformer: Transformer, decimals: int | None = None) -> np.ndarray:
    """Reproject an array of geometries in one vectorised call (optionally rounding the coordinates)."""
    coords = shapely.get_coordinates(geoms)
    x, y = transformer.transform(coords[:, 0], coords[:, 1])
    coords = np.column_stack([x, y])
    if decimals is not None:
        coords = np.round(coords, decimals)
    return shapely.set_coordinates(geoms.copy(), coords)


def build_landscape(
    grid: TwinGrid, rng: np.random.Generator, *, progress: Callable[[float], None] | None = None
) -> Landscape:
    """Blocks, then parcels in each block; all randomness from `rng` (the geometry stream)."""
    aoi = _aoi_metric(grid)
    blocks = _road_blocks(aoi, rng)
    n_blocks = len(blocks)
    kind = rng.choice(3, size=n_blocks, p=BLOCK_KIND_SHARES).astype(np.int8)
    propensity = np.where(kind == FARMLAND, rng.beta(2.0, 1.6, n_blocks), 0.0)
    propensity[(kind == FARMLAND) & (rng.random(n_blocks) < 0.12)] = 0.0  # farms outside the GT programme
    wkb, area, rows, parcel_block = [], [], [], []
    lonlat = to_lonlat()
    for done, (cells, cell_block) in _block_parcels(blocks, kind, rng):
        parcels = transform_geometries(cells, lonlat, COORD_DECIMALS)
        keep = shapely.is_valid(parcels) & ~shapely.is_empty(parcels)
        wkb.append(shapely.to_wkb(parcels[keep]))
        area.append(shapely.area(cells[keep]))
        rows.append(pixel_rows(parcels[keep], grid))
        parcel_block.append(cell_block[keep])
        if progress:
            progress(done)
    landscape = Landscape(
        np.concatenate(wkb),
        np.concatenate(area),
        np.concatenate(rows),
        np.concatenate(parcel_block).astype(np.int32),
        kind,
        propensity,
    )
    logger.debug("landscape: %d blocks, %d parcels", n_blocks, len(landscape.wkb))
    return landscape


def pixel_rows(geoms: np.ndarray, grid: TwinGrid) -> np.ndarray:
    """(first, last) raster row reached by each geometry's bounds."""
    north = grid.transform.f
    bounds = shapely.bounds(geoms)
    top = np.floor((north - bounds[:, 3]) / PIXEL_SIZE_DEG)
    bottom = np.floor((north - bounds[:, 1]) / PIXEL_SIZE_DEG)
    return np.column_stack([top, bottom]).astype(np.int64)


def _aoi_metric(grid: TwinGrid) -> shapely.Polygon:
    """The raster's extent in metres, shrunk a little so no parcel touches the raster's edge."""
    west, south, east, north = grid.bounds
    box = shapely.segmentize(shapely.box(west, south, east, north), PIXEL_SIZE_DEG * 64)
    return shapely.buffer(transform_geometries(np.array([box]), to_metric())[0], -2 * ROAD_HALF_WIDTH_M)


def _road_blocks(aoi: shapely.Polygon, rng: np.random.Generator) -> np.ndarray:
    """Convex farm blocks: Voronoi cells of a jittered lattice over the AOI, minus half a road on each side."""
    xmin, ymin, xmax, ymax = aoi.bounds
    spacing = np.sqrt(BLOCK_AREA_M2)
    xs = np.arange(xmin - spacing, xmax + spacing, spacing)
    ys = np.arange(ymin - spacing, ymax + spacing, spacing)
    gx, gy = np.meshgrid(xs, ys)
    seeds = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-0.4, 0.4, (gx.size, 2)) * spacing
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=aoi.envelope))
    blocks = shapely.intersection(cells, aoi)
    blocks = shapely.buffer(blocks, -ROAD_HALF_WIDTH_M, join_style="mitre")
    blocks = blocks[shapely.get_type_id(blocks) == shapely.GeometryType.POLYGON]  # not split at the AOI's edge
    return blocks[shapely.area(blocks) > 0.05 * BLOCK_AREA_M2]  # nor a tiny (or empty) corner of it


@dataclass(frozen=True)
class _BlockPlan:
    """Per-block layout parameters and the block-local frame (rotation by -theta, area-preserving squeeze)."""

    local: np.ndarray  # the blocks in their local frame
    centre: np.ndarray  # (n, 2) block centroids (EPSG:3035)
    to_world: np.ndarray  # (n, 2, 2) local -> world linear map
    strips: np.ndarray  # bool: open-field strip layout (else Voronoi)
    parcel_area: np.ndarray  # typical parcel area, m2
    aspect: np.ndarray  # strip fields' length / width
    jitter: np.ndarray  # Voronoi lattice jitter, in spacings
    half_gap: np.ndarray  # hedge half-width, m


def _plan_blocks(blocks: np.ndarray, kind: np.ndarray, rng: np.random.Generator) -> _BlockPlan:
    """Draw each block's layout and local frame.

    The frame is rotated by -theta and, for Voronoi blocks, squeezed along the long axis (area-preserving), so
    isotropic cells there become parcels elongated along theta once mapped back.
    """
    n_blocks = len(blocks)
    theta = rng.uniform(0.0, np.pi, n_blocks)
    strips = (kind == FARMLAND) & (rng.random(n_blocks) < STRIP_BLOCK_SHARE)
    stretch = np.where(strips, 1.0, np.exp(rng.uniform(0.0, MAX_LOG_STRETCH, n_blocks)))
    cos, sin = np.cos(theta), np.sin(theta)
    to_local = np.stack([[cos / stretch, sin / stretch], [-sin * stretch, cos * stretch]]).transpose(2, 0, 1)
    centre = shapely.get_coordinates(shapely.centroid(blocks))
    local = _affine_each(blocks, to_local, -np.einsum("bij,bj->bi", to_local, centre), np.arange(n_blocks))
    return _BlockPlan(
        local=local,
        centre=centre,
        to_world=np.linalg.inv(to_local),
        strips=strips,
        parcel_area=_parcel_areas(kind, rng),
        aspect=np.exp(rng.uniform(np.log(STRIP_ASPECT[0]), np.log(STRIP_ASPECT[1]), n_blocks)),
        jitter=rng.uniform(0.25, 0.5, n_blocks),
        half_gap=rng.uniform(*HEDGE_HALF_GAP_M, n_blocks),
    )


def _block_parcels(
    blocks: np.ndarray, kind: np.ndarray, rng: np.random.Generator
) -> Iterator[tuple[float, tuple[np.ndarray, np.ndarray]]]:
    """Parcels (EPSG:3035) and their block index, in batches of blocks (flat memory), with the share done."""
    plan = _plan_blocks(blocks, kind, rng)
    shapely.prepare(blocks)
    for start in range(0, len(blocks), BLOCKS_PER_BATCH):
        batch = np.arange(start, min(start + BLOCKS_PER_BATCH, len(blocks)))
        cells, cell_block = _local_cells(plan, batch, rng)
        cells = _affine_each(cells, plan.to_world, plan.centre, cell_block)
        cells, cell_block = _clip_to_blocks(cells, cell_block, blocks)
        cells = shapely.buffer(cells, -plan.half_gap[cell_block], join_style="mitre")
        keep = (shapely.get_type_id(cells) == shapely.GeometryType.POLYGON) & (shapely.area(cells) > 1.0)
        yield batch[-1] / len(blocks), (shapely.segmentize(cells[keep], MAX_EDGE_LENGTH_M), cell_block[keep])
    shapely.destroy_prepared(blocks)


def _local_cells(plan: _BlockPlan, batch: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The parcels of a batch of blocks in their local frames (strip quads, then Voronoi cells), with block index."""
    strip_blocks, voronoi_blocks = batch[plan.strips[batch]], batch[~plan.strips[batch]]
    quads = [_strip_fields(plan.local[b], plan.parcel_area[b], plan.aspect[b], rng) for b in strip_blocks]
    cells: list[np.ndarray] = [np.asarray(shapely.polygons(q)) for q in quads]
    owners = [np.full(len(q), b) for q, b in zip(quads, strip_blocks, strict=True)]
    if voronoi_blocks.size:
        spacing = np.sqrt(plan.parcel_area[voronoi_blocks])
        points, point_block = _jittered_lattices(plan.local[voronoi_blocks], spacing, plan.jitter[voronoi_blocks], rng)
        envelopes = shapely.envelope(shapely.buffer(plan.local[voronoi_blocks], 2 * spacing))
        seeds = shapely.multipoints(points, indices=point_block)
        voronoi, owner = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=envelopes), return_index=True)
        cells.append(voronoi)
        owners.append(voronoi_blocks[owner])
    return np.concatenate(cells), np.concatenate(owners)


def _strip_fields(local_block: shapely.Polygon, area: float, aspect: float, rng: np.random.Generator) -> np.ndarray:
    """Open-field layout of one block (local frame): strips of irregular width, cut across at slanted angles.

    Returns the (n, 5, 2) closed quadrilaterals covering the block's bounding box; no two share a grid, edges are
    straight, and strip boundaries and cuts are slightly tilted so fields are trapezoids, not rectangles.
    """
    xmin, ymin, xmax, ymax = shapely.bounds(local_block)
    width, length = np.sqrt(area / aspect), np.sqrt(area * aspect)
    n_strips = int((ymax - ymin) / (0.6 * width)) + 3
    y = ymin - rng.uniform(0, width) + np.concatenate([[0.0], np.cumsum(rng.uniform(0.6, 1.4, n_strips) * width)])
    y = y[: np.searchsorted(y, ymax) + 1]
    slope = rng.normal(0.0, STRIP_TILT, len(y)) * width / (xmax - xmin)  # boundary tilt, never enough to cross
    n_cuts = int((xmax - xmin) / (0.5 * length)) + 3
    strip = np.arange(len(y) - 1)
    cut_x = (
        xmin
        - rng.uniform(0, length, (len(strip), 1))
        + np.concatenate(
            [np.zeros((len(strip), 1)), np.cumsum(rng.uniform(0.5, 1.5, (len(strip), n_cuts)) * length, axis=1)], axis=1
        )
    )
    cut_tilt = rng.uniform(-CUT_TILT, CUT_TILT, cut_x.shape)
    mid = 0.5 * (y[:-1] + y[1:])[:, None]
    left = (cut_x[:, :-1], cut_tilt[:, :-1])
    right = (cut_x[:, 1:], cut_tilt[:, 1:])
    low = (y[:-1, None], slope[:-1, None])
    high = (y[1:, None], slope[1:, None])
    corners = [
        _cross(*left, *low, mid),
        _cross(*right, *low, mid),
        _cross(*right, *high, mid),
        _cross(*left, *high, mid),
    ]
    quads = np.stack([*corners, corners[0]], axis=2).reshape(-1, 5, 2)
    inside = (quads[:, 0, 0] < xmax) & (quads[:, 2, 0] > xmin)
    return quads[inside]


def _cross(x0: np.ndarray, tilt: np.ndarray, y0: np.ndarray, slope: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """Where the cut x = x0 + tilt * (y - mid) meets the strip boundary y = y0 + slope * x; (..., 2)."""
    x = (x0 + tilt * (y0 - mid)) / (1 - tilt * slope)
    return np.stack(np.broadcast_arrays(x, y0 + slope * x), axis=-1)


def _parcel_areas(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The typical parcel area of each block (m2), drawn from its kind's lognormal."""
    shares, medians, sigmas = np.array(FARMLAND_PARCEL_SIZES).T
    farm_type = rng.choice(len(shares), size=len(kind), p=shares)
    median, sigma = medians[farm_type], sigmas[farm_type]
    for k, (other_median, other_sigma) in OTHER_PARCEL_SIZES.items():
        median = np.where(kind == k, other_median, median)
        sigma = np.where(kind == k, other_sigma, sigma)
    return median * np.exp(sigma * rng.standard_normal(len(kind)))


def _clip_to_blocks(cells: np.ndarray, cell_block: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut the cells at their block's edge; only the cells crossing it pay for an intersection."""
    host = blocks[cell_block]
    inside = shapely.contains_properly(host, cells)
    crossing = ~inside & shapely.intersects(host, cells)
    cells = cells.copy()
    cells[crossing] = shapely.intersection(cells[crossing], host[crossing])
    keep = inside | crossing
    return cells[keep], cell_block[keep]


def _affine_each(geoms: np.ndarray, matrices: np.ndarray, offsets: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Apply a per-geometry affine map x -> M[which] @ x + t[which] (which = the block of each geometry)."""
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    block = which[owner]
    mapped = np.einsum("nij,nj->ni", matrices[block], coords) + offsets[block]
    return shapely.set_coordinates(geoms.copy(), mapped)


def _jittered_lattices(
    local_blocks: np.ndarray, spacing: np.ndarray, jitter: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One jittered lattice per block (rows shifted at random), kept within 1.5 spacings of the block."""
    bounds = shapely.bounds(local_blocks)
    reach = shapely.buffer(local_blocks, 1.5 * spacing, quad_segs=2)
    shapely.prepare(reach)
    points, owners = [], []
    for b, (xmin, ymin, xmax, ymax) in enumerate(bounds):
        d = spacing[b]
        ys = np.arange(ymin - d, ymax + d, d)
        xs = np.arange(xmin - 2 * d, xmax + d, d)
        gx = xs[None, :] + rng.uniform(0.0, d, (len(ys), 1))  # each row of parcels starts somewhere else
        gy = np.broadcast_to(ys[:, None], gx.shape)
        p = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-1, 1, (gx.size, 2)) * jitter[b] * d
        p = p[shapely.contains_xy(reach[b], p[:, 0], p[:, 1])]
        points.append(p)
        owners.append(np.full(len(p), b, dtype=np.int64))
    return np.concatenate(points), np.concatenate(owners)


def rasterize_ids(
    wkb: np.ndarray,
    rows: np.ndarray,
    ids: np.ndarray,
    grid: TwinGrid,
    out: np.ndarray,
    *,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Burn `ids` into `out` (int32, grid-shaped) row chunk by row chunk, with GDAL's pixel-centre rule."""
    for r0 in range(0, grid.height, ROWS_PER_RASTER_CHUNK):
        r1 = min(r0 + ROWS_PER_RASTER_CHUNK, grid.height)
        sel = np.flatnonzero((rows[:, 0] < r1) & (rows[:, 1] >= r0))
        if sel.size:
            rasterio.features.rasterize(
                zip(shapely.from_wkb(wkb[sel]), ids[sel].tolist(), strict=True),
                out=out[r0:r1],
                transform=grid.transform * Affine.translation(0, r0),
            )
        if progress:
            progress(r1 / grid.height)
    return out


def burnt_pixels(poly: shapely.Polygon, grid: TwinGrid, *, all_touched: bool = False) -> np.ndarray:
    """Flat indices of the pixels one polygon burns alone (GDAL's rule, as the engine uses), in a small window."""
    west, south, east, north = shapely.bounds(poly)
    r0 = max(int(np.floor((grid.transform.f - north) / PIXEL_SIZE_DEG)) - 1, 0)
    r1 = min(int(np.floor((grid.transform.f - south) / PIXEL_SIZE_DEG)) + 2, grid.height)
    c0 = max(int(np.floor((west - grid.transform.c) / PIXEL_SIZE_DEG)) - 1, 0)
    c1 = min(int(np.floor((east - grid.transform.c) / PIXEL_SIZE_DEG)) + 2, grid.width)
    burnt = rasterio.features.rasterize(
        [(poly, 1)],
        out_shape=(r1 - r0, c1 - c0),
        transform=grid.transform * Affine.translation(c0, r0),
        all_touched=all_touched,
    )
    rows, cols = np.nonzero(burnt)
    return (rows + r0) * grid.width + cols + c0
