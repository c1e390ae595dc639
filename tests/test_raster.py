"""Rasters as users hand them over: tiled and Cloud-Optimized GeoTIFFs read in tile-aligned chunks, class bands with
a scale/offset or a colour table read raw, and rotated grids refused up front."""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from conftest import random_fields, write_fields, write_prediction_raster

from cropmon.engine.job import EngineSettings, analyse_fields
from cropmon.errors import RotatedRaster
from cropmon.io import raster as raster_io

PER_FIELD = ["n_pixels", "n_invalid", "majority_crop", "purity", "confidence_score", "tie", "pixel_rule"]


@pytest.fixture
def striped(tmp_path):
    """A 70 x 90 striped raster (the real layout) and random fields over it."""
    rng = np.random.default_rng(11)
    classes = rng.choice([3, 7, 20, 28], size=(70, 90)).astype(np.int16)
    confidence = rng.integers(10, 99, size=(70, 90)).astype(np.int16)
    raster = write_prediction_raster(tmp_path / "striped.tif", classes, confidence)
    fields = write_fields(tmp_path / "f.gpkg", random_fields(rng, 70, 90, 25))
    return raster, fields


def test_cloud_optimized_geotiff_reads_in_whole_tiles(tmp_path, striped):
    raster, fields = striped
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(raster, cog, driver="COG", blocksize=16, compress="deflate", overview_resampling="nearest",
                         overviews="AUTO")
    with rasterio.open(cog) as src:
        assert src.block_shapes[0] == (16, 16) and src.overviews(3), "a tiled file with overviews"
    info = raster_io.inspect_raster(cog)
    assert info.block_shape == (16, 16)
    for requested in (None, 5, 20, 40):
        rows = raster_io.chunk_rows_for(info, requested)
        assert rows % 16 == 0 or rows == info.height, "a chunk holds whole tile rows: each tile is decoded once"
        bands = raster_io.open_prediction_bands(info, chunk_rows=rows)
        assert bands.shape == (2, 70, 90), "full resolution, not an overview"
    expected = analyse_fields(raster, fields).table[PER_FIELD]
    for rows in (None, 20):
        got = analyse_fields(cog, fields, settings=EngineSettings(chunk_rows=rows)).table[PER_FIELD]
        assert got.equals(expected)


def test_scale_offset_and_colour_table_leave_class_ids_raw(tmp_path, striped):
    raster, fields = striped
    scaled = tmp_path / "scaled.tif"
    rasterio.shutil.copy(raster, scaled)
    with rasterio.open(scaled, "r+") as dst:
        dst.scales = [1.0, 1.0, 0.5, 1.0, *[1.0] * 6]
        dst.offsets = [0.0, 0.0, 100.0, 0.0, *[0.0] * 6]
    with rasterio.open(scaled) as src:
        assert src.scales[2] == 0.5 and src.offsets[2] == 100.0
    expected = analyse_fields(raster, fields).table[PER_FIELD]
    assert analyse_fields(scaled, fields).table[PER_FIELD].equals(expected)

    # A paletted file: GeoTIFF keeps a colour table on an 8/16-bit first band, so class = band 1, confidence = 2.
    paletted = tmp_path / "paletted.tif"
    with rasterio.open(raster) as src:
        classes, confidence = src.read(3), src.read(4)
        profile = src.profile | {"count": 2, "dtype": "uint8", "photometric": "palette"}
    with rasterio.open(paletted, "w", **profile) as dst:
        dst.write(np.stack([classes, confidence]).astype(np.uint8))
        dst.write_colormap(1, {i: (i * 8, 255 - i * 8, 0, 255) for i in range(32)})
    with rasterio.open(paletted) as src:
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette and src.colormap(1)[7][0] == 56
    got = analyse_fields(paletted, fields, settings=EngineSettings(class_band=1, confidence_band=2)).table[PER_FIELD]
    assert got.equals(expected)


@pytest.mark.parametrize("skew", [Affine.rotation(12), Affine.shear(5, 0)], ids=["rotated", "sheared"])
def test_rotated_or_sheared_raster_is_refused_with_the_fix(tmp_path, striped, skew):
    raster, _ = striped
    skewed = tmp_path / "skewed.tif"
    rasterio.shutil.copy(raster, skewed)
    with rasterio.open(skewed, "r+") as dst:
        dst.transform = dst.transform @ skew
    with pytest.raises(RotatedRaster, match=rf"{re.escape(str(skewed))}: .*rotated or sheared.*gdalwarp -r near"):
        raster_io.inspect_raster(skewed)
