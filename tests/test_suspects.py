"""Suspect labels: relabelled fields planted in a synthetic AOI are found (and the model's own errors are not), with
their neighbours counted as a brute-force search counts them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import field, make_table

from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.diagnosis.suspects import SUSPECT_COLUMNS, neighbours_with_label, suspect_labels

CROPS = ("Winter Wheat", "Winter Barley", "Sugarbeets", "Canola")
STEP = 0.003  # degrees between fields: ~215 m in longitude, ~330 m in latitude at lat 50
KM_X, KM_Y = 111.320 * math.cos(math.radians(50.0)), 110.574


def _planted_aoi(seed: int = 0, side: int = 30, n_planted: int = 15):
    """See `_planted_table`: (fields, planted)."""
    fields, planted, _ = _planted_table(seed, side, n_planted)
    return fields, planted


def _planted_table(seed: int = 0, side: int = 30, n_planted: int = 15):
    """side x side fields in 5 x 5 patches of one crop each; the model gets 90 % right (confident, pure) and the
    rest wrong (unsure, mixed); `n_planted` fields are relabelled to another crop (the model still sees the truth)."""
    rng = np.random.default_rng(seed)
    specs, planted = [], set()
    chosen = set(rng.choice(side * side, size=n_planted, replace=False).tolist())
    for i in range(side * side):
        r, c = divmod(i, side)
        true = CROPS[((r // 5) + 2 * (c // 5)) % len(CROPS)]
        right = rng.random() < 0.9 or i in chosen
        pred = true if right else CROPS[(CROPS.index(true) + 1) % len(CROPS)]
        conf = float(np.clip(rng.normal(82, 5), 72, 97)) if right else float(np.clip(rng.normal(45, 7), 20, 65))
        purity = float(rng.uniform(0.94, 1.0)) if right else float(rng.uniform(0.55, 0.8))
        gt = true
        if i in chosen:
            gt = CROPS[(CROPS.index(true) + int(rng.integers(1, len(CROPS)))) % len(CROPS)]
            planted.add(f"f{i:04d}")
        specs.append(field(gt, pred, conf=conf, purity=purity, n_pixels=50, x=2.0 + STEP * c, y=50.0 + STEP * r,
                           runner_up=CROPS[(CROPS.index(pred) + 1) % len(CROPS)], field_id=f"f{i:04d}"))
    fields, counts = make_table(specs)
    return fields, planted, counts


def _brute_force_neighbours(fields: pd.DataFrame, row: int, k: int, max_km: float) -> tuple[int, int, bool]:
    """(found, agreeing, tied): the k nearest other fields within max_km, those whose GT is row's prediction, and
    whether the k-th and the (k+1)-th distances tie (then which of them counts is arbitrary)."""
    dx = (fields["x"].to_numpy() - fields["x"].iloc[row]) * KM_X
    dy = (fields["y"].to_numpy() - fields["y"].iloc[row]) * KM_Y
    distance = np.hypot(dx, dy)
    distance[row] = np.inf
    ranked = np.argsort(distance, kind="stable")
    order = ranked[:k]
    near = order[distance[order] <= max_km]
    agree = int((fields["gt_label"].to_numpy()[near] == fields["majority_crop_label"].iloc[row]).sum())
    tied = len(ranked) > k and math.isclose(distance[ranked[k - 1]], distance[ranked[k]])
    return len(near), agree, tied


def test_planted_relabelled_fields_are_found_and_the_models_own_errors_are_not():
    fields, planted = _planted_aoi()
    out = suspect_labels(fields, settings=DiagnosisSettings())
    assert set(out["field_id"]) == planted
    model_errors = (fields["gt_ml_match"] == 0).sum() - len(planted)
    assert model_errors > 50  # the model's errors exist, but they are unsure or mixed: none is a suspect
    assert list(out.columns) == list(SUSPECT_COLUMNS) and list(out["rank"]) == list(range(1, len(planted) + 1))
    assert out["suspect_score"].is_monotonic_decreasing
    np.testing.assert_allclose(out["suspect_score"], out["confidence_score"] / 100 * out["purity"])
    assert (out["predicted"] != out["gt_label"]).all()
    # the planted fields sit in patches of their true crop, which is what the model predicts: neighbours agree
    assert out["neighbours_agree"].median() >= 4


def test_neighbours_are_counted_as_a_brute_force_search_counts_them():
    fields, _ = _planted_aoi(seed=1)
    s = DiagnosisSettings(suspect_neighbours=8, suspect_neighbour_km=0.5)
    out = suspect_labels(fields, settings=s)
    assert len(out)
    compared = 0
    for idx, row in out.iterrows():
        found, agree, tied = _brute_force_neighbours(fields, fields.index.get_loc(idx), 8, 0.5)
        assert row["n_neighbours"] == found
        if not tied:
            assert row["neighbours_agree"] == agree
            compared += 1
    assert compared >= len(out) // 2
    none = suspect_labels(fields, settings=dataclasses.replace(s, suspect_neighbours=0))
    assert (none["n_neighbours"] == 0).all() and set(none["field_id"]) == set(out["field_id"])


def test_neighbours_with_label_by_hand():
    points = np.array([[0.0, 0.0], [0.0, 0.0], [0.3, 0.0], [2.0, 0.0], [0.0, 0.4]])  # km; two fields at one point
    labels = np.array(["A", "B", "B", "B", "A"], dtype=object)
    found, agree = neighbours_with_label(points, labels, np.array([0, 3]), np.array(["B", "A"], dtype=object),
                                         k=3, max_km=1.0)
    assert found.tolist() == [3, 0]  # field 3 is 1.6 km from the nearest other field
    assert agree.tolist() == [2, 0]  # field 0: fields 1 (distance 0) and 2 are B, field 4 is A


def test_thresholds_decide_and_the_ranking_ignores_row_order():
    specs = [
        field("Winter Wheat", "Winter Barley", conf=90.0, purity=1.0, field_id="sure"),
        field("Winter Wheat", "Winter Barley", conf=69.9, purity=1.0, field_id="unsure"),
        field("Winter Wheat", "Winter Barley", conf=90.0, purity=0.88, runner_up="Canola", field_id="mixed"),
        field("Winter Wheat", "Winter Barley", conf=90.0, purity=1.0, n_pixels=5, field_id="tiny"),
        field("Winter Wheat", "Winter Barley", conf=75.0, purity=0.92, runner_up="Canola", field_id="second"),
        field("Winter Wheat", "Winter Wheat", conf=95.0, purity=1.0, field_id="right"),
        field(None, "Winter Barley", conf=95.0, purity=1.0, field_id="unlabelled"),
    ]
    fields, _ = make_table(specs)
    out = suspect_labels(fields, settings=DiagnosisSettings())
    assert list(out["field_id"]) == ["sure", "second"]
    again = suspect_labels(fields.iloc[::-1], settings=DiagnosisSettings())
    pd.testing.assert_frame_equal(out, again.loc[out.index])
    looser = suspect_labels(fields, settings=DiagnosisSettings(suspect_min_confidence=60, suspect_min_purity=0.8,
                                                               min_pixels=5))
    assert set(looser["field_id"]) == {"sure", "unsure", "mixed", "tiny", "second"}
    none = suspect_labels(fields.loc[fields["field_id"] == "right"], settings=DiagnosisSettings())
    assert none.empty and list(none.columns) == list(SUSPECT_COLUMNS)
    with pytest.raises(Exception, match="suspect_min_purity"):
        DiagnosisSettings(suspect_min_purity=1.5)


def test_the_diagnosis_keeps_suspects_out_of_the_plan_unless_told_otherwise():
    from cropmon.diagnosis.diagnose import diagnose_run

    fields, planted, counts = _planted_table(seed=1)
    kept_out = diagnose_run(fields, counts, settings=DiagnosisSettings(), seed=0)
    suspects = set(kept_out.suspects["field_id"])
    assert suspects and suspects == planted
    cand = kept_out.selection.candidates
    assert not suspects & set(cand["field_id"]) and not suspects & set(kept_out.selection.evaluation["field_id"])
    assert not suspects & set(kept_out.selection.picks["field_id"])
    used = diagnose_run(fields, counts, settings=DiagnosisSettings(exclude_suspects=False), seed=0)
    assert suspects <= set(used.selection.candidates["field_id"])  # clean fields: the plan may use them
    pd.testing.assert_frame_equal(used.suspects, kept_out.suspects)
