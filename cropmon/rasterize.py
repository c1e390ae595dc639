"""Fields -> a lazy int32 label grid with the raster's own chunks (full-width row bands).

Fields are numbered 1..M in the order of their first raster row, so the fields of one chunk are a short, local list
(`FieldLayout.touching(k)`): per chunk only the polygons that touch it are rasterized, and every per-chunk
intermediate downstream is sized by the fields of that chunk, never by all fields of the AOI. Label 0 = no field.

Pixel rule: pixel centres, as GDAL's default. A field that has no pixel centre in a chunk also gets its
all-touched pixels there (`FallbackPixels`); the zonal step uses them only when the field has no centre anywhere.
"""

from __future__ import annotations

import itertools
import logging
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine

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
    def starts(self) -> np.ndarray:
        return np.arange(0, self.height, self.chunk_rows)

    @property
    def n_chunks(self) -> int:
        return len(self.starts)

    def rows(self, k: int) -> tuple[int, int]:
        start = k * self.chunk_rows
        return start, min(start + self.chunk_rows, self.height)

    @property
    def dask_chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(b - a for a, b in map(self.rows, range(self.n_chunks))), (self.width,)


@dataclass(frozen=True)
class FieldLayout:
    """Which field gets which label, which rows it spans, and which chunks it touches and is owned by."""

    label_of_row: np.ndarray  # int32 label per input row; 0 = never rasterized (unusable or outside the raster)
    row_of_label: np.ndarray  # input row of label l at index l - 1
    row0: np.ndarray  # first raster row a field's bounding box touches, per label (index l - 1)
    row1: np.ndarray  # one past its last row
    chunks: RowChunks

    @property
    def n_labels(self) -> int:
        return len(self.row_of_label)

    def touching(self, k: int) -> np.ndarray:
        """Labels of the fields whose bounding box touches chunk k, ascending."""
        start, stop = self.chunks.rows(k)
        end = np.searchsorted(self.row0, stop, side="left")  # row0 is sorted: fields starting before `stop`
        candidates = np.arange(1, end + 1, dtype=np.int64)
        return candidates[self.row1[:end] > start]

    def owned(self, k: int) -> tuple[int, int]:
        """Label range [first, last] of the fields owned by chunk k (their first row falls in it); may be empty."""
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


def layout_fields(geometry: np.ndarray, chunks: RowChunks) -> FieldLayout:
    """Number the usable fields that can touch the raster 1..M by first row (stable), so chunks get local ids."""
    row0, row1, col0, col1 = pixel_spans(geometry, chunks.transform)
    usable = ~shapely.is_missing(geometry) & np.isfinite(row0)
    inside = usable & (row1 > 0) & (row0 < chunks.height) & (col1 > 0) & (col0 < chunks.width)
    rows = np.flatnonzero(inside)
    r0 = np.clip(row0[rows], 0, chunks.height).astype(np.int64)
    r1 = np.clip(row1[rows], 0, chunks.height).astype(np.int64)
    order = np.argsort(r0, kind="stable")
    label_of_row = np.zeros(len(geometry), dtype=np.int32)
    label_of_row[rows[order]] = np.arange(1, len(rows) + 1, dtype=np.int32)
    return FieldLayout(
        label_of_row=label_of_row, row_of_label=rows[order], row0=r0[order], row1=r1[order], chunks=chunks
    )


@dataclass(frozen=True)
class PolygonBatch:
    """Polygons as compact ragged coordinate arrays (cheap to pickle into a task) and their labels.

    `shapely.to_ragged_array` layout: `coords` (n, 2); `offsets` = ring, polygon (and, for MultiPolygons, part)
    offsets. Turned into GeoJSON-like mappings on the worker, which rasterio burns ~5x faster than shapely objects.
    """

    labels: np.ndarray  # int32, one per polygon
    kind: int  # shapely.GeometryType.POLYGON or MULTIPOLYGON
    coords: np.ndarray
    offsets: tuple[np.ndarray, ...]

    @classmethod
    def from_geometries(cls, geometry: np.ndarray, labels: np.ndarray) -> PolygonBatch:
        if len(geometry) == 0:
            return cls(labels.astype(np.int32), int(shapely.GeometryType.POLYGON), np.empty((0, 2)), ())
        kind, coords, offsets = shapely.to_ragged_array(geometry)
        return cls(labels.astype(np.int32), int(kind), coords, tuple(offsets))

    def __len__(self) -> int:
        return len(self.labels)

    def shapes(self) -> list[dict]:
        """GeoJSON-like Polygon / MultiPolygon mappings, one per polygon, in label order."""
        if len(self) == 0:
            return []
        flat = iter(self.coords.ravel().tolist())
        points = list(zip(flat, flat, strict=True))
        ring_ends = self.offsets[0].tolist()
        rings = [points[a:b] for a, b in itertools.pairwise(ring_ends)]
        poly_ends = self.offsets[1].tolist()
        polygons = [rings[a:b] for a, b in itertools.pairwise(poly_ends)]
        if self.kind == shapely.GeometryType.POLYGON:
            return [{"type": "Polygon", "coordinates": p} for p in polygons]
        part_ends = self.offsets[2].tolist()
        return [
            {"type": "MultiPolygon", "coordinates": polygons[a:b]}
            for a, b in itertools.pairwise(part_ends)
        ]

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
    """All-touched pixels of fields with no pixel centre anywhere: (label, flat pixel index in the chunk) pairs."""

    labels: np.ndarray  # int32
    pixels: np.ndarray  # int64 (row * width + col)

    @classmethod
    def empty(cls) -> FallbackPixels:
        return cls(np.empty(0, np.int32), np.empty(0, np.int64))


@dataclass(frozen=True)
class BlockExtras:
    """What a chunk's rasterization found besides its label grid."""

    fallback: FallbackPixels
    overlap_pairs: np.ndarray  # (k, 2) int32 label pairs that share pixel centres in this chunk


def rasterize_block(
    batch: PolygonBatch, *, transform: Affine, row_start: int, rows: int, width: int, height: int
) -> tuple[np.ndarray, BlockExtras]:
    """Label grid of one row chunk (pixel centres) plus fallbacks and overlaps found there.

    Pure: polygons in the raster's CRS with their labels in, numpy out. Where fields overlap, the higher label wins
    the shared pixels, and the pair is reported (a second burn in reverse order reveals every shared pixel).
    A field with no pixel centre in this chunk is checked over its whole extent; if it has none anywhere, its
    all-touched pixels in this chunk are returned as fallback.
    """
    from rasterio.features import rasterize

    window_transform = transform @ Affine.translation(0, row_start)
    grid = np.zeros((rows, width), dtype=np.int32)
    no_pairs = np.empty((0, 2), dtype=np.int32)
    if len(batch) == 0 or rows == 0:
        return grid, BlockExtras(FallbackPixels.empty(), no_pairs)
    shapes = batch.shapes()
    labels = batch.labels
    rasterize(zip(shapes, labels.tolist(), strict=True), out=grid, transform=window_transform, dtype=np.int32)
    reverse = np.zeros_like(grid)
    rasterize(
        zip(shapes[::-1], labels[::-1].tolist(), strict=True), out=reverse, transform=window_transform, dtype=np.int32
    )
    shared = grid != reverse
    overlap_pairs = np.unique(np.column_stack([reverse[shared], grid[shared]]), axis=0) if shared.any() else no_pairs

    lo = int(labels.min())
    present = np.zeros(int(labels.max()) - lo + 2, dtype=bool)
    for g in (grid, reverse):
        inside = g[g >= lo] - lo
        present[inside] = True
    local_zero = np.flatnonzero(~present[labels - lo])
    if len(local_zero) == 0:
        return grid, BlockExtras(FallbackPixels.empty(), overlap_pairs)
    no_centre = local_zero[~_has_centre_anywhere(batch, shapes, local_zero, transform, height, width)]
    fallback = _all_touched_pixels(batch, shapes, no_centre, window_transform, rows, width)
    return grid, BlockExtras(fallback, overlap_pairs)


def _has_centre_anywhere(
    batch: PolygonBatch, shapes: list[dict], which: np.ndarray, transform: Affine, height: int, width: int
) -> np.ndarray:
    """Whether each polygon `which` has a pixel centre anywhere in the raster (one burn over their extent)."""
    from rasterio.features import rasterize

    row0, row1, _, _ = pixel_spans(batch.bounds()[which], transform)
    top, bottom = int(max(row0.min(), 0)), int(min(row1.max(), height))
    if bottom <= top:
        return np.zeros(len(which), dtype=bool)
    burn = np.zeros((bottom - top, width), dtype=np.int32)
    codes = np.arange(1, len(which) + 1)
    rasterize(
        zip([shapes[i] for i in which], codes.tolist(), strict=True),
        out=burn,
        transform=transform @ Affine.translation(0, top),
        dtype=np.int32,
    )
    found = np.zeros(len(which) + 1, dtype=bool)
    found[burn.ravel()] = True
    return found[codes]


def _all_touched_pixels(
    batch: PolygonBatch, shapes: list[dict], which: np.ndarray, transform: Affine, rows: int, width: int
) -> FallbackPixels:
    """All-touched pixels of each polygon separately (neighbouring tiny fields may share a pixel)."""
    from rasterio.features import rasterize

    if len(which) == 0:
        return FallbackPixels.empty()
    row0, row1, col0, col1 = pixel_spans(batch.bounds()[which], transform)
    out_labels, out_pixels = [], []
    for i, r0, r1, c0, c1 in zip(which, row0, row1, col0, col1, strict=True):
        r0, r1 = int(max(r0, 0)), int(min(r1, rows))
        c0, c1 = int(max(c0, 0)), int(min(c1, width))
        if r1 <= r0 or c1 <= c0:
            continue
        sub = rasterize(
            [(shapes[i], 1)],
            out_shape=(r1 - r0, c1 - c0),
            transform=transform @ Affine.translation(c0, r0),
            all_touched=True,
            dtype=np.uint8,
        )
        rr, cc = np.nonzero(sub)
        out_pixels.append((rr + r0).astype(np.int64) * width + (cc + c0))
        out_labels.append(np.full(len(rr), batch.labels[i], dtype=np.int32))
    if not out_pixels:
        return FallbackPixels.empty()
    return FallbackPixels(np.concatenate(out_labels), np.concatenate(out_pixels))


def burn_values(geometry: np.ndarray, values: np.ndarray, *, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """A small int32 grid of `values` burnt by pixel centre (0 where no polygon), e.g. GT classes for a map."""
    from rasterio.features import rasterize

    grid = np.zeros(shape, dtype=np.int32)
    keep = ~shapely.is_missing(geometry)
    if keep.any():
        batch = PolygonBatch.from_geometries(geometry[keep], values[keep])
        rasterize(zip(batch.shapes(), batch.labels.tolist(), strict=True), out=grid, transform=transform)
    return grid


def label_grid(geometry: np.ndarray, layout: FieldLayout, *, token: str | None = None):
    """The lazy label grid (dask int32, the raster's row chunks) and one delayed `BlockExtras` per chunk.

    Each chunk's task carries only the polygons that touch it, found from the fields' row spans (a 1-D interval
    index on rows: chunks are full-width), as compact coordinate arrays embedded in the graph (~130 bytes a
    field). Not scattered: scattered data dies with its worker, while graph data lets the scheduler recompute
    the lost chunks of a killed worker elsewhere.
    """
    import dask
    import dask.array as da

    chunks = layout.chunks
    token = token or uuid.uuid4().hex
    batches = []
    for k in range(chunks.n_chunks):
        labels = layout.touching(k)
        batches.append(PolygonBatch.from_geometries(geometry[layout.row_of_label[labels - 1]], labels))
    blocks, extras = [], []
    for k, batch in enumerate(batches):
        start, stop = chunks.rows(k)
        task = dask.delayed(rasterize_block, nout=2)(
            batch,
            transform=chunks.transform,
            row_start=start,
            rows=stop - start,
            width=chunks.width,
            height=chunks.height,
            dask_key_name=f"rasterize-fields-{token}-{k}",
        )
        blocks.append(da.from_delayed(task[0], shape=(stop - start, chunks.width), dtype=np.int32))
        extras.append(task[1])
    return da.concatenate(blocks, axis=0), extras
