"""A multi-AOI run end to end: three small twins (calibrated, harder, easier) through `python -m cropmon run --aoi`,
per-AOI outputs, the pooled tables checked against the per-AOI ones, and the label allocation."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cropmon.cli import EXIT_OK, main
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.twin import make_twin

AOIS = {"a": (0, None), "b": (1, 2.0), "c": (2, 0.5)}  # name: (seed, quality); b is harder, c easier


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("aois")
    args = ["run", "--scheduler", "threads", "--progress", "off", "--out", str(root / "out")]
    for name, (seed, quality) in AOIS.items():
        twin = make_twin(root / f"twin_{name}", scale=1 / 64, seed=seed, quality=quality)
        args += ["--aoi", f"{name}={twin.raster},{twin.fields}"]
    assert main(args) == EXIT_OK
    return root / "out"


def _per_aoi(out, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name / "crop_metrics.csv").assign(aoi=name)


def test_per_aoi_outputs_and_manifest(multi_run):
    out = multi_run
    for name in AOIS:
        for file in ("fields.parquet", "crop_metrics.csv", "evaluation_fields.csv", "report.html", "run.json"):
            assert (out / name / file).is_file(), f"{name}/{file}"
    manifest = json.loads((out / "run.json").read_text())
    assert list(manifest["aois"]) == list(AOIS)
    assert all(info["timings_s"]["compute"] > 0 for info in manifest["aois"].values())
    expected = {"crop_metrics_pooled.csv", "crop_metrics_by_aoi.csv", "label_allocation.csv", "f1_by_aoi.png",
                "fields_to_label_by_aoi.csv", "report.md", "report.html"}  # fmt: skip
    assert expected <= set(manifest["pooled_outputs"])
    assert all((out / name).is_file() for name in manifest["pooled_outputs"])
    # which worker ran which stage: each AOI's run.json counts its own tasks, the run's run.json all of them
    assert manifest["cluster"]["stages"]["assemble-table"]["tasks"] == len(AOIS)
    assert manifest["cluster"]["stages"]["pooled"]["tasks"] == 1
    for name in AOIS:
        stages = json.loads((out / name / "run.json").read_text())["cluster"]["stages"]
        assert stages["assemble-table"]["tasks"] == stages["diagnosis"]["tasks"] == stages["report"]["tasks"] == 1
        assert stages["image"]["tasks"] == 6 and "pooled" not in stages  # tail.IMAGE_NAMES
        assert all(stage["workers"] for stage in stages.values())


def test_pooled_tables_agree_with_the_per_aoi_tables(multi_run):
    out = multi_run
    per_aoi = pd.concat([_per_aoi(out, name) for name in AOIS], ignore_index=True)
    pooled = pd.read_csv(out / "crop_metrics_pooled.csv").set_index("crop")
    assert list(pooled.reset_index().columns[:4]) == ["crop", "num_fields", "agreement_score", "weighted_f1_score"]
    sums = per_aoi.groupby("crop")[["num_fields", "n_correct", "n_predicted"]].sum()
    pd.testing.assert_frame_equal(pooled[sums.columns].sort_index(), sums.sort_index(), check_dtype=False)
    in_gt = sums.loc[sums["num_fields"] > 0]
    # pooled agreement = the field-weighted mean of the AOIs (both CSVs round to 2 decimals: 0.005 each)
    weighted = (per_aoi["agreement_score"] * per_aoi["num_fields"]).groupby(per_aoi["crop"]).sum() / sums["num_fields"]
    assert (pooled.loc[in_gt.index, "agreement_score"] - weighted.loc[in_gt.index]).abs().max() <= 0.0101
    exact = in_gt["n_correct"] / in_gt["num_fields"]
    assert (pooled.loc[in_gt.index, "agreement_score"] - exact).abs().max() <= 0.005

    by_aoi = pd.read_csv(out / "crop_metrics_by_aoi.csv")
    merged = by_aoi.merge(per_aoi, on=["crop", "aoi"], suffixes=("", "_own"), validate="one_to_one")
    assert len(merged) == len(per_aoi)
    for column in ("num_fields", "agreement_score", "f1"):
        assert (merged[column] - merged[f"{column}_own"]).abs().max() <= 0.0051, column


def test_harder_aoi_is_harder_and_gets_the_labels_for_its_weak_crops(multi_run):
    out = multi_run
    overview = pd.read_csv(out / "aoi_overview.csv").set_index("aoi")
    assert overview.at["b", "agreement"] < overview.at["a", "agreement"] < overview.at["c", "agreement"]
    assert overview.at["b", "label_targets"] > overview.at["a", "label_targets"] > overview.at["c", "label_targets"]

    allocation = pd.read_csv(out / "label_allocation.csv")
    role = allocation.pivot(index="crop", columns="aoi", values="role")
    quota = allocation.pivot(index="crop", columns="aoi", values="quota")
    target = allocation.pivot(index="crop", columns="aoi", values="target")
    n = allocation.pivot(index="crop", columns="aoi", values="num_fields")
    # A crop weak in the harder AOI and fine in the easier one is labelled in the harder one only.
    weak_b_fine_c = role.index[(role["b"] == "underperforming") & (role["c"] == "fine")]
    assert len(weak_b_fine_c) >= 1
    assert (quota.loc[weak_b_fine_c, "c"] == 0).all()
    assert (quota.loc[weak_b_fine_c, "b"] > 0).any()
    # A crop weak in both needs more labels where it is weaker.
    both = (role["b"] == "underperforming") & (role["c"] == "underperforming")
    assert both.sum() >= 5
    assert (target.loc[both, "b"] >= target.loc[both, "c"]).all()
    solid = both & (n["b"] >= DiagnosisSettings().min_fields)
    assert (target.loc[solid, "b"] > target.loc[solid, "c"]).all() and solid.sum() >= 3
    assert (allocation["quota"] <= allocation["wanted"]).all()
    assert (allocation.loc[allocation["role"] == "fine", "quota"] == 0).all()


def test_fields_to_label_follow_the_allocation_and_respect_held_back_fields(multi_run):
    out = multi_run
    allocation = pd.read_csv(out / "label_allocation.csv")
    picks = pd.read_csv(out / "fields_to_label_by_aoi.csv")
    assert list(picks.columns[:5]) == ["field_id", "aoi", "crop", "score", "reason"]
    counts = picks.groupby(["aoi", "crop"]).size().to_dict()
    assert counts == allocation.loc[allocation["quota"] > 0].set_index(["aoi", "crop"])["quota"].to_dict()
    assert allocation["wanted"].sum() <= DiagnosisSettings().label_budget  # no budget binds at this size, so ...
    for name in AOIS:
        mine = set(picks.loc[picks["aoi"] == name, "field_id"])
        own = set(pd.read_csv(out / name / "fields_to_label.csv")["field_id"])
        held = set(pd.read_csv(out / name / "evaluation_fields.csv")["field_id"])
        assert mine == own  # ... the pooled list is each AOI's own list
        assert not mine & held
    report = (out / "report.md").read_text()
    assert "The hardest AOI is b" in report and "## Label allocation across AOIs" in report
