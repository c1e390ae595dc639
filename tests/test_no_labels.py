"""Runs without ground truth, end to end on a small twin: no label column, --no-labels, only some fields labelled,
a multi-AOI run where one AOI has no labels, the API; the suspect labels of a run with GT (relabelled fields planted
in the twin and found through a real run) and its headline of what the ranking finds; and bad input: labels none of
which is a class, a budget larger than the fields, a class with no field."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import write_fields

import cropmon
from cropmon.cli import EXIT_INPUT, EXIT_OK, main
from cropmon.diagnosis.blocks import seeded_hash
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.diagnosis.suspects import SUSPECT_COLUMNS
from cropmon.diagnosis.uncertainty import UNCERTAINTY_COLUMNS
from cropmon.diagnosis.unlabelled import PICK_COLUMNS, QUOTA_COLUMNS
from cropmon.labels import CROP_NAMES, LABELS_DICT
from cropmon.twin import make_twin

GT_ONLY_FILES = ("crop_metrics.csv", "confusion_matrix.csv", "underperforming_crops.csv", "label_plan.csv",
                 "evaluation_fields.csv", "accuracy_assessment.csv", "error_matrix_area.csv", "suspect_labels.csv",
                 "confusion_heatmap.png", "area_adjusted.png")
NO_LABEL_FILES = {"fields.gpkg", "fields.parquet", "field_class_counts.parquet", "field_uncertainty.parquet",
                  "mapped_area.csv", "fields_to_label.csv", "fields_to_label.gpkg", "unlabelled_quotas.csv",
                  "map_window.png", "report.md", "report.html", "run.json"}


pytestmark = pytest.mark.usefixtures("restore_cropmon_logging")


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("nolabels")
    paths = make_twin(root / "twin", scale=1 / 64, seed=3)
    fields = gpd.read_file(paths.fields)
    write_fields(root / "unlabelled.gpkg", fields.drop(columns="normalized_label"))
    half = fields.copy()
    half.loc[half.index[::2], "normalized_label"] = None
    write_fields(root / "half.gpkg", half)
    return root, paths.raster, paths.fields, fields


def run(tmp_out, raster, fields, *args: str, capsys=None) -> tuple[int, str]:
    code = main(["run", "--scheduler", "threads", "--progress", "off", "--raster", str(raster), "--fields",
                 str(fields), "--out", str(tmp_out), *args])
    out = capsys.readouterr() if capsys is not None else None
    return code, (out.out + out.err) if out is not None else ""


@pytest.fixture(scope="module")
def unlabelled_run(twin):
    root, raster, _, _ = twin
    assert run(root / "out_unlabelled", raster, root / "unlabelled.gpkg")[0] == EXIT_OK
    return root / "out_unlabelled"


@pytest.fixture(scope="module")
def gt_run(twin):
    root, raster, fields, _ = twin
    assert run(root / "out_gt", raster, fields)[0] == EXIT_OK
    return root / "out_gt"


def _acquisition_oracle(fields: pd.DataFrame, counts: pd.DataFrame) -> np.ndarray:
    """(1 - confidence / 100 + 1 - (p1 - p2)) / 2 by brute force from the histogram (p: the pixel shares)."""
    values = counts.to_numpy(float)
    total = values.sum(axis=1)
    shares = np.divide(values, total[:, None], out=np.zeros_like(values), where=total[:, None] > 0)
    top = -np.sort(-shares, axis=1)
    margin = 1 - (top[:, 0] - top[:, 1])
    band4 = 1 - fields["confidence_score"].to_numpy(float) / 100
    score = 0.5 * (np.where(np.isnan(band4), margin, band4) + margin)
    return np.where(total > 0, score, np.nan)


def test_a_fields_file_without_labels_is_ranked_and_says_what_it_cannot_tell(twin, unlabelled_run):
    out = unlabelled_run
    manifest = json.loads((out / "run.json").read_text())
    assert set(manifest["outputs"]) == NO_LABEL_FILES and all((out / name).is_file() for name in NO_LABEL_FILES)
    assert not any((out / name).exists() for name in GT_ONLY_FILES)
    assert manifest["ground_truth"]["fields"] == "none" and manifest["inputs"]["fields"]["label_column"] is None
    assert manifest["accuracy_assessment"]["estimated"] is False and manifest["ranking"] == {}
    assert manifest["fields"]["n_labelled"] == 0

    fields = pd.read_parquet(out / "fields.parquet")
    counts = pd.read_parquet(out / "field_class_counts.parquet")
    scores = pd.read_parquet(out / "field_uncertainty.parquet")
    assert list(scores.columns) == ["field_id", "predicted", *UNCERTAINTY_COLUMNS]
    assert scores["field_id"].tolist() == fields["field_id"].tolist()  # every field, in the table's order
    class_columns = [c for c in counts.columns if c in CROP_NAMES]
    oracle = _acquisition_oracle(fields, counts[class_columns])
    np.testing.assert_allclose(scores["acquisition_score"].to_numpy(float), oracle, rtol=0, atol=1e-12)
    assert scores["acquisition_score"].notna().sum() == (fields["n_pixels"] > 0).sum()

    picks = pd.read_csv(out / "fields_to_label.csv")
    quotas = pd.read_csv(out / "unlabelled_quotas.csv")
    assert list(picks.columns) == list(PICK_COLUMNS) and list(quotas.columns) == list(QUOTA_COLUMNS)
    assert picks["rank"].tolist() == list(range(1, len(picks) + 1)) and picks["field_id"].is_unique
    s = DiagnosisSettings()
    assert 0 < len(picks) <= s.label_budget
    assert picks.groupby(["predicted", "block"]).size().max() <= s.max_per_block
    per_class = picks["predicted"].value_counts()
    quota = quotas.set_index("crop")["quota"]
    assert per_class.to_dict() == quota.loc[quota > 0].to_dict()
    picked = fields.set_index("field_id").loc[picks["field_id"]]
    assert (picked["n_pixels"] >= s.min_pixels).all() and (picked["pixel_rule"] == "centre").all()
    assert (picked["majority_crop_label"].to_numpy() == picks["predicted"].to_numpy()).all()
    # within a class and a pick round the most uncertain come first
    for _, group in picks.groupby(["predicted", "pick_round"]):
        assert group["acquisition_score"].is_monotonic_decreasing
    # the mapped area the quotas share out is the engine's (mapped_area.csv), not the fields' pixels
    mapped = pd.read_csv(out / "mapped_area.csv").set_index("crop")["area_ha"]
    listed = quotas.set_index("crop")["area"]
    np.testing.assert_allclose(listed.to_numpy(), mapped.reindex(listed.index).to_numpy(), rtol=1e-4)

    report = (out / "report.md").read_text()
    assert "without ground truth" in report and "cannot tell how accurate the map is" in report
    assert "has no label column 'normalized_label'" in report
    assert "Overall accuracy" not in report and "Underperforming crops" not in report


def test_the_cli_says_the_run_had_no_ground_truth(twin, capsys, tmp_path):
    root, raster, _, _ = twin
    code, text = run(tmp_path / "o", raster, root / "unlabelled.gpkg", capsys=capsys)
    assert code == EXIT_OK
    assert "fields without ground truth" in text and "to label" in text
    assert "has no label column 'normalized_label': analysed without ground truth" in text


def test_no_labels_hides_the_labels_of_a_labelled_file(twin, unlabelled_run, tmp_path):
    _, raster, fields_path, _ = twin
    assert run(tmp_path / "hidden", raster, fields_path, "--no-labels")[0] == EXIT_OK
    hidden = tmp_path / "hidden"
    manifest = json.loads((hidden / "run.json").read_text())
    assert manifest["ground_truth"]["fields"] == "none" and manifest["settings"]["no_labels"] is True
    table = pd.read_parquet(hidden / "fields.parquet")
    assert table["normalized_label"].isna().all() and table["gt_class"].isna().all()
    # the same picks as from the file without the label column: the labels play no part
    for name in ("fields_to_label.csv", "unlabelled_quotas.csv"):
        assert (hidden / name).read_bytes() == (unlabelled_run / name).read_bytes(), name
    assert "--no-labels: the labels were not read" in (hidden / "report.md").read_text()


def test_a_label_column_without_any_label_is_a_run_without_ground_truth(twin, tmp_path):
    _, raster, _, fields = twin
    empty = write_fields(tmp_path / "empty.gpkg", fields.assign(normalized_label=None))
    assert run(tmp_path / "o", raster, empty)[0] == EXIT_OK
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["ground_truth"]["fields"] == "none"
    assert manifest["inputs"]["fields"]["label_column"] == "normalized_label"
    assert "no field carries a label" in (tmp_path / "o" / "report.md").read_text()


def test_some_fields_labelled_the_others_are_the_pool(twin, tmp_path):
    root, raster, _, fields = twin
    assert run(tmp_path / "half", raster, root / "half.gpkg")[0] == EXIT_OK
    out = tmp_path / "half"
    labelled = set(fields["field_id"].iloc[1::2])
    unlabelled = set(fields["field_id"].iloc[::2])
    gt_picks = pd.read_csv(out / "fields_to_label.csv")
    new_picks = pd.read_csv(out / "unlabelled_to_label.csv")
    held = pd.read_csv(out / "evaluation_fields.csv")
    assert set(gt_picks["field_id"]) <= labelled and set(held["field_id"]) <= labelled
    assert len(new_picks) and set(new_picks["field_id"]) <= unlabelled
    metrics = pd.read_csv(out / "crop_metrics.csv")
    table = pd.read_parquet(out / "fields.parquet")
    assert metrics["num_fields"].sum() == table["gt_ml_match"].notna().sum()
    assert table.loc[table["field_id"].isin(unlabelled), "gt_ml_match"].isna().all()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["ground_truth"]["fields"] == "some"
    assert manifest["ground_truth"]["n_without_label"] == len(unlabelled)
    assert manifest["unlabelled_plan"]["n_picked"] == len(new_picks)
    assert {"unlabelled_to_label.gpkg", "unlabelled_quotas.csv", "suspect_labels.csv"} <= set(manifest["outputs"])
    report = (out / "report.md").read_text()
    assert "Fields without a label" in report and "unlabelled_to_label.csv" in report
    assert gpd.read_file(out / "unlabelled_to_label.gpkg")["field_id"].tolist() == new_picks["field_id"].tolist()


def test_a_multi_aoi_run_where_one_aoi_has_no_labels(twin, gt_run, tmp_path):
    root, raster, fields_path, _ = twin
    other = make_twin(tmp_path / "other", scale=1 / 64, seed=4)
    bare = write_fields(tmp_path / "bare.gpkg", gpd.read_file(other.fields).drop(columns="normalized_label"))
    out = tmp_path / "multi"
    code = main(["run", "--scheduler", "threads", "--progress", "off", "--out", str(out),
                 "--aoi", f"gt={raster},{fields_path}", "--aoi", f"bare={other.raster},{bare}"])
    assert code == EXIT_OK
    assert (out / "bare" / "fields_to_label.csv").is_file() and not (out / "bare" / "crop_metrics.csv").exists()
    # the pooled metrics are the AOI with GT's own: the AOI without adds nothing to them
    pooled = pd.read_csv(out / "crop_metrics_pooled.csv").set_index("crop").sort_index()
    own = pd.read_csv(out / "gt" / "crop_metrics.csv").set_index("crop").sort_index()
    pd.testing.assert_series_equal(pooled["num_fields"], own["num_fields"])
    overview = pd.read_csv(out / "aoi_overview.csv").set_index("aoi")
    assert overview.at["bare", "fields_scored"] == 0 and np.isnan(overview.at["bare", "agreement"])
    assert overview.at["bare", "labels_allocated"] == 0
    assert "Without ground truth: bare" in (out / "report.md").read_text()

    only_bare = tmp_path / "only_bare"
    code = main(["run", "--scheduler", "threads", "--progress", "off", "--out", str(only_bare),
                 "--aoi", f"one={other.raster},{bare}", "--aoi", f"two={raster},{root / 'unlabelled.gpkg'}"])
    assert code == EXIT_OK
    manifest = json.loads((only_bare / "run.json").read_text())
    assert set(manifest["pooled_outputs"]) == {"aoi_overview.csv", "report.md", "report.html"}
    assert "none with a usable label: nothing to pool" in (only_bare / "report.md").read_text()


def test_the_api_without_labels(twin, unlabelled_run):
    _, raster, fields_path, fields = twin
    results = cropmon.analyse(raster, fields.drop(columns="normalized_label"), scheduler="threads")
    d = cropmon.diagnose(results)
    assert not d.has_labels and d.ranking is None and d.accuracy is None
    tables = cropmon.tables_of(d, results)
    assert d.accuracy_assessment.empty and d.suspect_labels.empty and tables["label_plan"].empty
    written = pd.read_csv(unlabelled_run / "fields_to_label.csv")
    assert tables["fields_to_label"]["field_id"].tolist() == written["field_id"].tolist()
    assert d.unlabelled_to_label["field_id"].tolist() == written["field_id"].tolist()
    assert d.unlabelled_quotas["quota"].sum() == len(written)
    uncertainty = tables["field_uncertainty"]
    assert len(uncertainty) == len(fields) and uncertainty["field_id"].tolist() == fields["field_id"].tolist()
    page = cropmon.report_of(d, results)
    assert "without ground truth" in page.html and "without ground truth" in d._repr_html_()
    hidden = cropmon.diagnose(cropmon.analyse(raster, fields_path, scheduler="threads", no_labels=True))
    assert cropmon.tables_of(hidden)["fields_to_label"]["field_id"].tolist() == written["field_id"].tolist()


def _plant(table: pd.DataFrame, n: int, seed: int = 0) -> dict[str, str]:
    """Relabel `n` fields the model gets right, confidently and purely, to another crop: {field_id: new label}."""
    s = DiagnosisSettings()
    sure = table.loc[(table["gt_ml_match"] == 1) & (table["confidence_score"] >= s.suspect_min_confidence + 5)
                     & (table["purity"] >= 0.97) & (table["n_pixels"] >= s.min_pixels)
                     & (table["pixel_rule"] == "centre")]
    chosen = sure.sample(n, random_state=seed)
    other = {crop: next(c for c in ("Sugarbeets", "Canola", "Potatoes") if c != crop) for crop in CROP_NAMES}
    return {fid: LABELS_DICT[other[crop]][0] for fid, crop in zip(chosen["field_id"], chosen["gt_label"], strict=True)}


def test_suspect_labels_planted_in_a_twin_are_found_through_a_run(twin, gt_run, tmp_path):
    _, raster, _, fields = twin
    before = pd.read_csv(gt_run / "suspect_labels.csv")
    assert list(before.columns) == list(SUSPECT_COLUMNS)
    table = pd.read_parquet(gt_run / "fields.parquet")
    planted = _plant(table, 12)
    relabelled = fields.copy()
    rows = relabelled["field_id"].isin(planted)
    relabelled.loc[rows, "normalized_label"] = relabelled.loc[rows, "field_id"].map(planted)
    path = write_fields(tmp_path / "relabelled.gpkg", relabelled)
    assert run(tmp_path / "o", raster, path)[0] == EXIT_OK
    out = tmp_path / "o"
    after = pd.read_csv(out / "suspect_labels.csv")
    # every planted field is found, and nothing else but the suspects the run had before
    assert set(planted) <= set(after["field_id"])
    assert set(after["field_id"]) == set(planted) | set(before["field_id"])
    found = after.set_index("field_id").loc[list(planted)]
    truth = table.set_index("field_id").loc[list(planted), "gt_label"].astype(str)
    assert (found["predicted"] == truth).all()  # the prediction is the crop the field had before
    assert (found["gt_label"] != truth).all()
    assert after["rank"].tolist() == list(range(1, len(after) + 1))
    assert after["suspect_score"].is_monotonic_decreasing
    # the plan neither labels them nor holds them back until they are reviewed
    for name in ("fields_to_label.csv", "evaluation_fields.csv"):
        assert not set(pd.read_csv(out / name)["field_id"]) & set(after["field_id"]), name
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["suspect_labels"]["n"] == len(after) and manifest["suspect_labels"]["kept_out_of_plan"]
    per_crop = after["gt_label"].value_counts()
    assert manifest["suspect_labels"]["by_crop"] == per_crop.to_dict()
    report = (out / "report.md").read_text()
    assert f"{len(after):,} suspect labels" in report
    top = per_crop.index[0]
    assert f"| {top} | {per_crop.iloc[0]} |" in report  # the count per crop


def test_the_headline_of_a_run_with_gt_is_what_the_ranking_finds(gt_run):
    manifest = json.loads((gt_run / "run.json").read_text())
    ranking = manifest["ranking"]
    table = pd.read_parquet(gt_run / "fields.parquet")
    scores = pd.read_parquet(gt_run / "field_uncertainty.parquet")
    scored = table["gt_ml_match"].notna().to_numpy()
    score = scores["acquisition_score"].to_numpy(float)[scored]
    keys = seeded_hash(table.loc[scored, "field_id"], 0)
    order = np.lexsort((keys, -score))  # brute force: most uncertain first, ties on the seeded hash
    wrong = (table.loc[scored, "gt_ml_match"] == 0).to_numpy()
    k = min(DiagnosisSettings().ranking_k, scored.sum())
    assert ranking["k"] == k and ranking["errors_in_top_k"] == wrong[order[:k]].sum()
    assert ranking["random_share"] == pytest.approx(wrong.mean(), abs=1e-5)
    assert ranking["share_low"] <= ranking["share"] <= ranking["share_high"]
    assert "binomial" in ranking["assumption"]
    report = (gt_run / "report.md").read_text()
    headline = report.split("## Underperforming crops")[0]
    assert f"The {k:,} most uncertain fields" in headline and "at random" in headline
    assert f"{100 * ranking['share']:.1f} %" in headline


def test_labels_none_of_which_is_a_class_exit_2_in_one_line(twin, capsys, tmp_path):
    _, raster, _, fields = twin
    path = write_fields(tmp_path / "radish.gpkg", fields.assign(normalized_label="radish"))
    code, text = run(tmp_path / "o", raster, path, capsys=capsys)
    assert code == EXIT_INPUT, text
    lines = [line for line in text.splitlines() if line.startswith("cropmon: error:")]
    assert len(lines) == 1 and "Traceback" not in text
    assert "none of the" in lines[0] and "'radish'" in lines[0] and "--no-labels" in lines[0]
    assert not (tmp_path / "o").exists()


def test_the_labels_in_another_column_are_named(twin, capsys, tmp_path):
    _, raster, _, fields = twin
    path = write_fields(tmp_path / "renamed.gpkg", fields.rename(columns={"normalized_label": "culture"}))
    code, text = run(tmp_path / "o", raster, path, capsys=capsys)
    assert code == EXIT_INPUT and "column 'culture' holds labels" in text and "--label-column culture" in text
    code, text = run(tmp_path / "o", raster, path, "--no-labels", "--label-column", "culture", capsys=capsys)
    assert code == EXIT_INPUT and "exclude each other" in text
    assert run(tmp_path / "o", raster, path, "--label-column", "culture")[0] == EXIT_OK


def test_a_budget_larger_than_the_fields_picks_every_field_it_can(twin, unlabelled_run, tmp_path):
    root, raster, _, _ = twin
    config = tmp_path / "big.toml"
    config.write_text("[diagnosis]\nlabel_budget = 1000000\n")
    assert run(tmp_path / "o", raster, root / "unlabelled.gpkg", "--config", str(config))[0] == EXIT_OK
    quotas = pd.read_csv(tmp_path / "o" / "unlabelled_quotas.csv")
    picks = pd.read_csv(tmp_path / "o" / "fields_to_label.csv")
    assert set(quotas["status"]) <= {"all_picked", "no_field", "no_area"}
    assert (quotas["quota"] == quotas["available"]).all() and len(picks) == quotas["available"].sum()
    assert len(picks) >= len(pd.read_csv(unlabelled_run / "fields_to_label.csv"))


def test_a_class_with_area_but_no_field_gets_no_quota(unlabelled_run):
    quotas = pd.read_csv(unlabelled_run / "unlabelled_quotas.csv")
    picks = pd.read_csv(unlabelled_run / "fields_to_label.csv")
    empty = quotas.loc[(quotas["area"] > 0) & (quotas["available"] == 0)]
    assert len(empty), "the twin maps classes on pixels outside every field"
    assert (empty["status"] == "no_field").all() and (empty["quota"] == 0).all()
    assert not set(empty["crop"]) & set(picks["predicted"])
    report = (unlabelled_run / "report.md").read_text()
    assert "have mapped area but no field to pick" in report


def test_a_budget_of_zero_gives_an_empty_list_with_its_columns(twin, tmp_path):
    root, raster, _, _ = twin
    config = tmp_path / "zero.toml"
    config.write_text("[diagnosis]\nlabel_budget = 0\n")
    assert run(tmp_path / "o", raster, root / "unlabelled.gpkg", "--config", str(config))[0] == EXIT_OK
    picks = pd.read_csv(tmp_path / "o" / "fields_to_label.csv")
    assert picks.empty and list(picks.columns) == list(PICK_COLUMNS)
    assert "No field to label: the budget is 0" in (tmp_path / "o" / "report.md").read_text()


def test_compare_refuses_a_run_without_ground_truth(unlabelled_run, gt_run, capsys):
    code = main(["compare", str(unlabelled_run), str(gt_run)])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "no ground truth" in err and "Traceback" not in err
