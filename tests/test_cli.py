"""The CLI: bad inputs exit 2 with one line naming the file, the problem and the fix; good runs write outputs."""

from __future__ import annotations

import json
import sqlite3

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from conftest import pixel_to_lonlat, write_fields, write_prediction_raster

from cropmon.cli import EXIT_INPUT, EXIT_OK, main


def _fields(n: int = 6) -> gpd.GeoDataFrame:
    boxes = []
    for i in range(n):
        c, r = 2 + (i % 3) * 9, 2 + (i // 3) * 9
        (x0, x1), (y0, y1) = pixel_to_lonlat(np.array([c, c + 7]), np.array([r + 7, r]))
        boxes.append(shapely.Polygon([(x0, y0), (x1, y0 + (y1 - y0) * 0.2), (x1, y1), (x0, y1)]))
    return gpd.GeoDataFrame(
        {
            "field_id": [f"f{i}" for i in range(n)],
            "area_m2": [1000.0] * n,
            "normalized_label": ["wheat_winter", "barley_winter", "corn_silage", "radish", None, "beets"][:n],
            "year": [2022] * n,
        },
        geometry=boxes,
        crs="EPSG:4326",
    )


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(5)
    classes = rng.choice([5, 7, 21, 23], size=(30, 30)).astype(np.int16)
    confidence = rng.integers(20, 99, size=(30, 30)).astype(np.int16)
    raster = write_prediction_raster(tmp_path / "pred.tif", classes, confidence)
    fields = write_fields(tmp_path / "fields.gpkg", _fields())
    return raster, fields


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", "--scheduler", "threads", "--progress", "off", *map(str, args)])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == EXIT_INPUT, err
    lines = [line for line in err.splitlines() if line.startswith("cropmon: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_run_writes_outputs_and_manifest(tmp_path, capsys, inputs):
    raster, fields = inputs
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--raster", raster, "--fields", fields, "--out", out)
    assert code == EXIT_OK, err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["inputs"]["raster"]["layout"]["block_shape"] == [1, 30]
    assert manifest["fields"]["unknown_labels"] == {"radish": 1}
    assert manifest["fields"]["label_status"] == {"ok": 4, "unknown": 1, "null": 1}
    table = pyogrio.read_dataframe(out / "fields.gpkg", layer="fields")
    assert list(table.columns[:9]) == [
        "field_id", "area_m2", "normalized_label", "year", "majority_crop", "confidence_score",
        "majority_crop_label", "gt_label", "gt_ml_match",
    ]
    assert (out / "fields.parquet").exists() and (out / "report.html").exists()
    assert not list(tmp_path.glob(".out.*")), "no staging directory left behind"


def test_missing_raster(tmp_path, capsys, inputs):
    _, fields = inputs
    code, err = run_cli(capsys, "--raster", tmp_path / "nope.tif", "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "nope.tif", "does not exist", "Fix:")


def test_not_a_geotiff(tmp_path, capsys, inputs):
    _, fields = inputs
    bogus = tmp_path / "bogus.tif"
    bogus.write_text("this is not a raster\n")
    code, err = run_cli(capsys, "--raster", bogus, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "bogus.tif", "not a readable GeoTIFF")


def test_truncated_geotiff(tmp_path, capsys, inputs):
    raster, fields = inputs
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(raster.read_bytes()[:700])
    code, err = run_cli(capsys, "--raster", truncated, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "truncated.tif")


def test_fewer_than_four_bands(tmp_path, capsys, inputs):
    _, fields = inputs
    small = write_prediction_raster(tmp_path / "two.tif", np.zeros((30, 30), np.int16), np.zeros((30, 30)), bands=2)
    code, err = run_cli(capsys, "--raster", small, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "two.tif", "band", "2 band(s)")


def test_band_index_out_of_range(tmp_path, capsys, inputs):
    raster, fields = inputs
    code, err = run_cli(capsys, "--raster", raster, "--fields", fields, "--class-band", "12", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "class band 12 does not exist", "--class-band")


def test_non_integer_class_band(tmp_path, capsys, inputs):
    raster, fields = inputs
    floats = tmp_path / "float.tif"
    with rasterio.open(raster) as src:
        profile = src.profile | {"dtype": "float32"}
        data = src.read().astype("float32")
    with rasterio.open(floats, "w", **profile) as dst:
        dst.write(data)
    code, err = run_cli(capsys, "--raster", floats, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "float.tif", "float32, not an integer type")


def test_raster_without_crs(tmp_path, capsys, inputs):
    _, fields = inputs
    no_crs = write_prediction_raster(tmp_path / "nocrs.tif", np.zeros((30, 30), np.int16), np.zeros((30, 30)), crs=None)
    code, err = run_cli(capsys, "--raster", no_crs, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "nocrs.tif", "no CRS", "gdal_edit")


@pytest.mark.filterwarnings("ignore:'crs' was not provided:UserWarning")
def test_fields_without_crs(tmp_path, capsys, inputs):
    raster, _ = inputs
    fields = write_fields(tmp_path / "nocrs.gpkg", _fields().set_crs(None, allow_override=True))
    code, err = run_cli(capsys, "--raster", raster, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "nocrs.gpkg", "no CRS")


def test_no_overlap(tmp_path, capsys, inputs):
    raster, _ = inputs
    far = _fields()
    far.geometry = far.geometry.translate(xoff=20.0)
    fields = write_fields(tmp_path / "far.gpkg", far)
    code, err = run_cli(capsys, "--raster", raster, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "far.gpkg", "overlaps the raster")


def test_label_column_missing_then_chosen(tmp_path, capsys, inputs):
    raster, _ = inputs
    renamed = _fields().rename(columns={"normalized_label": "crop"})
    fields = write_fields(tmp_path / "renamed.gpkg", renamed)
    code, err = run_cli(capsys, "--raster", raster, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "'normalized_label' is missing", "field_id, area_m2, crop, year", "--label-column")
    code, err = run_cli(
        capsys, "--raster", raster, "--fields", fields, "--label-column", "crop", "--out", tmp_path / "o"
    )
    assert code == EXIT_OK, err


def test_empty_layer(tmp_path, capsys, inputs):
    raster, _ = inputs
    fields = write_fields(tmp_path / "empty.gpkg", _fields().iloc[:0])
    code, err = run_cli(capsys, "--raster", raster, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "empty.gpkg", "no features")


def test_multi_layer_needs_layer(tmp_path, capsys, inputs):
    raster, _ = inputs
    path = tmp_path / "multi.gpkg"
    write_fields(path, _fields(), layer="a")
    write_fields(path, _fields(), layer="b")
    code, err = run_cli(capsys, "--raster", raster, "--fields", path, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "multi.gpkg", "2 layers", "--layer")
    code, err = run_cli(capsys, "--raster", raster, "--fields", path, "--layer", "b", "--out", tmp_path / "o")
    assert code == EXIT_OK, err


def test_not_a_vector_file(tmp_path, capsys, inputs):
    raster, _ = inputs
    bogus = tmp_path / "bogus.gpkg"
    bogus.write_bytes(b"\x00not a geopackage" * 50)
    code, err = run_cli(capsys, "--raster", raster, "--fields", bogus, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "bogus.gpkg", "not a readable vector file")


def test_geopackage_with_broken_table(tmp_path, capsys, inputs):
    raster, fields = inputs
    broken = tmp_path / "broken.gpkg"
    broken.write_bytes(fields.read_bytes())
    with sqlite3.connect(broken) as db:
        table = db.execute("select table_name from gpkg_contents").fetchone()[0]
        db.execute(f'drop table "{table}"')
    code, err = run_cli(capsys, "--raster", raster, "--fields", broken, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "broken.gpkg")


def test_output_directory_not_writable(tmp_path, capsys, inputs):
    raster, fields = inputs
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = run_cli(capsys, "--raster", raster, "--fields", fields, "--out", blocker / "out")
    assert_one_line_error(code, err, "cannot be written", "--out")


def test_raster_without_fields_flag(tmp_path, capsys, inputs):
    raster, _ = inputs
    code, err = run_cli(capsys, "--raster", raster)
    assert_one_line_error(code, err, "--raster and --fields go together")


def test_gdal_virtual_paths(tmp_path, capsys, inputs):
    """Object storage and archives go through GDAL's virtual file systems (/vsis3/, /vsizip/ ...) unchanged."""
    import zipfile

    raster, fields = inputs
    archive = tmp_path / "inputs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(raster, "pred.tif")
        zf.write(fields, "fields.gpkg")
    code, err = run_cli(
        capsys, "--raster", f"/vsizip/{archive}/pred.tif", "--fields", f"/vsizip/{archive}/fields.gpkg",
        "--out", tmp_path / "o",
    )
    assert code == EXIT_OK, err
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["inputs"]["raster"]["path"].startswith("/vsizip/")
    code, err = run_cli(capsys, "--raster", f"/vsizip/{archive}/nope.tif", "--fields", fields, "--out", tmp_path / "p")
    assert_one_line_error(code, err, "nope.tif", "not a readable GeoTIFF")


def test_raster_whose_pixels_cannot_be_read(tmp_path, capsys, inputs):
    """Header fine, strips corrupted: found while computing, still one line naming the file (not a traceback)."""
    import rasterio

    raster, fields = inputs
    with rasterio.open(raster) as src:
        profile, pixels = src.profile, src.read()
    profile.update(compress="deflate")
    compressed = tmp_path / "deflate.tif"
    with rasterio.open(compressed, "w", **profile) as dst:
        dst.write(pixels)
    data = bytearray(compressed.read_bytes())
    n = len(data)
    # Garbage over strip data (not a deflate stream); the directory at the end of the file stays intact.
    data[n // 3 : n // 2] = np.random.default_rng(0).bytes(n // 2 - n // 3)
    corrupted = tmp_path / "corrupted.tif"
    corrupted.write_bytes(bytes(data))
    code, err = run_cli(capsys, "--raster", corrupted, "--fields", fields, "--out", tmp_path / "o",
                        "--scheduler", "threads")
    assert_one_line_error(code, err, "corrupted.tif", "pixels cannot be read", "same path")
    assert not (tmp_path / "o").exists()


def test_rotated_raster(tmp_path, capsys, inputs):
    import rasterio.shutil
    from affine import Affine

    raster, fields = inputs
    rotated = tmp_path / "rotated.tif"
    rasterio.shutil.copy(raster, rotated)
    with rasterio.open(rotated, "r+") as dst:
        dst.transform = dst.transform @ Affine.rotation(20)
    code, err = run_cli(capsys, "--raster", rotated, "--fields", fields, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "rotated.tif", "rotated or sheared", "Fix:", "gdalwarp")
    assert not (tmp_path / "o").exists()


# --- fields in other formats, and their bad inputs ----------------------------------------------------------------


def assert_nothing_written(tmp_path) -> None:
    assert not (tmp_path / "o").exists(), "no output directory"
    scratch = tmp_path / ".cropmon-scratch"
    assert not scratch.exists() or not any(scratch.iterdir()), "no copy of a refused input"


def test_empty_geojson(tmp_path, capsys, inputs):
    raster, _ = inputs
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}\n')
    code, err = run_cli(capsys, "--raster", raster, "--fields", empty, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "empty.geojson", "has no features", "Fix:")
    assert_nothing_written(tmp_path)


def test_parquet_without_geo_metadata(tmp_path, capsys, inputs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raster, _ = inputs
    frame = _fields()
    table = pa.table({"field_id": frame["field_id"], "normalized_label": frame["normalized_label"],
                      "geometry": shapely.to_wkb(frame.geometry.to_numpy())})
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain)
    code, err = run_cli(capsys, "--raster", raster, "--fields", plain, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "plain.parquet", "no GeoParquet `geo` metadata", "to_parquet")
    assert_nothing_written(tmp_path)


def write_shapefile(path):
    """_fields() as a Shapefile (GDAL cuts `normalized_label` to `normalized`, and says so)."""
    with pytest.warns(RuntimeWarning, match="laundered"):
        pyogrio.write_dataframe(_fields(), path, driver="ESRI Shapefile")
    return path


def test_shapefile_without_prj(tmp_path, capsys, inputs):
    raster, _ = inputs
    shp = write_shapefile(tmp_path / "nocrs.shp")
    (tmp_path / "nocrs.prj").unlink()
    code, err = run_cli(capsys, "--raster", raster, "--fields", shp, "--out", tmp_path / "o",
                        "--label-column", "normalized")
    assert_one_line_error(code, err, "nocrs.shp", "no CRS", ".prj", "ogr2ogr -a_srs")
    assert_nothing_written(tmp_path)


def test_several_geometry_columns(tmp_path, capsys, inputs):
    raster, _ = inputs
    frame = _fields()
    frame["centre"] = frame.geometry.representative_point()
    two = tmp_path / "two_geometries.parquet"
    frame.to_parquet(two)
    code, err = run_cli(capsys, "--raster", raster, "--fields", two, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "two_geometries.parquet", "2 geometry columns (geometry, centre)", "Fix:")
    assert_nothing_written(tmp_path)


def test_several_geometry_columns_read_by_gdal(tmp_path, capsys, inputs):
    """GML with an outline and a centre per field: GDAL offers one geometry column, here the points: refused."""
    raster, _ = inputs
    gml = tmp_path / "two.gml"
    gml.write_text("""<?xml version="1.0" encoding="utf-8" ?>
<ogr:FeatureCollection xmlns:ogr="http://ogr.maptools.org/" xmlns:gml="http://www.opengis.net/gml">
  <gml:featureMember><ogr:fields fid="fields.0">
    <ogr:outline><gml:Polygon srsName="EPSG:4326"><gml:outerBoundaryIs><gml:LinearRing>
      <gml:coordinates>1.94,49.93 1.945,49.93 1.945,49.935 1.94,49.93</gml:coordinates>
    </gml:LinearRing></gml:outerBoundaryIs></gml:Polygon></ogr:outline>
    <ogr:centre><gml:Point srsName="EPSG:4326"><gml:coordinates>1.943,49.932</gml:coordinates></gml:Point></ogr:centre>
    <ogr:normalized_label>wheat_winter</ogr:normalized_label>
  </ogr:fields></gml:featureMember>
</ogr:FeatureCollection>
""")
    code, err = run_cli(capsys, "--raster", raster, "--fields", gml, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "two.gml", "holds Point geometries, not field polygons", "several")
    assert_nothing_written(tmp_path)


def test_shapefile_laundered_label_column_is_named(tmp_path, capsys, inputs):
    raster, _ = inputs
    shp = write_shapefile(tmp_path / "fields.shp")
    code, err = run_cli(capsys, "--raster", raster, "--fields", shp, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "fields.shp", "'normalized_label' is missing", "'normalized' looks like it",
                          "10 characters", "--label-column normalized")
    code, err = run_cli(capsys, "--raster", raster, "--fields", shp, "--out", tmp_path / "o",
                        "--label-column", "normalized")
    assert code == EXIT_OK, err


def test_geoparquet_runs_end_to_end_with_its_copy_beside_the_outputs(tmp_path, capsys, inputs):
    raster, fields = inputs
    parquet = tmp_path / "fields.parquet"
    pyogrio.read_dataframe(fields).to_parquet(parquet)
    code, err = run_cli(capsys, "--raster", raster, "--fields", parquet, "--out", tmp_path / "o")
    assert code == EXIT_OK, err
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    source = manifest["inputs"]["fields"]
    assert source["format"] == "GeoParquet" and source["path"] == str(parquet)
    assert source["read_from"].startswith(str(tmp_path / ".cropmon-scratch"))
    assert manifest["settings"]["scratch_dir"] is None and manifest["fields"]["n_input"] == 6
