"""The underperforming rule: tiers and reason codes by hand, settings validation, monotone thresholds, real u0c."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from conftest import shared_reference
from diagnosis_fixtures import field, hand_example, make_table, overall_of, table_from_confusion
from hypothesis import given, settings
from hypothesis import strategies as st

from cropmon.diagnosis import metrics
from cropmon.diagnosis.diagnose import TIERS, underperforming_crops
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.errors import ConfigError
from cropmon.report.wording import rule_text, with_rule

# The hand example with min_fields = 3 (see diagnosis_fixtures.hand_example), worked out by hand:
# Spring Barley: agreement 0.2, F1 2/7 < 0.3 -> critical; 4 of 5 fields go to Winter Barley.
# Grain Corn: agreement 0 -> critical, but 2 fields < 3 -> high; mean confidence 55 < 60.
# Grassland Cultivated: F1 0 -> critical, no GT field -> high; predicted once for 0 GT fields.
# Winter Barley: agreement 0.5, F1 4/11 -> medium (confidence 60 is not < 60); 1/4 each to Spring Barley and Winter
#   Wheat; predicted 7 times for 4 fields (>= 1.5 x); precision 2/7.
# Winter Wheat: agreement 2/3 -> medium; errors spread (1/6 to two crops).
# Silage Corn: agreement 0.5, F1 0.4 -> medium, 2 fields -> low; 1 of 2 to Grain Corn; 3 predictions for 2 fields.
HAND_FLAGGED = [
    ("Spring Barley", "critical", "absorbed_by:Winter Barley;low_precision"),
    ("Grain Corn", "high", "absorbed_by:Silage Corn;low_precision;low_confidence;too_few_fields"),
    ("Grassland Cultivated", "high", "over_predicted;low_precision;too_few_fields"),
    ("Winter Barley", "medium", "absorbed_by:Spring Barley;absorbed_by:Winter Wheat;over_predicted;low_precision"),
    ("Winter Wheat", "medium", "scattered_errors"),
    ("Silage Corn", "low", "absorbed_by:Grain Corn;over_predicted;low_precision;too_few_fields"),
]


def _flag(specs, **overrides):
    fields, counts = make_table(specs)
    table = metrics.crop_metrics(fields, counts)
    return underperforming_crops(table, metrics.confusion_matrix(fields), DiagnosisSettings(**overrides))


def test_hand_example_tiers_and_reasons():
    flagged = _flag(hand_example(), min_fields=3)
    got = list(flagged[["crop", "severity", "reasons"]].itertuples(index=False, name=None))
    assert got == HAND_FLAGGED
    assert list(flagged["reason"]) == [r.split(";")[0] for _, _, r in HAND_FLAGGED]
    wb = flagged.set_index("crop").loc["Winter Barley"]
    assert (wb["wrong_fields"], wb["false_alarms"], wb["absorbed_by"]) == (2, 5, "Spring Barley")


def test_rule_is_spelled_out_with_the_numbers():
    s = DiagnosisSettings(min_agreement=0.65, min_confidence=55, min_fields=7)
    flagged = _flag(hand_example(), min_agreement=0.65, min_confidence=55, min_fields=7)
    assert not flagged.empty and "rule" not in flagged.columns  # the rule in words is the report's (wording.py)
    text = rule_text(s)
    assert "agreement < 0.65" in text and "confidence < 55" in text and "7 GT fields" in text
    assert set(with_rule(flagged, s)["rule"]) == {text}


def test_confident_good_crop_passes_and_unsure_good_crop_is_low():
    specs = [field("Winter Wheat", "Winter Wheat", conf=85.0) for _ in range(30)]
    specs += [field("Canola", "Canola", conf=45.0) for _ in range(30)]
    flagged = _flag(specs)
    assert list(flagged["crop"]) == ["Canola"]
    assert (flagged.at[0, "severity"], flagged.at[0, "reasons"], flagged.at[0, "failed"]) == (
        "low", "low_confidence", "low_confidence"
    )  # fmt: skip


def test_never_predicted_crop():
    specs = [field("Winter Rye", "Winter Barley", conf=70.0) for _ in range(25)]
    specs += [field("Winter Barley", "Winter Barley") for _ in range(100)]
    flagged = _flag(specs).set_index("crop")
    assert flagged.at["Winter Rye", "reasons"] == "never_predicted;absorbed_by:Winter Barley"
    assert flagged.at["Winter Rye", "severity"] == "critical"
    # Winter Barley takes 25 false alarms: precision 0.8 and F1 0.89 pass, agreement 1.
    assert "Winter Barley" not in flagged.index


def test_no_crop_flagged_gives_an_empty_table_with_the_columns():
    flagged = _flag([field("Winter Wheat", "Winter Wheat") for _ in range(30)])
    assert flagged.empty
    assert {"crop", "severity", "reason", "reasons"} <= set(flagged.columns)


@pytest.mark.parametrize(
    ("name", "value"),
    [("min_agreement", 1.5), ("min_f1", -0.1), ("min_confidence", 120), ("min_fields", 0), ("min_fields", 2.5),
     ("block_km", 0), ("buffer_km", 50.0), ("label_max", 5), ("label_budget", -1), ("max_per_block", True),
     ("eval_max_share", 2)],
)  # fmt: skip
def test_invalid_settings_are_refused_in_one_line(name, value):
    with pytest.raises(ConfigError, match=name) as info:
        DiagnosisSettings(**{name: value})
    assert "Fix:" in str(info.value) and "\n" not in str(info.value)


def test_settings_are_frozen_and_come_from_a_mapping():
    s = DiagnosisSettings.from_mapping({"min_agreement": 0.5, "label_budget": None})
    assert (s.min_agreement, s.label_budget) == (0.5, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.min_agreement = 0.9  # type: ignore[misc]
    with pytest.raises(ConfigError, match="min_agrement"):
        DiagnosisSettings.from_mapping({"min_agrement": 0.5})


crop_rows = st.lists(
    st.tuples(
        st.sampled_from(("Winter Wheat", "Winter Barley", "Spring Barley", "Triticale")),
        st.sampled_from(("Winter Wheat", "Winter Barley", "Spring Barley", "Fallow")),
        st.floats(20, 95),
    ),
    min_size=1,
    max_size=50,
)


@settings(max_examples=30, deadline=None)
@given(rows=crop_rows, loose=st.floats(0.1, 0.6), strict=st.floats(0.6, 1.0), conf=st.floats(30, 80))
def test_stricter_thresholds_flag_more_crops(rows, loose, strict, conf):
    fields, counts = make_table([field(gt, pred, conf=c) for gt, pred, c in rows])
    table, confusion = metrics.crop_metrics(fields, counts), metrics.confusion_matrix(fields)

    def flagged(threshold):
        s = DiagnosisSettings(min_agreement=threshold, min_f1=threshold, min_confidence=conf)
        return set(underperforming_crops(table, confusion, s)["crop"])

    assert flagged(loose) <= flagged(strict)
    everything = underperforming_crops(table, confusion, DiagnosisSettings(min_agreement=1, min_f1=1))
    wrong = table.loc[(table["agreement_score"] < 1) | (table["f1"] < 1), "crop"]
    assert set(wrong) <= set(everything["crop"])
    assert list(everything["severity"].map(TIERS.index)) == sorted(everything["severity"].map(TIERS.index))


def test_real_u0c_confusions_give_the_published_facts():
    reference = shared_reference()
    confusion = pd.read_csv(reference / "u0c_field_confusion_counts.csv", index_col=0)
    calibration = {c["crop"]: c for c in json.loads((reference / "u0c_calibration.json").read_text())["classes"]}
    fields, counts = table_from_confusion(confusion)
    table = metrics.crop_metrics(fields, counts).set_index("crop")
    for crop in ("Winter Wheat", "Spring Barley", "Clover", "Triticale"):
        assert table.at[crop, "agreement_score"] == pytest.approx(calibration[crop]["agreement"], abs=5e-4)
        assert table.at[crop, "num_fields"] == calibration[crop]["n_fields"]
    assert overall_of(fields, counts)["agreement"] == pytest.approx(0.829, abs=5e-4)
    flagged = underperforming_crops(table.reset_index(), metrics.confusion_matrix(fields), DiagnosisSettings())
    reasons = flagged.set_index("crop")["reasons"]
    assert "absorbed_by:Winter Barley" in reasons["Spring Barley"]
    for crop in ("Winter Rye", "Beans", "Turnips", "Trees"):
        assert reasons[crop].startswith("never_predicted")
    assert table.at["Spring Rye", "n_correct"] == 0
    assert "over_predicted" in reasons["Grassland Cultivated"]
    assert "Winter Wheat" not in reasons.index and "Canola" not in reasons.index
    pairs = metrics.confusion_pairs(metrics.confusion_matrix(fields), mutual_share=0.15).set_index(["crop_a", "crop_b"])
    assert pairs.at[("Silage Corn", "Grain Corn"), "mutual"]
