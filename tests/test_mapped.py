"""The mapped area (engine/mapped.py): pixels per class over the whole raster, each row's ellipsoidal pixel area,
the AOI mask, against independent answers (a closed-form ellipsoid area, rasterio's pixel-centre burn, bincount)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from conftest import ORIGIN, PIXEL, write_fields, write_prediction_raster

from cropmon.catalogue import Catalogue
from cropmon.cli import EXIT_INPUT, main
from cropmon.engine.job import EngineSettings, analyse_fields
from cropmon.engine.mapped import count_mapped, row_pixel_areas
from cropmon.engine.zonal import ClassSlots
from cropmon.errors import NoOverlap

WGS84_A, WGS84_F = 6378137.0, 1 / 298.257223563


def ellipsoid_band_area(lat_top: float, lat_bottom: float, dlon: float) -> float:
    """The area (m2) of the WGS 84 quadrangle between two parallels over `dlon` degrees of longitude, in closed
    form (Snyder 1987, the authalic q function): an answer independent of pyproj."""
    b2 = (WGS84_A * (1 - WGS84_F)) ** 2
    e2 = WGS84_F * (2 - WGS84_F)
    e = np.sqrt(e2)

    def q(lat: float) -> float:
        s = np.sin(np.radians(lat))
        return s / (1 - e2 * s * s) + np.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return abs(b2 * np.radians(dlon) / 2 * (q(lat_top) - q(lat_bottom)))


def test_row_areas_are_the_ellipsoidal_cell_areas():
    transform = Affine(PIXEL, 0, 1.40625, 0, -PIXEL, 50.625)
    areas = row_pixel_areas(transform, "EPSG:4326", 5218)
    for row in (0, 1000, 5217):
        top = 50.625 - row * PIXEL
        assert areas[row] == pytest.approx(ellipsoid_band_area(top, top - PIXEL, PIXEL), rel=1e-8)
    # the whole u0c cell: 1.40625 x 1.40625 degrees, ~15,700 km2; the cells shrink towards the pole
    assert areas.sum() * 5218 == pytest.approx(ellipsoid_band_area(50.625, 50.625 - 5218 * PIXEL, 5218 * PIXEL),
                                               rel=1e-8)
    assert (np.diff(areas) > 0).all() and 570 < areas[0] < areas[-1] < 590


def test_projected_rasters_use_the_transform_in_square_metres():
    utm = Affine(10.0, 0, 500_000, 0, -10.0, 5_500_000)
    np.testing.assert_array_equal(row_pixel_areas(utm, "EPSG:32631", 3), [100.0] * 3)
    feet = Affine(30.0, 0, 6_000_000, 0, -30.0, 2_000_000)  # California zone 3, US survey feet
    assert row_pixel_areas(feet, "EPSG:2227", 2)[0] == pytest.approx((30 * 1200 / 3937) ** 2, rel=1e-12)


def test_count_mapped_on_the_raw_band():
    rng = np.random.default_rng(3)
    classes = rng.integers(-3, 40, size=(7, 11)).astype(np.int16)
    confidence = rng.integers(0, 100, size=(7, 11)).astype(np.int16)
    classes[0, :3], confidence[1, :2] = -9, -9  # nodata in either band
    inside = rng.random((7, 11)) < 0.7
    area = np.linspace(1.0, 2.0, 7)
    for ids in (np.arange(32), np.array([2, 5, 30])):  # the u0c catalogue and one with gaps
        m = count_mapped(classes, confidence, area, ClassSlots.of(ids), nodata=-9, inside=inside)
        nodata = (classes == -9) | (confidence == -9)
        ok = inside & ~nodata
        want = np.array([(ok & (classes == v)).sum() for v in ids])
        np.testing.assert_array_equal(m.pixels, want)
        np.testing.assert_allclose(m.area_m2, [((ok & (classes == v)) * area[:, None]).sum() for v in ids])
        assert m.outside == (~inside).sum() and m.nodata == (inside & nodata).sum()
        assert m.n_valid + m.invalid + m.nodata + m.outside == classes.size


def _mask_file(tmp_path, polygons, crs="EPSG:4326"):
    path = tmp_path / "mask.gpkg"
    gpd.GeoDataFrame({"name": [f"p{i}" for i in range(len(polygons))]}, geometry=polygons, crs=crs).to_file(
        path, layer="aoi", driver="GPKG", engine="pyogrio")
    return path


def _fields(height: int, width: int) -> gpd.GeoDataFrame:
    x0, y0 = ORIGIN
    boxes = [shapely.box(x0 + c * PIXEL, y0 - (r + 4) * PIXEL, x0 + (c + 4) * PIXEL, y0 - r * PIXEL)
             for r, c in ((1, 1), (10, 12), (20, 3))]
    return gpd.GeoDataFrame({"field_id": ["a", "b", "c"], "area_m2": 1.0, "normalized_label": "wheat_winter",
                             "year": 2022}, geometry=boxes, crs="EPSG:4326")


def test_the_aoi_mask_restricts_the_population(tmp_path):
    from rasterio.features import rasterize

    height, width = 30, 25
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 32, size=(height, width)).astype(np.int16)
    raster = write_prediction_raster(tmp_path / "p.tif", classes, np.full_like(classes, 70))
    fields = write_fields(tmp_path / "f.gpkg", _fields(height, width))
    x0, y0 = ORIGIN
    triangle = shapely.Polygon([(x0 + 2.3 * PIXEL, y0 - 1.7 * PIXEL), (x0 + 21.6 * PIXEL, y0 - 6.2 * PIXEL),
                                (x0 + 8.1 * PIXEL, y0 - 27.4 * PIXEL)])
    hole = shapely.box(x0 + 15 * PIXEL, y0 - 29 * PIXEL, x0 + 24 * PIXEL, y0 - 20 * PIXEL)
    mask = _mask_file(tmp_path, [triangle, hole])
    result = analyse_fields(raster, fields, settings=EngineSettings(chunk_rows=7, aoi_mask=mask))
    inside = rasterize([triangle, hole], out_shape=(height, width),
                       transform=Affine(PIXEL, 0, x0, 0, -PIXEL, y0)).astype(bool)  # pixel centres, as GDAL
    np.testing.assert_array_equal(result.mapped.pixels, np.bincount(classes[inside], minlength=32))
    assert result.mapped.outside == (~inside).sum()
    assert result.mapped_area["pixels"].sum() == inside.sum()
    # fields whose point lies inside the mask: a (rows 1-4, cols 1-4) is outside the triangle's tip
    assert result.in_population.tolist() == [bool(triangle.contains(shapely.Point(x, y))
                                                  or hole.contains(shapely.Point(x, y)))
                                             for x, y in zip(result.table["x"], result.table["y"], strict=True)]


def test_a_mask_that_misses_the_raster_is_refused_in_one_line(tmp_path, capsys):
    classes = np.zeros((10, 10), np.int16)
    raster = write_prediction_raster(tmp_path / "p.tif", classes, classes + 50)
    fields = write_fields(tmp_path / "f.gpkg", _fields(10, 10).iloc[:1])
    far = _mask_file(tmp_path, [shapely.box(10, 10, 11, 11)])
    with pytest.raises(NoOverlap, match="covers no pixel centre"):
        analyse_fields(raster, fields, settings=EngineSettings(aoi_mask=far))
    code = main(["run", "--raster", str(raster), "--fields", str(fields), "--aoi-mask", str(far), "--out",
                 str(tmp_path / "out"), "--scheduler", "threads", "--progress", "off"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("cropmon: error:")]
    assert len(lines) == 1 and "mask.gpkg: the AOI mask covers no pixel centre" in lines[0] and "Fix:" in lines[0]
    assert not (tmp_path / "out").exists()


def test_mapped_area_follows_another_catalogue(tmp_path):
    classes = np.array([[1, 5, 5, 9], [1, 1, 7, 5]], np.int16)
    raster = write_prediction_raster(tmp_path / "p.tif", classes, classes * 0 + 60)
    fields = _fields(2, 4).iloc[:1]
    fields.geometry = [shapely.box(ORIGIN[0], ORIGIN[1] - 2 * PIXEL, ORIGIN[0] + 2 * PIXEL, ORIGIN[1])]
    cat = Catalogue.from_rows([(1, "Wheat", ["wheat_winter"]), (5, "Barley", ["barley"]), (7, "Beet", ["beet"])])
    result = analyse_fields(raster, write_fields(tmp_path / "f.gpkg", fields), settings=EngineSettings(catalogue=cat))
    table = result.mapped_area.set_index("crop")
    assert table["pixels"].to_dict() == {"Wheat": 3, "Barley": 3, "Beet": 1}
    assert result.mapped.invalid == 1  # the 9


def test_masks_per_aoi_and_their_flags():
    from cropmon.config import aoi_parts, build_config
    from cropmon.errors import ConfigError

    config = build_config({"aois": ["n=a.tif,a.gpkg,n_mask.gpkg", "s=b.tif,b.gpkg"]}, environ={})
    assert [aoi_parts(a) for a in config.aois] == [("n", "a.tif", "a.gpkg", "n_mask.gpkg"),
                                                   ("s", "b.tif", "b.gpkg", None)]
    with pytest.raises(ConfigError, match="--aoi-mask and --aoi exclude each other"):
        build_config({"aois": ["n=a.tif,a.gpkg"], "aoi_mask": "m.gpkg"}, environ={})
    assert build_config({"aoi_mask": "m.gpkg"}, environ={}).aoi_mask == "m.gpkg"
