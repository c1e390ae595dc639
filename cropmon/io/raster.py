"""The prediction raster: its header checked up front (`inspect_raster`), chunking aligned to its blocks, the class and
confidence bands opened lazily as one chunked xarray array, and small windows read for the report's map."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cropmon import errors

if TYPE_CHECKING:
    import xarray as xr
from cropmon.io import store
from cropmon.io.paths import as_path, require_file, size_bytes

log = logging.getLogger(__name__)


# Pixels per chunk when --chunk-rows is not given: 256 rows of the real 5,218-pixel-wide file. A wider AOI gets
# fewer rows per chunk, so a task's memory stays the same whatever the AOI's size.
DEFAULT_CHUNK_PIXELS = 256 * 5218


@dataclass(frozen=True)
class RasterInfo:
    """What cropmon needs to know about the prediction raster, read from its header (no pixel is read)."""

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    nodata: float | None
    block_shape: tuple[int, int]  # rows, cols of the file's internal blocks (strips or tiles)
    interleave: str | None
    compression: str | None
    descriptions: tuple[str | None, ...]
    size_bytes: int | None  # None for GDAL virtual paths (/vsis3/ ...)
    class_band: int  # 1-based
    confidence_band: int  # 1-based

    def as_manifest(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "crs": self.crs,
            "shape": [self.height, self.width],
            "bands": self.count,
            "dtypes": list(dict.fromkeys(self.dtypes)),
            "transform": list(self.transform),
            "nodata": self.nodata,
            "layout": {
                "block_shape": list(self.block_shape),
                "interleave": self.interleave,
                "compression": self.compression,
            },
            "band_descriptions": list(self.descriptions),
            "class_band": self.class_band,
            "confidence_band": self.confidence_band,
        }


def inspect_raster(path: str | Path, *, class_band: int = 3, confidence_band: int = 4) -> RasterInfo:
    """Validate the prediction raster's header and return its description.

    Raises typed errors for a missing/unreadable file, a file GDAL cannot open as a raster, band indexes out of
    range, a non-integer class band, a missing CRS and a rotated or sheared grid. The class band is read raw: a
    scale/offset or a colour table in its header changes nothing (class ids are never rescaled or expanded).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    path = as_path(path)
    require_file(path, "raster")
    try:
        with rasterio.open(path) as src:
            info = RasterInfo(
                path=str(path),
                width=src.width,
                height=src.height,
                count=src.count,
                dtypes=tuple(src.dtypes),
                crs=src.crs.to_string() if src.crs else "",
                transform=tuple(src.transform)[:6],
                nodata=src.nodata,
                block_shape=tuple(src.block_shapes[0]) if src.count else (1, src.width),
                interleave=src.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE"),
                compression=src.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION"),
                descriptions=tuple(src.descriptions),
                size_bytes=size_bytes(path),
                class_band=class_band,
                confidence_band=confidence_band,
            )
    except RasterioIOError as exc:
        if store.is_object_store(path):
            raise store.problem(path, exc, what="raster") from exc
        raise errors.NotARaster(
            f"not a readable GeoTIFF/raster ({errors.first_line(exc)})",
            path=path,
            fix="pass the prediction GeoTIFF (is the file truncated or still downloading?)",
        ) from exc
    for name, band in (("class", class_band), ("confidence", confidence_band)):
        if not 1 <= band <= info.count:
            raise errors.MissingBand(
                f"the {name} band {band} does not exist: the raster has {info.count} band(s)",
                path=path,
                fix=f"pass --{name}-band N with 1 <= N <= {info.count} (the real layout has 10 bands, class = 3,"
                " confidence = 4)",
            )
    class_dtype = np.dtype(info.dtypes[class_band - 1])
    if class_dtype.kind not in "iu":
        raise errors.BadBandType(
            f"the class band {class_band} is {class_dtype}, not an integer type",
            path=path,
            fix="pass the band holding integer class ids with --class-band",
        )
    if not info.crs:
        raise errors.MissingCRS(
            "the raster has no CRS",
            path=path,
            fix="set one, e.g. `gdal_edit.py -a_srs EPSG:4326 FILE` (the real predictions are EPSG:4326)",
        )
    _, b, _, d, _, _ = info.transform
    if b != 0 or d != 0:
        raise errors.RotatedRaster(
            f"its grid is rotated or sheared (geotransform rotation terms {b:g}, {d:g}); cropmon needs a north-up grid"
            " to rasterize the fields on",
            path=path,
            fix="warp it to a north-up grid with nearest-neighbour resampling, which keeps class ids: "
            "`gdalwarp -r near IN.tif north_up.tif`",
        )
    return info


def chunk_rows_for(info: RasterInfo, requested: int | None) -> int:
    """Rows per chunk: a multiple of the file's block height, so each task reads whole strips/tiles once.

    By default a chunk holds about DEFAULT_CHUNK_PIXELS pixels (256 rows of the real file).
    """
    block_rows = max(1, info.block_shape[0])
    rows = requested or max(1, DEFAULT_CHUNK_PIXELS // max(info.width, 1))
    rows = max(block_rows, (rows // block_rows) * block_rows)
    log.debug("chunk rows %d (file block %s, requested %s)", rows, info.block_shape, requested)
    return min(rows, max(info.height, 1))


def open_prediction_bands(info: RasterInfo, *, chunk_rows: int):
    """The class and confidence bands as one lazy (2, y, x) xarray DataArray, chunked in full-width row bands.

    Band selection happens before chunking, so each chunk is one `read(indexes=[class, conf], window)` call:
    for a pixel-interleaved striped file the strips are read once for both bands. `lock=False` gives every read
    its own file handle, so reads run in parallel.
    """
    import warnings

    import rioxarray

    with warnings.catch_warnings():
        # A class band with its own scale/offset (the others 1/0) makes rioxarray warn that it will not set one
        # `scale_factor` attribute; with mask_and_scale=False (its default) the values are read raw either way,
        # and cropmon never applies a scale to class ids.
        warnings.filterwarnings("ignore", message="(Scales|Offsets) differ across bands", category=UserWarning)
        arr = rioxarray.open_rasterio(info.path, lock=False, cache=False, masked=False, mask_and_scale=False)
    # open_rasterio's list and Dataset are for files with subdatasets (HDF, netCDF); a GeoTIFF is one DataArray
    arr = cast("xr.DataArray", arr).isel(band=[info.class_band - 1, info.confidence_band - 1])
    return arr.chunk({"band": 2, "y": chunk_rows, "x": -1})


def read_raster_window(info: RasterInfo, *, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
    """Class and confidence of a small window (2, h, w), for the report's map window."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(info.path) as src:
        return src.read([info.class_band, info.confidence_band], window=Window(col_off, row_off, width, height))

