"""Shared test helpers: small rasters and field files made in the test, and the path to ../shared."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import shapely.affinity

from cropmon.twin.params import BAND_DESCRIPTIONS as BAND_NAMES

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


UNKNOWN_LABEL = "radish"  # a label of the u0c GT that is no class
LABEL_POOL = ["wheat_winter", "barley_winter", "corn_silage", "Beets ", UNKNOWN_LABEL, None]


def random_fields(rng: np.random.Generator, height: int, width: int, n_cells: int) -> gpd.GeoDataFrame:
    """Disjoint irregular polygons (shrunk Voronoi cells, some shrunk to slivers) in pixel space -> lon/lat."""
    points = shapely.points(rng.uniform(-2, width + 2, n_cells), rng.uniform(-2, height + 2, n_cells))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points)))
    shrink = rng.choice([0.05, 0.3, 1.0], size=len(cells), p=[0.6, 0.3, 0.1])
    centroids = shapely.centroid(cells)
    polys = []
    for cell, s, c in zip(cells, shrink, centroids, strict=True):
        coords = shapely.get_coordinates(cell)
        center = shapely.get_coordinates(c)[0]
        # scale each cell around its centroid: 1.0 keeps it, small factors make tiny fields with no pixel centre
        factor = 0.9 if s == 0.05 else (0.5 if s == 0.3 else rng.uniform(0.02, 0.15))
        polys.append(shapely.Polygon(center + (coords - center) * factor))
    polys = np.array(polys, dtype=object)
    keep = rng.random(len(polys)) < 0.85
    polys = polys[keep]
    lonlat = shapely.transform(polys, lambda xy: np.column_stack(pixel_to_lonlat(xy[:, 0], xy[:, 1])))
    n = len(lonlat)
    return gpd.GeoDataFrame(
        {
            "field_id": [f"f{i:04d}" for i in range(n)],
            "area_m2": np.full(n, 1000.0),
            "normalized_label": [LABEL_POOL[i] for i in rng.integers(0, len(LABEL_POOL), n)],
            "year": np.full(n, 2022, dtype=np.int64),
        },
        geometry=lonlat,
        crs="EPSG:4326",
    )


def overlapping_fields(rng: np.random.Generator, height: int, width: int, n: int) -> gpd.GeoDataFrame:
    """Fields that overlap as real ground-truth exports do: random rotated rectangles and irregular polygons laid
    over one another, some wholly inside another, and exact duplicates (same polygon, another id and label)."""
    polys = []
    for _ in range(n):
        cx, cy = rng.uniform(-2, width + 2), rng.uniform(-2, height + 2)
        if rng.random() < 0.5:
            box = shapely.box(cx, cy, cx + rng.uniform(0.3, width / 2 + 1), cy + rng.uniform(0.3, height / 2 + 1))
            polys.append(shapely.affinity.rotate(box, rng.uniform(0, 90)))
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 9)))
            radius = rng.uniform(0.5, max(height, width) / 3, len(angles))
            polys.append(shapely.Polygon(np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])))
    inner = [p.buffer(-rng.uniform(0.5, 2)) for p in polys[: max(1, n // 4)]]
    polys += [p for p in inner if not p.is_empty and p.geom_type == "Polygon"]
    polys += [polys[i] for i in rng.integers(0, len(polys), max(1, n // 4))]  # exact duplicates
    order = rng.permutation(len(polys))
    polys = np.array(polys, dtype=object)[order]
    lonlat = shapely.transform(polys, lambda xy: np.column_stack(pixel_to_lonlat(xy[:, 0], xy[:, 1])))
    k = len(lonlat)
    return gpd.GeoDataFrame(
        {"field_id": [f"o{i:04d}" for i in range(k)], "area_m2": np.full(k, 1000.0),
         "normalized_label": [LABEL_POOL[i] for i in rng.integers(0, len(LABEL_POOL), k)],
         "year": np.full(k, 2022, dtype=np.int64)},
        geometry=lonlat, crs="EPSG:4326",
    )


def write_random_inputs(directory: Path, rng: np.random.Generator, height: int, width: int, *, n_classes: int,
                        n_cells: int) -> tuple[Path, Path]:
    """A random prediction raster (classes 0..n_classes-1, confidences 0..100) and random fields over it."""
    classes = rng.integers(0, n_classes, size=(height, width)).astype(np.int16)
    confidence = rng.integers(0, 101, size=(height, width)).astype(np.int16)
    raster = write_prediction_raster(directory / "p.tif", classes, confidence)
    return raster, write_fields(directory / "f.gpkg", random_fields(rng, height, width, n_cells))


def cli_process(*args: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m cropmon run ARGS` in its own process, stdout and stderr in one text stream."""
    return subprocess.Popen(
        [sys.executable, "-m", "cropmon", "run", "--progress", "off", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


@pytest.fixture
def restore_cropmon_logging():
    """main() points cropmon's logger at the test's captured stderr; later library calls must not log there."""
    logger = logging.getLogger("cropmon")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:], logger.level = handlers, level
