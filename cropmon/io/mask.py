"""The AOI mask (`--aoi-mask FILE`): polygons that restrict the population of the mapped area and of the accuracy
assessment, read whole on the client (an AOI boundary or a cropland mask: a few polygons, checked before any work).
Any vector format GDAL reads; the engine reprojects them to the raster's CRS (engine/mapped.AOIMask)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cropmon import errors
from cropmon.io.paths import as_path, gdal_warnings_logged, require_file

MASK_FIX = "pass a vector file of the AOI's polygons (GeoPackage, GeoJSON, Shapefile ...) with a CRS"


@dataclass(frozen=True)
class MaskFile:
    """The mask's polygons as read (their own CRS) and where they came from."""

    path: str
    crs: str
    geometry: np.ndarray  # shapely Polygons / MultiPolygons


def read_aoi_mask(path: str | Path, *, layer: str | None = None) -> MaskFile:
    """Read every polygon of the mask file; typed errors for a missing or unreadable file, no CRS, no polygon."""
    import pyogrio
    import shapely

    path = as_path(path)
    require_file(path, "AOI mask")
    try:
        with gdal_warnings_logged(path):
            info = pyogrio.read_info(path, layer=layer)
            frame = pyogrio.read_dataframe(path, layer=layer, columns=[])
    except Exception as exc:  # pyogrio's DataSourceError and friends: the file is no vector dataset GDAL reads
        raise errors.NotAVectorFile(f"the AOI mask cannot be read ({errors.first_line(exc)})", path=path,
                                    fix=MASK_FIX) from exc
    if not info.get("crs"):
        raise errors.MissingCRS("the AOI mask has no CRS", path=path, fix=MASK_FIX)
    geometry = np.asarray(frame.geometry.to_numpy(), dtype=object)
    polygonal = ~shapely.is_missing(geometry) & np.isin(shapely.get_type_id(geometry), [3, 6])  # (Multi)Polygon
    if not polygonal.any():
        raise errors.EmptyInput("the AOI mask holds no polygon", path=path, fix=MASK_FIX)
    return MaskFile(str(path), str(info["crs"]), geometry[polygonal])
