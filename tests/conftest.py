"""Shared test helpers: small rasters and field files made in the test, and the path to ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropmon.twin_params import BAND_DESCRIPTIONS as BAND_NAMES

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "reference"
PIXEL = 0.00026949458523585647  # the real file's pixel size (degrees)
ORIGIN = (1.9390135407719873, 49.93869411713038)  # the real clip's top-left corner



def shared_reference() -> Path:
    """../shared/reference, or skip the test with the reason."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the real reference files are only beside a checkout with ../shared")
    return SHARED


def write_prediction_raster(
    path: Path,
    classes: np.ndarray,
    confidence: np.ndarray,
    *,
    nodata: float | None = None,
    origin: tuple[float, float] = ORIGIN,
    pixel: float = PIXEL,
    crs: str | None = "EPSG:4326",
    bands: int = 10,
) -> Path:
    """A striped, pixel-interleaved int16 GeoTIFF laid out like the real predictions (class = 3, conf = 4)."""
    import rasterio
    from affine import Affine

    height, width = classes.shape
    profile = {
        "driver": "GTiff",
        "dtype": "int16",
        "count": bands,
        "height": height,
        "width": width,
        "transform": Affine(pixel, 0, origin[0], 0, -pixel, origin[1]),
        "interleave": "pixel",
        "tiled": False,
        "blockysize": 1,
        "nodata": nodata,
    }
    if crs:
        profile["crs"] = crs
    data = np.zeros((bands, height, width), dtype=np.int16)
    data[min(2, bands - 1)] = classes
    if bands >= 4:
        data[3] = confidence
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i in range(bands):
            dst.set_band_description(i + 1, BAND_NAMES[i] if i < len(BAND_NAMES) else f"band_{i + 1}")
    return path


def write_fields(path: Path, gdf, *, layer: str = "u0c_gt_filtered_2022") -> Path:
    import pyogrio

    pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG")
    return path


def pixel_to_lonlat(col: np.ndarray, row: np.ndarray, origin=ORIGIN, pixel=PIXEL):
    return origin[0] + np.asarray(col) * pixel, origin[1] - np.asarray(row) * pixel
