"""Fields -> a lazy int32 label grid with the raster's own chunks (full-width row bands).

Fields are numbered 1..M in the order of their first raster row, so the fields of one chunk are a short, local list
(`FieldLayout.touching(k)`): per chunk only the polygons that touch it are rasterized, and every per-chunk
intermediate downstream is sized by the fields of that chunk, never by all fields of the AOI. Label 0 = no field.

Pixel rule: pixel centres, as GDAL's default. A field that has no pixel centre in a chunk also gets its
all-touched pixels there (`FallbackPixels`); the zonal step uses them only when the field has no centre anywhere.
"""

from __future__ import annotations

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


def pixel_spans(geometry: np.ndarray, transform: Affine) -> tuple[np.ndarray, ...]:
    """Row and column spans [row0, row1) x [col0, col1) of each geometry's bounding box, all-touched inclusive."""
    if transform.b != 0 or transform.d != 0:
        raise ValueError("rotated or sheared rasters are not supported")
    bounds = shapely.bounds(geometry)  # NaN for missing geometries
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
class FallbackPixels:
    """All-touched pixels of the fields that have no pixel centre in a chunk: (label, flat pixel index) pairs."""

    labels: np.ndarray  # int32
    pixels: np.ndarray  # int64 flat index into the chunk (row * width + col)


def rasterize_block(
    geometry: np.ndarray, labels: np.ndarray, *, transform: Affine, row_start: int, rows: int, width: int
) -> tuple[np.ndarray, FallbackPixels]:
    """Label grid of one row chunk (pixel centres) plus the all-touched pixels of fields with no centre in it.

    Pure: geometries in the raster's CRS and their labels in, numpy out. Where fields overlap, the later label wins
    (overlaps are reported upstream).
    """
    from rasterio.features import rasterize

    window_transform = transform @ Affine.translation(0, row_start)
    grid = np.zeros((rows, width), dtype=np.int32)
    if len(geometry) == 0 or rows == 0:
        return grid, FallbackPixels(np.empty(0, np.int32), np.empty(0, np.int64))
    rasterize(
        zip(geometry, labels, strict=True),
        out=grid,
        transform=window_transform,
        all_touched=False,
        dtype=np.int32,
    )
    present = np.zeros(int(labels.max()) + 1, dtype=bool)
    present[grid.ravel()] = True
    missing = ~present[labels]
    return grid, _all_touched_pixels(geometry[missing], labels[missing], window_transform, rows, width)


def _all_touched_pixels(
    geometry: np.ndarray, labels: np.ndarray, transform: Affine, rows: int, width: int
) -> FallbackPixels:
    """All-touched pixels of each geometry separately (neighbouring tiny fields may share a pixel)."""
    from rasterio.features import rasterize

    if len(geometry) == 0:
        return FallbackPixels(np.empty(0, np.int32), np.empty(0, np.int64))
    row0, row1, col0, col1 = pixel_spans(geometry, transform)
    out_labels, out_pixels = [], []
    for geom, label, r0, r1, c0, c1 in zip(geometry, labels, row0, row1, col0, col1, strict=True):
        r0, r1 = int(max(r0, 0)), int(min(r1, rows))
        c0, c1 = int(max(c0, 0)), int(min(c1, width))
        if r1 <= r0 or c1 <= c0:
            continue
        sub = rasterize(
            [(geom, 1)],
            out_shape=(r1 - r0, c1 - c0),
            transform=transform @ Affine.translation(c0, r0),
            all_touched=True,
            dtype=np.uint8,
        )
        rr, cc = np.nonzero(sub)
        out_pixels.append((rr + r0).astype(np.int64) * width + (cc + c0))
        out_labels.append(np.full(len(rr), label, dtype=np.int32))
    if not out_pixels:
        return FallbackPixels(np.empty(0, np.int32), np.empty(0, np.int64))
    return FallbackPixels(np.concatenate(out_labels), np.concatenate(out_pixels))


def label_grid(geometry: np.ndarray, layout: FieldLayout, *, token: str | None = None):
    """The lazy label grid (dask int32, the raster's row chunks) and one delayed `FallbackPixels` per chunk.

    Each chunk's task carries only the geometries that touch it, found from the fields' row spans (a 1-D
    interval index on rows: chunks are full-width).
    """
    import dask
    import dask.array as da

    chunks = layout.chunks
    token = token or uuid.uuid4().hex
    blocks, fallbacks = [], []
    for k in range(chunks.n_chunks):
        start, stop = chunks.rows(k)
        labels = layout.touching(k)
        geoms = geometry[layout.row_of_label[labels - 1]]
        task = dask.delayed(rasterize_block, nout=2)(
            geoms,
            labels.astype(np.int32),
            transform=chunks.transform,
            row_start=start,
            rows=stop - start,
            width=chunks.width,
            dask_key_name=f"rasterize-fields-{token}-{k}",
        )
        blocks.append(da.from_delayed(task[0], shape=(stop - start, chunks.width), dtype=np.int32))
        fallbacks.append(task[1])
    return da.concatenate(blocks, axis=0), fallbacks
