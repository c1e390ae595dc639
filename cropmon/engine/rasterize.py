"""Fields -> a lazy int32 zone grid with the raster's own chunks (full-width row bands).

Fields are numbered 1..M in the order of their first raster row, so the fields of one chunk are a short, local list
(`FieldLayout.touching(k)`): per chunk only the polygons that touch it are rasterized, and every per-chunk
intermediate downstream is sized by the fields of that chunk, never by all fields of the AOI. Zone 0 = no field.

Pixel rule: pixel centres, as GDAL's default (cropmon.scanline). A field with no pixel centre anywhere gets its
all-touched pixels instead (`FallbackPixels`, burnt by GDAL through rasterio). Where fields overlap, the grid holds
one of them per pixel and the others' claims travel beside it (`scanline.SharedPixels`), so every field gets every
pixel centre inside it, as a brute-force mask per field would.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine

from cropmon.engine.scanline import SharedPixels, Spans, fill, polygon_spans, to_pixel_space

log = logging.getLogger(__name__)

# rasterio.features.rasterize opens its scratch in-memory dataset before giving it the transform, so GDAL warns
# "Dataset has no geotransform" on every call although the burn uses the right transform (see rasterio#2497 and
# rio-tiler#627 for the same noise). Silence exactly that warning from exactly that module.
warnings.filterwarnings("ignore", message="Dataset has no geotransform", module=r"rasterio\.features")


@dataclass(frozen=True)
class RowChunks:
    """Full-width row chunks of a raster grid."""

    height: int
    width: int
    transform: Affine
    chunk_rows: int

    @property
    def n_chunks(self) -> int:
        return -(-self.height // self.chunk_rows)

    def rows(self, k: int) -> tuple[int, int]:
        start = k * self.chunk_rows
        return start, min(start + self.chunk_rows, self.height)


@dataclass(frozen=True)
class FieldLayout:
    """Which field gets which zone, which rows it spans, and which chunks it touches and is owned by."""

    zone_of_row: np.ndarray  # int32 zone per input row; 0 = never rasterized (unusable or outside the raster)
    row_of_zone: np.ndarray  # input row of zone z at index z - 1
    row0: np.ndarray  # first raster row a field's bounding box touches, per zone (index z - 1)
    row1: np.ndarray  # one past its last row
    chunks: RowChunks

    @property
    def n_zones(self) -> int:
        return len(self.row_of_zone)

    def touching(self, k: int) -> np.ndarray:
        """Zones of the fields whose bounding box touches chunk k, ascending."""
        start, stop = self.chunks.rows(k)
        end = np.searchsorted(self.row0, stop, side="left")  # row0 is sorted: fields starting before `stop`
        candidates = np.arange(1, end + 1, dtype=np.int64)
        return candidates[self.row1[:end] > start]

    def owned(self, k: int) -> tuple[int, int]:
        """Zone range [first, last] of the fields owned by chunk k (their first row falls in it); may be empty."""
        start, stop = self.chunks.rows(k)
        first = np.searchsorted(self.row0, start, side="left") + 1
        last = np.searchsorted(self.row0, stop, side="left")
        return int(first), int(last)

    def owner_span(self, k: int) -> tuple[int, int]:
        """Chunks [k, k_last] that hold pixels of the fields chunk k owns."""
        first, last = self.owned(k)
        if last < first:
            return k, k
        last_row = int(self.row1[first - 1 : last].max()) - 1
        return k, min(last_row // self.chunks.chunk_rows, self.chunks.n_chunks - 1)


def pixel_spans(geometry_or_bounds: np.ndarray, transform: Affine) -> tuple[np.ndarray, ...]:
    """Row and column spans [row0, row1) x [col0, col1) of each bounding box, all-touched inclusive.

    Takes geometries or an (n, 4) array of their bounds (NaN bounds for missing geometries).
    """
    if transform.b != 0 or transform.d != 0:
        raise ValueError("rotated or sheared rasters are not supported")
    bounds = geometry_or_bounds
    if bounds.dtype == object:
        bounds = shapely.bounds(bounds)
    minx, miny, maxx, maxy = bounds.T
    col_a, col_b = (minx - transform.c) / transform.a, (maxx - transform.c) / transform.a
    row_a, row_b = (maxy - transform.f) / transform.e, (miny - transform.f) / transform.e
    cols = np.sort(np.stack([col_a, col_b]), axis=0)
    rows = np.sort(np.stack([row_a, row_b]), axis=0)
    with np.errstate(invalid="ignore"):
        # One pixel of slack each side: GDAL's all-touched rule counts pixels an edge only grazes.
        row0 = np.floor(rows[0]) - 1
        row1 = np.ceil(rows[1]) + 1
        col0 = np.floor(cols[0]) - 1
        col1 = np.ceil(cols[1]) + 1
    return row0, row1, col0, col1


def layout_fields(bounds: np.ndarray, chunks: RowChunks) -> FieldLayout:
    """Number the fields whose (n, 4) bounds, in the raster's CRS, can touch the raster 1..M by first row (stable).

    NaN bounds (null geometries) get no zone; chunks then get local ids.
    """
    row0, row1, col0, col1 = pixel_spans(bounds, chunks.transform)
    usable = np.isfinite(row0) & np.isfinite(row1)
    with np.errstate(invalid="ignore"):
        inside = usable & (row1 > 0) & (row0 < chunks.height) & (col1 > 0) & (col0 < chunks.width)
    rows = np.flatnonzero(inside)
    r0 = np.clip(row0[rows], 0, chunks.height).astype(np.int32)
    r1 = np.clip(row1[rows], 0, chunks.height).astype(np.int32)
    order = np.argsort(r0, kind="stable")
    zone_of_row = np.zeros(len(bounds), dtype=np.int32)
    zone_of_row[rows[order]] = np.arange(1, len(rows) + 1, dtype=np.int32)
    return FieldLayout(
        zone_of_row=zone_of_row, row_of_zone=rows[order].astype(np.int32), row0=r0[order], row1=r1[order],
        chunks=chunks,
    )


@dataclass(frozen=True)
class PolygonBatch:
    """Polygons as compact ragged coordinate arrays (cheap to pickle into a task) and their zones.

    `shapely.to_ragged_array` layout: `coords` (n, 2); `offsets` = ring, polygon (and, for MultiPolygons, part)
    offsets, which the vectorised scanline fill (cropmon.scanline) reads directly.
    """

    zones: np.ndarray  # int32, one per polygon
    kind: int  # shapely.GeometryType.POLYGON or MULTIPOLYGON
    coords: np.ndarray
    offsets: tuple[np.ndarray, ...]

    @classmethod
    def from_geometries(cls, geometry: np.ndarray, zones: np.ndarray) -> PolygonBatch:
        if len(geometry) == 0:
            return cls(zones.astype(np.int32), int(shapely.GeometryType.POLYGON), np.empty((0, 2)), ())
        kind, coords, offsets = shapely.to_ragged_array(geometry)
        return cls(zones.astype(np.int32), int(kind), coords, tuple(offsets))

    def __len__(self) -> int:
        return len(self.zones)

    def shape(self, i: int, *, coords: np.ndarray | None = None) -> dict:
        """The GeoJSON-like mapping of polygon i (for rasterio's all-touched burn of the rare fallbacks), in the
        batch's coordinates or in `coords`, another (n, 2) array of the same vertices (e.g. in pixel space)."""
        coords = self.coords if coords is None else coords
        ring_ends, part_ends = self.offsets[0], self.offsets[1]
        if self.kind == shapely.GeometryType.POLYGON:
            parts = [(part_ends[i], part_ends[i + 1])]
        else:
            geom_ends = self.offsets[2]
            parts = [(part_ends[p], part_ends[p + 1]) for p in range(geom_ends[i], geom_ends[i + 1])]
        polygons = [
            [coords[ring_ends[r] : ring_ends[r + 1]].tolist() for r in range(first, last)]
            for first, last in parts
        ]
        return {"type": "MultiPolygon", "coordinates": polygons}

    def spans(self, transform: Affine, *, height: int, width: int) -> Spans:
        """Pixel-centre spans of every polygon of the batch over the whole raster (GDAL's rule, see scanline)."""
        if len(self) == 0:
            return Spans(*(np.empty(0, dtype=np.int64) for _ in range(4)))
        return polygon_spans(self.coords, self.kind, self.offsets, transform=transform, height=height, width=width)

    def bounds(self) -> np.ndarray:
        """(n, 4) minx, miny, maxx, maxy of each polygon."""
        ends = self.offsets[0]
        for level in self.offsets[1:]:
            ends = ends[level]
        starts = ends[:-1]
        mins = np.minimum.reduceat(self.coords, starts, axis=0)
        maxs = np.maximum.reduceat(self.coords, starts, axis=0)
        return np.column_stack([mins, maxs])


@dataclass(frozen=True)
class FallbackPixels:
    """All-touched pixels of fields with no pixel centre anywhere: (zone, flat pixel index in the chunk) pairs."""

    zones: np.ndarray  # int32
    pixels: np.ndarray  # int64 (row * width + col)

    @classmethod
    def empty(cls) -> FallbackPixels:
        return cls(np.empty(0, np.int32), np.empty(0, np.int64))


@dataclass(frozen=True)
class FieldShapes:
    """What reading a chunk's own fields found: each field's geometry status and a point inside it (x, y)."""

    zones: np.ndarray  # int64, ascending
    status: np.ndarray  # object: ok | repaired | multipolygon | empty | not_polygon
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Overlaps:
    """Pairs of fields (zones low, high) sharing pixel centres in one chunk: how many, and whether the two are the
    same polygon (a duplicated field)."""

    pairs: np.ndarray  # (k, 2) int32
    pixels: np.ndarray  # (k,) int64 pixels the pair shares in this chunk
    same_geometry: np.ndarray  # (k,) bool

    @classmethod
    def empty(cls) -> Overlaps:
        return cls(np.empty((0, 2), np.int32), np.empty(0, np.int64), np.empty(0, bool))


@dataclass(frozen=True)
class BlockExtras:
    """What a chunk's rasterization found besides its zone grid."""

    fallback: FallbackPixels
    shared: SharedPixels  # every claim on the pixels inside more than one field
    overlaps: Overlaps
    shapes: FieldShapes | None = None  # of the fields the chunk owns (set by rasterize_chunk_fields)


def rasterize_block(
    batch: PolygonBatch, *, transform: Affine, row_start: int, rows: int, width: int, height: int
) -> tuple[np.ndarray, BlockExtras]:
    """Zone grid of one row chunk (pixel centres) plus fallbacks and overlaps found there.

    Pure: polygons in the raster's CRS with their zones in, numpy out. Each polygon is scanned over its whole
    extent (it is small), so whether it has a pixel centre anywhere is known here; one that has none gets its
    all-touched pixels in this chunk as fallback. Where fields overlap, the grid holds the highest zone and the
    other claims are returned with the pairs (`same_geometry` is filled in by `rasterize_chunk_fields`).
    """
    spans = batch.spans(transform, height=height, width=width)
    grid, shared = fill(spans, batch.zones, row_start=row_start, rows=rows, width=width)
    no_centre = np.flatnonzero(spans.pixels_per_owner(len(batch)) == 0)
    fallback = _all_touched_pixels(batch, no_centre, transform, row_start=row_start, rows=rows, width=width,
                                   height=height)
    pairs, pair_pixels = shared.pairs()
    return grid, BlockExtras(fallback, shared, Overlaps(pairs, pair_pixels, np.zeros(len(pairs), bool)))


def _all_touched_pixels(
    batch: PolygonBatch, which: np.ndarray, transform: Affine, *, row_start: int, rows: int, width: int, height: int
) -> FallbackPixels:
    """All-touched pixels in rows [row_start, row_start + rows) of each polygon separately (neighbouring tiny
    fields may share a pixel): the same pixels whatever the chunking.

    GDAL burns each polygon over the polygon's own window (never the chunk's part of it), given in the whole
    raster's pixel coordinates (the scanline's) with the window's integer origin, which GDAL subtracts exactly.
    Burnt through each chunk's own geotransform, a vertex within ~1e-11 pixel of a pixel edge, or of GDAL's 1e-4
    pixel all-touched tolerance past one, fell on either side of it depending on the chunking.
    """
    from rasterio.features import rasterize

    if len(which) == 0:
        return FallbackPixels.empty()
    row0, row1, col0, col1 = pixel_spans(batch.bounds()[which], transform)
    pixel_coords = np.column_stack(to_pixel_space(batch.coords, transform))
    out_zones, out_pixels = [], []
    for i, r0, r1, c0, c1 in zip(which, row0, row1, col0, col1, strict=True):
        r0, r1 = int(max(r0, 0)), int(min(r1, height))
        c0, c1 = int(max(c0, 0)), int(min(c1, width))
        if min(r1, row_start + rows) <= max(r0, row_start) or c1 <= c0:
            continue
        # A window at the raster's corner would have the identity transform, which rasterio warns about from
        # inside a warnings filter that is not thread-safe (it escapes on busy workers): widen it one column left.
        w0 = c0 - 1 if (r0, c0) == (0, 0) else c0
        sub = rasterize(
            [(batch.shape(i, coords=pixel_coords), 1)],
            out_shape=(r1 - r0, c1 - w0),
            transform=Affine(1, 0, w0, 0, 1, r0),
            all_touched=True,
            dtype=np.uint8,
        )
        rr, cc = np.nonzero(sub)
        rr = rr + (r0 - row_start)
        cc = cc + w0
        in_chunk = (rr >= 0) & (rr < rows) & (cc >= 0)
        out_pixels.append(rr[in_chunk].astype(np.int64) * width + cc[in_chunk])
        out_zones.append(np.full(int(in_chunk.sum()), batch.zones[i], dtype=np.int32))
    if not out_pixels:
        return FallbackPixels.empty()
    return FallbackPixels(np.concatenate(out_zones), np.concatenate(out_pixels))


def burn_values(geometry: np.ndarray, values: np.ndarray, *, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """A small int32 grid of positive `values` burnt by pixel centre (0 where no polygon), e.g. a map's GT classes."""
    keep = ~shapely.is_missing(geometry)
    batch = PolygonBatch.from_geometries(geometry[keep], values[keep])
    grid, _ = fill(batch.spans(transform, height=shape[0], width=shape[1]), batch.zones, row_start=0,
                   rows=shape[0], width=shape[1])  # a map: the highest value keeps a shared pixel
    return grid


@dataclass(frozen=True)
class ChunkFields:
    """The fields of one chunk, by reference: which features to read, their zones, and which the chunk owns."""

    fids: np.ndarray  # feature ids in the fields file, one per zone
    zones: np.ndarray  # int64, ascending
    owned: tuple[int, int]  # zone range [first, last] owned by the chunk


def rasterize_chunk_fields(
    source, fields: ChunkFields, *, raster_crs: str, transform: Affine, row_start: int, rows: int, width: int,
    height: int,
) -> tuple[np.ndarray, BlockExtras]:
    """Read a chunk's polygons from the fields file, prepare them (reproject, repair) and rasterize them.

    `source` is an io.vector.FieldSource. Runs on a worker: only the polygons of this chunk are ever in its memory.
    """
    from cropmon.engine.fields import field_points, prepare_geometries

    geometry, status = prepare_geometries(
        source.read_geometries(fields.fids), fields_crs=source.crs, raster_crs=raster_crs
    )
    usable = ~shapely.is_missing(geometry)
    batch = PolygonBatch.from_geometries(geometry[usable], fields.zones[usable])
    grid, extras = rasterize_block(batch, transform=transform, row_start=row_start, rows=rows, width=width,
                                   height=height)
    first, last = fields.owned
    own = (fields.zones >= first) & (fields.zones <= last)
    x, y = field_points(geometry[own])
    shapes = FieldShapes(fields.zones[own], status[own], x, y)
    overlaps = extras.overlaps
    if len(overlaps.pairs):
        position = np.searchsorted(fields.zones, overlaps.pairs)  # zones are ascending
        same = shapely.equals(geometry[position[:, 0]], geometry[position[:, 1]])
        overlaps = Overlaps(overlaps.pairs, overlaps.pixels, np.asarray(same, dtype=bool))
    return grid, BlockExtras(extras.fallback, extras.shared, overlaps, shapes)

