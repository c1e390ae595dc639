"""The mapped area of every class: the valid pixels of each class over the whole raster (inside fields and between
them), counted in the chunk task that already holds the class band, times each row's true pixel area.

This is the map's own census, independent of the ground truth: it is computed whether or not the fields carry
labels (the stratum sizes of the accuracy assessment, and the predicted-class areas of a run without labels).

- Pixels counted: every pixel whose class value is a class of the catalogue; nodata pixels (the raster's nodata in
  the class or the confidence band, as the fields' histograms exclude them) and values that are no class are
  counted apart, never as a class. With an AOI mask (`--aoi-mask`), only pixels whose centre lies inside its
  polygons count (GDAL's pixel-centre rule, the fields' own scanline fill); the others are counted as `outside`.
- Pixel area: per raster row, because a geographic CRS's cells shrink towards the poles. For a geographic CRS
  (the real file is EPSG:4326) it is the ellipsoidal area of one cell of the row, from pyproj's `Geod` on the
  CRS's own ellipsoid (the cell's edges along parallels are taken as geodesics: for a 0.00027-degree cell the
  difference is below 1e-9 m2); for a projected CRS it is |a * e| of the transform in square metres (the CRS's
  linear unit converted), which is the true area only for an equal-area projection.
- Cost: one bincount of (row, class slot) keys over the chunk's pixels, on the slots the fields' histograms need
  anyway (zonal.chunk_partial computes them once for both); measured in benchmarks/results/ (engine A/B).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely

if TYPE_CHECKING:
    from cropmon.engine.scanline import Spans

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MappedPixels:
    """Valid pixels and their area per class (catalogue order), plus the pixels that count for no class."""

    pixels: np.ndarray  # int64 per class
    area_m2: np.ndarray  # float64 per class
    invalid: int = 0  # values that are no class of the catalogue
    nodata: int = 0  # the raster's nodata
    outside: int = 0  # outside the AOI mask (valid or not)

    @classmethod
    def zeros(cls, n_classes: int) -> MappedPixels:
        return cls(np.zeros(n_classes, np.int64), np.zeros(n_classes, np.float64))

    def __add__(self, other: MappedPixels) -> MappedPixels:
        return MappedPixels(self.pixels + other.pixels, self.area_m2 + other.area_m2, self.invalid + other.invalid,
                            self.nodata + other.nodata, self.outside + other.outside)

    @property
    def n_valid(self) -> int:
        return int(self.pixels.sum())

    def as_manifest(self) -> dict[str, float | int]:
        return {"valid_pixels": self.n_valid, "valid_area_ha": round(float(self.area_m2.sum()) / 1e4, 2),
                "invalid_pixels": int(self.invalid), "nodata_pixels": int(self.nodata),
                "outside_mask_pixels": int(self.outside)}


def count_mapped(classes: np.ndarray, confidence: np.ndarray, row_area_m2: np.ndarray, slots_of, *,
                 nodata: float | None = None, inside: np.ndarray | None = None) -> MappedPixels:
    """Count one chunk of the raw class band (rows, cols) by class: `slots_of` is the catalogue's
    zonal.ClassSlots (a value that is no class -> `invalid`), `nodata` the raster's (in the class or the confidence
    band -> `nodata`, as the fields' histograms exclude it), `inside` (rows, cols) bool the AOI mask (None: every
    pixel is in the population), `row_area_m2` the pixel area of each row.

    Works on the int16 band itself: values as uint16 (a negative wraps above every class id) clipped to the
    lookup's end, one bincount per row. 3.0 ms per 256 x 5,218 chunk, against 9.3 ms through the int64 slots of
    zonal.ClassSlots.of_pixels (this VM, process CPU, median of 30)."""
    n = slots_of.n_classes
    lookup = np.append(slots_of.lookup, slots_of.invalid).astype(np.uint16)
    raw = classes.view(np.uint16) if classes.dtype == np.int16 else classes.astype(np.int64).clip(-1, 65535) \
        .astype(np.uint16)  # -1 wraps to 65535: past the lookup's end
    slots = np.minimum(raw, len(lookup) - 1)
    if not slots_of.identity or len(slots_of.lookup) != n:
        slots = lookup[slots]
    if nodata is not None and not np.isnan(nodata):
        slots = np.where((classes == nodata) | (confidence == nodata), n + 1, slots).astype(np.uint16)
    if inside is not None:
        slots = np.where(inside, slots, n + 2).astype(np.uint16)
    counts = np.empty((slots.shape[0], n + 3), dtype=np.int64)
    for row in range(slots.shape[0]):
        counts[row] = np.bincount(slots[row], minlength=n + 3)
    per_class = counts[:, :n]
    return MappedPixels(per_class.sum(axis=0), row_area_m2 @ per_class, invalid=int(counts[:, n].sum()),
                        nodata=int(counts[:, n + 1].sum()), outside=int(counts[:, n + 2].sum()))


def row_pixel_areas(transform, crs: str, height: int) -> np.ndarray:
    """The area in m2 of one pixel of each of the `height` rows of a north-up grid (see the module docstring)."""
    from pyproj import CRS

    a, e, c, f = transform.a, transform.e, transform.c, transform.f
    parsed = CRS.from_user_input(crs)
    if not parsed.is_geographic:
        unit = parsed.axis_info[0].unit_conversion_factor if parsed.axis_info else 1.0
        return np.full(height, abs(a * e) * unit * unit)
    geod = parsed.get_geod()
    if geod is None:
        raise ValueError(f"the geographic CRS {crs!r} has no ellipsoid to measure pixel areas on")
    lon = [c, c + a, c + a, c]
    edges = f + e * np.arange(height + 1)
    areas = np.empty(height)
    for row in range(height):  # one Geod call per row (a row's pixels share their area)
        top, bottom = float(edges[row]), float(edges[row + 1])
        areas[row] = abs(geod.polygon_area_perimeter(lon, [top, top, bottom, bottom])[0])
    return areas


@dataclass(frozen=True)
class AOIMask:
    """The AOI mask in the raster's CRS: its polygons and their pixel-centre spans over the whole raster."""

    path: str
    geometry: np.ndarray  # shapely polygons, raster CRS, repaired
    spans: Spans  # owner 0

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points (raster CRS) lie inside the mask (NaN points do not)."""
        union = shapely.union_all(self.geometry)
        shapely.prepare(union)
        x, y = np.asarray(x, float), np.asarray(y, float)
        ok = np.isfinite(x) & np.isfinite(y)
        out = np.zeros(len(x), dtype=bool)
        out[ok] = shapely.contains_xy(union, x[ok], y[ok])
        return out

    def as_manifest(self) -> dict[str, object]:
        return {"path": self.path, "polygons": len(self.geometry), "pixels_inside": int(self.spans_pixels())}

    def spans_pixels(self) -> int:
        return int((self.spans.stop - self.spans.start).sum())


def aoi_mask(path: str, *, raster_crs: str, transform, height: int, width: int) -> AOIMask:
    """Read the AOI mask (io/mask.py), reproject and repair its polygons, and find its pixel centres in the
    raster; a mask that covers no pixel centre of the raster is refused (NoOverlap: the CLI's exit 2)."""
    from cropmon import errors
    from cropmon.engine.fields import prepare_geometries
    from cropmon.io.mask import read_aoi_mask

    read = read_aoi_mask(path)
    geometry, _ = prepare_geometries(read.geometry, fields_crs=read.crs, raster_crs=raster_crs)
    geometry = geometry[~shapely.is_missing(geometry)]
    spans = population_spans(geometry, transform, height=height, width=width)
    mask = AOIMask(read.path, geometry, spans)
    if mask.spans_pixels() == 0:
        bounds = [round(float(v), 6) for v in shapely.total_bounds(geometry)] if len(geometry) else []
        raise errors.NoOverlap(
            f"the AOI mask covers no pixel centre of the raster (mask bounds in {raster_crs}: {bounds})",
            path=read.path, fix="pass the mask of this raster's AOI (and check that its CRS is right)")
    return mask


def population_spans(geometry: np.ndarray, transform, *, height: int, width: int) -> Spans:
    """The pixel-centre spans (scanline.Spans, owner 0) of the AOI mask's polygons (in the raster's CRS) over the
    whole raster: made once on the client, each chunk task gets the spans of its own rows (`chunk_spans`)."""
    from cropmon.engine.rasterize import PolygonBatch

    batch = PolygonBatch.from_geometries(geometry, np.ones(len(geometry), dtype=np.int32))
    spans = batch.spans(transform, height=height, width=width)
    return type(spans)(np.zeros(len(spans), np.int64), spans.row, spans.start, spans.stop)


def chunk_spans(spans: Spans, row_start: int, row_stop: int) -> Spans:
    """The spans of rows [row_start, row_stop) (small: what one chunk task is sent)."""
    return spans.select((spans.row >= row_start) & (spans.row < row_stop))


def mask_inside(spans: Spans, *, row_start: int, rows: int, width: int) -> np.ndarray:
    """(rows, width) bool: the pixels of one row chunk whose centre lies inside the AOI mask (its `chunk_spans`)."""
    from cropmon.engine.scanline import fill

    grid, _ = fill(spans, np.ones(1, np.int32), row_start=row_start, rows=rows, width=width)
    return grid > 0


def mapped_area_table(mapped: MappedPixels, catalogue):
    """Per class of the catalogue (its order): class_id, crop, pixels, area_ha and share of the mapped area."""
    import pandas as pd

    area_ha = mapped.area_m2 / 1e4
    total = area_ha.sum()
    return pd.DataFrame({
        "class_id": np.asarray(catalogue.ids, dtype=np.int64),
        "crop": list(catalogue.names),
        "pixels": mapped.pixels.astype(np.int64),
        "area_ha": area_ha,
        "share": area_ha / total if total > 0 else np.zeros_like(area_ha),
    })
