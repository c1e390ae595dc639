"""Any model's classes, end to end: a 3-class model on a raster and fields made here, checked against brute-force
numpy; a class list with gaps in its ids; raster values outside the catalogue; bad class files at the CLI."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from conftest import pixel_to_lonlat, write_fields, write_prediction_raster

from cropmon.catalogue import read_catalogue
from cropmon.cli import EXIT_INPUT, EXIT_OK, main
from cropmon.twin.check import field_votes

SIDE = 48
BOX = 6  # fields are BOX x BOX pixel squares on pixel edges: their pixel centres are exactly the square's pixels
LABELS = ["wheat", "Barley ", "maize_silage", "MAIZE", "radish", None]
CSV = "class_id,crop,aliases\n0,Wheat,wheat;wheat_winter\n1,Barley,barley\n2,Maize,maize;maize_silage\n"


def _boxes(n: int) -> list[tuple[int, int]]:
    """Top-left pixel (row, col) of n disjoint squares with a one-pixel gap."""
    per_row = SIDE // (BOX + 1)
    return [((i // per_row) * (BOX + 1), (i % per_row) * (BOX + 1)) for i in range(n)]


def _inputs(tmp_path, values: list[int], *, n_fields: int = 36, seed: int = 0):
    """A raster whose class values are drawn from `values` (each field mostly one value), fields over it."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(values, size=(SIDE, SIDE)).astype(np.int16)
    corners = _boxes(n_fields)
    for r, c in corners:  # a dominant value per field, with noise: majorities are clear but not trivial
        block = classes[r : r + BOX, c : c + BOX]
        block[rng.random(block.shape) < 0.7] = rng.choice(values)
    confidence = rng.integers(20, 99, size=(SIDE, SIDE)).astype(np.int16)
    raster = write_prediction_raster(tmp_path / "pred.tif", classes, confidence)
    polygons = []
    for r, c in corners:
        (x0, x1), (y0, y1) = pixel_to_lonlat(np.array([c, c + BOX]), np.array([r + BOX, r]))
        polygons.append(shapely.box(x0, y0, x1, y1))
    gdf = gpd.GeoDataFrame(
        {"field_id": [f"f{i:02d}" for i in range(n_fields)], "area_m2": 1e4,
         "normalized_label": [LABELS[i % len(LABELS)] for i in range(n_fields)], "year": 2022},
        geometry=polygons, crs="EPSG:4326",
    )  # fmt: skip
    fields = write_fields(tmp_path / "fields.gpkg", gdf)
    return raster, fields, classes, corners


def _brute_force_majority(classes: np.ndarray, corners, ids: list[int]) -> list[float]:
    """Each square's most frequent value among the catalogue's ids (ties: the lowest id); NaN without one."""
    out = []
    for r, c in corners:
        block = classes[r : r + BOX, c : c + BOX].ravel()
        counts = np.array([(block == i).sum() for i in ids])
        out.append(float(ids[int(np.argmax(counts))]) if counts.sum() else np.nan)
    return out


def _run(capsys, *args) -> tuple[int, str]:
    code = main(["run", "--scheduler", "threads", "--progress", "off", *map(str, args)])
    return code, capsys.readouterr().err


def test_a_three_class_model_end_to_end(tmp_path, capsys):
    raster, fields, classes, corners = _inputs(tmp_path, [0, 1, 2])
    (tmp_path / "classes.csv").write_text(CSV)
    out = tmp_path / "out"
    code, err = _run(capsys, "--raster", raster, "--fields", fields, "--classes", tmp_path / "classes.csv",
                     "--out", out)
    assert code == EXIT_OK, err
    names = ["Wheat", "Barley", "Maize"]
    table = pd.read_parquet(out / "fields.parquet")
    assert table["majority_crop"].tolist() == _brute_force_majority(classes, corners, [0, 1, 2])
    assert set(table["majority_crop_label"]) == set(names)
    expected_gt = {"wheat": "Wheat", "Barley ": "Barley", "maize_silage": "Maize", "MAIZE": "Maize"}
    assert table["gt_label"].tolist() == [expected_gt.get(v, "") for v in table["normalized_label"]]
    counts = pd.read_parquet(out / "field_class_counts.parquet")
    assert list(counts.columns) == ["field_id", *names]
    for (r, c), (_, row) in zip(corners, counts.iterrows(), strict=True):
        block = classes[r : r + BOX, c : c + BOX]
        assert [row[n] for n in names] == [int((block == i).sum()) for i in range(3)]
    # The field-level confusion matrix against the table's own label vectors, crossed by hand.
    confusion = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert list(confusion.index) == list(confusion.columns) == names
    scored = table.loc[(table["gt_label"] != "") & (table["n_pixels"] > 0)]
    by_hand = pd.crosstab(scored["gt_label"], scored["majority_crop_label"]).reindex(
        index=names, columns=names, fill_value=0)
    np.testing.assert_array_equal(confusion.to_numpy(), by_hand.to_numpy())
    assert list(pd.read_csv(out / "confusion_matrix_pixels.csv", index_col=0).columns) == names
    metrics = pd.read_csv(out / "crop_metrics.csv")
    assert set(metrics["crop"]) <= set(names) and metrics["num_fields"].sum() == len(scored)
    for name in ("underperforming_crops.csv", "label_plan.csv", "fields_to_label.csv", "evaluation_fields.csv"):
        written = pd.read_csv(out / name)
        assert set(written.get("crop", pd.Series(dtype=object))) <= set(names), name
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["inputs"]["classes"] == {
        "source": str(tmp_path / "classes.csv"), "n_classes": 3, "ids": [0, 1, 2], "names": names}
    assert manifest["settings"]["classes"] == str(tmp_path / "classes.csv")
    report = (out / "report.md").read_text()
    assert "Grassland" not in report and "Winter Wheat" not in report and "| Maize |" in report
    # The twin's independent check reads the same files with the same catalogue and agrees.
    votes = field_votes(raster, fields, read_catalogue(tmp_path / "classes.csv"))
    np.testing.assert_array_equal(votes["majority"], table["majority_crop"].fillna(-1).astype(int))


def test_json_and_csv_give_the_same_run(tmp_path, capsys):
    raster, fields, _, _ = _inputs(tmp_path, [0, 1, 2], n_fields=12, seed=3)
    (tmp_path / "c.csv").write_text(CSV)
    (tmp_path / "c.json").write_text(json.dumps(
        {"Wheat": ["wheat", "wheat_winter"], "Barley": ["barley"], "Maize": ["maize", "maize_silage"]}))
    for name in ("c.csv", "c.json"):
        code, err = _run(capsys, "--raster", raster, "--fields", fields, "--classes", tmp_path / name,
                         "--out", tmp_path / name.replace(".", "_"))
        assert code == EXIT_OK, err
    for output in ("crop_metrics.csv", "confusion_matrix.csv", "label_plan.csv"):
        assert (tmp_path / "c_csv" / output).read_text() == (tmp_path / "c_json" / output).read_text()


def test_ids_with_gaps_and_values_outside_the_catalogue(tmp_path, capsys, caplog):
    """Ids 1, 2, 5: a field's majority is a class id, never a position; the raster's 0s (a background value
    here) are no class: counted, named in the log, the manifest and the report, never scored."""
    raster, fields, classes, corners = _inputs(tmp_path, [0, 1, 2, 5, 5, 5, 5, 5, 5, 1, 2], seed=1)
    (tmp_path / "gaps.csv").write_text("class_id,crop,aliases\n1,Wheat,wheat\n2,Barley,barley\n5,Maize,maize\n")
    out = tmp_path / "out"
    code, err = _run(capsys, "--raster", raster, "--fields", fields, "--classes", tmp_path / "gaps.csv",
                     "--out", out)
    assert code == EXIT_OK, err
    table = pd.read_parquet(out / "fields.parquet")
    assert table["majority_crop"].tolist() == _brute_force_majority(classes, corners, [1, 2, 5])
    in_fields = np.concatenate([classes[r : r + BOX, c : c + BOX].ravel() for r, c in corners])
    zeros = int((in_fields == 0).sum())
    assert zeros > 0 and table["n_invalid"].sum() == zeros
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["fields"]["invalid_class_values"] == {"0": zeros}
    assert f"0 ({zeros:,} px)" in (out / "report.md").read_text()
    assert any("no class of the 3 classes (ids 1..5)" in r.message for r in caplog.records)


def test_a_class_list_that_is_not_the_rasters_is_refused(tmp_path, capsys):
    """A u0c raster (values up to 31) scored with a 3-class list: most field pixels are no class of it."""
    raster, fields, _, _ = _inputs(tmp_path, list(range(32)), n_fields=12)
    (tmp_path / "classes.csv").write_text(CSV)
    code, err = _run(capsys, "--raster", raster, "--fields", fields, "--classes", tmp_path / "classes.csv",
                     "--out", tmp_path / "o")
    assert code == EXIT_INPUT, err
    line = [x for x in err.splitlines() if x.startswith("cropmon: error:")]
    assert len(line) == 1 and "pred.tif" in line[0] and "no class of the 3 classes (ids 0..2)" in line[0]
    assert "--classes FILE" in line[0] and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [("two.json", '{"Wheat": ["wheat"], "Durum": ["Wheat"]}', "the label 'Wheat' matches two classes"),
     ("dup.csv", "class_id,crop,aliases\n0,Wheat,wheat\n0,Barley,barley\n", "class id 0 is given twice"),
     ("bad.json", "{nope", "not valid JSON")],
)  # fmt: skip
def test_a_bad_class_file_exits_2_before_any_work(tmp_path, capsys, name, text, problem):
    (tmp_path / name).write_text(text)
    code, err = _run(capsys, "--raster", tmp_path / "absent.tif", "--fields", tmp_path / "absent.gpkg",
                     "--classes", tmp_path / name, "--out", tmp_path / "o")
    assert code == EXIT_INPUT, err
    lines = [x for x in err.splitlines() if x.startswith("cropmon: error:")]
    assert len(lines) == 1 and f"{tmp_path / name}: " in lines[0] and problem in lines[0] and "Fix:" in lines[0]
    assert "absent.tif" not in err  # the class list is checked with the settings, before the inputs
