"""The pooled view: exact pooled metrics, the label allocation worked out by hand, and compact summaries."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import aoi_summary, hand_example, make_table, table_from_confusion

from cropmon.catalogue import U0C
from cropmon.diagnosis import metrics, pooled, select
from cropmon.diagnosis.diagnose import underperforming_crops
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.labels import CROP_NAMES
from cropmon.quotas import within_budget
from cropmon.report import pooled as pooled_report
from cropmon.report.wording import allocation_derivation, plan_derivation

WW, WB, SB, GC = "Winter Wheat", "Winter Barley", "Spring Barley", "Grain Corn"


def _confusion(cells: dict[tuple[str, str], int]) -> pd.DataFrame:
    """A GT x predicted matrix of field counts from {(gt, predicted): count}."""
    m = pd.DataFrame(0, index=list(CROP_NAMES), columns=list(CROP_NAMES))
    for (gt, pred), count in cells.items():
        m.loc[gt, pred] = count
    return m


def _aoi(cells: dict[tuple[str, str], int], seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    return table_from_confusion(_confusion(cells), seed=seed)


def _concat(*tables: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    fields = pd.concat([f for f, _ in tables], ignore_index=True)
    counts = pd.concat([c for _, c in tables], ignore_index=True)
    return fields, counts


def test_one_aoi_from_sums_is_crop_metrics():
    """A summary's matrices and sums rebuild metrics.crop_metrics exactly (messy hand example included)."""
    fields, counts = make_table(hand_example())
    s = aoi_summary(fields, counts)
    rebuilt = metrics.crop_table(s.confusion, s.pixel_confusion, s.sums)
    pd.testing.assert_frame_equal(rebuilt, metrics.crop_metrics(fields, counts), check_dtype=False)


def test_pooled_metrics_equal_crop_metrics_of_all_fields_together():
    """Pooling summaries = computing on the concatenated per-field tables (sums and counts, not mean of means)."""
    rng = np.random.default_rng(3)
    tables = []
    for seed in range(3):
        cells = {(gt, pred): int(rng.integers(0, 40)) for gt in (WW, WB, SB, GC) for pred in (WW, WB, SB, GC)}
        tables.append(_aoi(cells, seed=seed))
    tables.append(make_table(hand_example()))
    summaries = {f"aoi{i}": aoi_summary(f, c) for i, (f, c) in enumerate(tables)}
    expected = metrics.crop_metrics(*_concat(*tables))
    pd.testing.assert_frame_equal(pooled.pooled_metrics(summaries), expected, check_dtype=False)


def test_pooled_numbers_by_hand():
    """east: Winter Wheat 9 of 10 right (1 -> Winter Barley); west: 15 of 30 (15 -> Winter Barley); Winter Barley
    10 of 10 in both. Confidence is 80 when right, 45 when wrong (table_from_confusion)."""
    east = _aoi({(WW, WW): 9, (WW, WB): 1, (WB, WB): 10}, seed=1)
    west = _aoi({(WW, WW): 15, (WW, WB): 15, (WB, WB): 10}, seed=2)
    summaries = {"east": aoi_summary(*east), "west": aoi_summary(*west)}
    table = pooled.pooled_metrics(summaries).set_index("crop")
    assert table.at[WW, "num_fields"] == 40
    assert table.at[WW, "agreement_score"] == pytest.approx(24 / 40)
    assert table.at[WW, "conf_mean"] == pytest.approx((24 * 80 + 16 * 45) / 40)
    assert table.at[WW, "weighted_f1_score"] == pytest.approx(2 * 0.6 / 1.6)
    assert table.at[WB, "precision"] == pytest.approx(20 / 36)
    assert table.at[WB, "f1"] == pytest.approx(2 * 20 / (20 + 36))
    by_aoi = pooled.metrics_by_aoi(summaries, pooled.pooled_metrics(summaries)).set_index(["crop", "aoi"])
    assert by_aoi.at[(WW, "east"), "agreement_score"] == pytest.approx(0.9)
    assert by_aoi.at[(WW, "east"), "agreement_vs_pooled"] == pytest.approx(0.3)
    assert by_aoi.at[(WW, "west"), "agreement_vs_pooled"] == pytest.approx(-0.1)
    assert by_aoi.at[(WW, "west"), "severity"] in ("high", "medium")  # 0.5 < 0.7: fails the rule in the west only
    assert pd.isna(by_aoi.at[(WW, "east"), "severity"])


def _rows(spec: list[tuple[str, str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"crop": c, "aoi": a, "role": r, "severity": None, "num_fields": 50, "agreement_score": 0.5, "f1": 0.5,
             "conf_mean": 50.0, "target": t, "available": v, "eval_fields": 0, "area_share": 0.1, "error": 0.5,
             "raw_target": float(t), "linked_target": np.nan, "linked_to": ""}
            for c, a, r, t, v in spec
        ]
    )  # fmt: skip


ROWS = [
    ("X", "a", "underperforming", 60, 40),  # wants 40 (supply)
    ("X", "b", "fine", 0, 0),  # fine in b: nothing
    ("Y", "a", "underperforming", 30, 100),  # wants 30 (target)
    ("Y", "b", "underperforming", 50, 10),  # wants 10 (supply)
]


@pytest.mark.parametrize(
    ("budget", "quota"),
    [
        (None, [40, 0, 30, 10]),  # no budget: min(target, available)
        (500, [40, 0, 30, 10]),  # budget not binding
        (40, [20, 0, 15, 5]),  # 80 wanted, 40 to give: each x 0.5
        (41, [21, 0, 15, 5]),  # x 0.5125 = 20.5, 0, 15.375, 5.125 -> floors 40, the extra one to the largest rest
    ],
)
def test_allocation_by_hand(budget, quota):
    out = pooled.allocate_labels(_rows(ROWS), budget=budget)
    assert out["wanted"].tolist() == [40, 0, 30, 10]
    assert out["quota"].tolist() == quota
    x, y = quota[0] + quota[1], quota[2] + quota[3]
    assert out["crop_quota"].tolist() == [x, x, y, y]
    assert out["share_of_crop"].iloc[2] == pytest.approx(quota[2] / y)
    words = allocation_derivation(out, DiagnosisSettings(label_budget=budget))
    assert words[1].startswith("fine here") and "pooled" not in words[1]  # a fine row is not budgeted
    assert ("pooled budget" in words[0]) == (budget is not None and budget < 80)
    assert "40 informative fields in label blocks -> 40" in words[0]


def test_apportion_never_exceeds_wanted_and_spends_the_budget():
    rng = np.random.default_rng(0)
    for _ in range(200):
        wanted = rng.integers(0, 300, size=rng.integers(1, 40))
        budget = int(rng.integers(0, 2 * wanted.sum() + 1))
        quota = within_budget(wanted, budget)
        assert (quota <= wanted).all() and (quota >= 0).all()
        assert quota.sum() == min(budget, wanted.sum())


def test_labels_by_aoi_takes_each_crops_best_ranked_candidates():
    candidates = pd.DataFrame(
        {
            "rank": [1, 2, 3, 4, 5],
            "field_id": ["x1", "y1", "x2", "y2", "x3"],
            "crop": ["X", "Y", "X", "Y", "X"],
            "score": [2.0, 1.9, 1.5, 1.2, 1.1],
            "reason": ["r"] * 5,
        }
    ).reindex(columns=list(select.PICK_COLUMNS))
    summaries = {"a": SimpleNamespace(candidates=candidates.iloc[::-1])}  # order comes from `rank`, not the rows
    allocation = pd.DataFrame({"aoi": ["a", "a"], "crop": ["X", "Y"], "quota": [2, 0]})
    picks = pooled.labels_by_aoi(summaries, allocation)
    assert picks["field_id"].tolist() == ["x1", "x2"]
    assert picks["aoi"].tolist() == ["a", "a"]
    assert picks["rank_in_aoi"].tolist() == [1, 2]


@pytest.fixture(scope="module")
def weak_in_b():
    """Spring Barley is fine in AOI a (57 of 60 right) and weak in b (24 of 60, the rest -> Winter Barley)."""
    a = _aoi({(SB, SB): 57, (SB, WB): 3, (WB, WB): 200, (WW, WW): 300}, seed=5)
    b = _aoi({(SB, SB): 24, (SB, WB): 36, (WB, WB): 200, (WW, WW): 300}, seed=6)
    summaries = {"a": aoi_summary(*a), "b": aoi_summary(*b)}
    return summaries, {"a": a, "b": b}


def test_allocation_labels_the_weak_crop_where_it_is_weak(weak_in_b):
    summaries, tables = weak_in_b
    settings = DiagnosisSettings()
    allocation = pooled.allocate_labels(pooled.allocation_rows(summaries), budget=2000)
    row = allocation.set_index(["crop", "aoi"])
    assert row.at[(SB, "b"), "role"] == "underperforming" and row.at[(SB, "b"), "quota"] > 0
    assert row.at[(SB, "a"), "role"] == "fine" and row.at[(SB, "a"), "quota"] == 0
    words = allocation_derivation(allocation, settings).set_axis(row.index)
    assert "fine here" in words[(SB, "a")]
    assert row.at[(WB, "b"), "role"] == "contrast"  # it absorbs Spring Barley in b
    assert (allocation["quota"] <= allocation["wanted"]).all()
    assert (allocation["wanted"] <= allocation[["target", "available"]].min(axis=1)).all()

    picks = pooled.labels_by_aoi(summaries, allocation)
    assert set(picks.loc[picks["crop"] == SB, "aoi"]) == {"b"}
    got = picks.groupby(["aoi", "crop"]).size()
    assert got.to_dict() == allocation.loc[allocation["quota"] > 0].set_index(["aoi", "crop"])["quota"].to_dict()
    # The AOI's own plan (same settings, same seed) holds back its evaluation fields: none of them is to label.
    fields, counts = tables["b"]
    crop_table = metrics.crop_metrics(fields, counts)
    confusion = metrics.confusion_matrix(fields)
    flagged = underperforming_crops(crop_table, confusion, settings)
    held = select.plan_selection(fields, crop_table, flagged, confusion, settings=settings, seed=0).evaluation
    assert len(held) > 0
    assert not set(held["field_id"]) & set(picks.loc[picks["aoi"] == "b", "field_id"])


def test_summary_is_compact():
    """No per-field table in the summary: per-crop tables, 32 x 32 matrices, and candidates bounded by the plan."""
    big = _aoi({(WW, WW): 6000, (WW, WB): 2000, (WB, WB): 3000, (SB, SB): 500, (SB, WB): 1500}, seed=7)
    s = aoi_summary(*big)
    assert len(big[0]) == 13_000
    assert len(s.crop_table) <= 32 and s.sums.shape == (32, len(metrics.SUM_COLUMNS))
    assert s.confusion.shape == s.pixel_confusion.shape == (32, 32)
    bound = int(np.minimum(s.plan["target"], s.plan["available"]).sum())
    assert 0 < len(s.candidates) <= bound <= 32 * s.settings.label_max
    assert "geometry" not in s.candidates.columns


def test_write_pooled_files_and_report(weak_in_b, tmp_path):
    summaries, _ = weak_in_b
    written = pooled_report.write_pooled(summaries, tmp_path, settings=DiagnosisSettings(), seed=0)
    assert sorted(written) == sorted(p.name for p in tmp_path.iterdir())
    assert (tmp_path / "f1_by_aoi.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(tmp_path / "crop_metrics_pooled.csv")
    assert list(table.columns[:4]) == list(metrics.REFERENCE_METRIC_COLUMNS)
    assert table.set_index("crop").at[SB, "num_fields"] == 120
    text = (tmp_path / "report.md").read_text()
    assert "**Spring Barley**: agreement 0.40 in b (60 fields) against 0.95 in a (60)" in text
    assert "other diagnosis settings" not in text
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html

    other = pooled_report.write_pooled(summaries, tmp_path / "other", settings=DiagnosisSettings(min_f1=0.8), seed=0)
    assert "other diagnosis settings" in (tmp_path / "other" / "report.md").read_text()
    assert "report.md" in other


def test_allocation_rows_drop_the_aois_own_budget_step():
    """An AOI's plan may have been cut by its own budget; the pooled plan starts from min(target, available)."""
    plan = pd.DataFrame(
        {"crop": [SB], "role": ["underperforming"], "severity": ["high"], "num_fields": [300],
         "agreement_score": [0.4], "f1": [0.4], "conf_mean": [50.0], "area_share": [0.04], "error": [0.6],
         "raw_target": [119.6], "linked_target": [np.nan], "linked_to": [""], "target": [120], "available": [90],
         "quota": [40], "eval_fields": [30]}
    )  # fmt: skip
    settings = DiagnosisSettings(label_budget=2000)
    own = plan_derivation(plan, settings, own_budget=False).iloc[0]
    assert plan_derivation(plan, settings).iloc[0] == own + "; budget 2000 -> 40"  # the AOI's own plan was cut
    crop_table = pd.DataFrame({"crop": [SB], "num_fields": [300]})
    rows = pooled.allocation_rows({"a": SimpleNamespace(plan=plan, crop_table=crop_table, catalogue=U0C)})
    allocation = pooled.allocate_labels(rows, budget=None)
    assert allocation.at[0, "quota"] == 90
    words = allocation_derivation(allocation, DiagnosisSettings(label_budget=None)).iloc[0]
    assert words.startswith(own + "; pooled: 90") and "budget 2000" not in words
