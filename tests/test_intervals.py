"""The per-crop intervals against scipy, and the underperforming rule's certainty against a recomputation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import field, hand_example, make_table
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.stats import binomtest

from cropmon.diagnosis import intervals, metrics
from cropmon.diagnosis.diagnose import underperforming_crops
from cropmon.diagnosis.settings import DiagnosisSettings


def _scipy_wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return ci.low, ci.high


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 60_000), data=st.data())
def test_wilson_equals_scipy(n, data):
    k = data.draw(st.integers(0, n))
    low, high = intervals.wilson(np.array([k]), np.array([n]))
    np.testing.assert_allclose([low[0], high[0]], _scipy_wilson(k, n), rtol=1e-12, atol=1e-15)


def test_wilson_is_vectorised_and_nan_without_trials():
    k, n = np.array([0, 3, 10, 0, 58_851]), np.array([10, 10, 10, 0, 62_000])
    low, high = intervals.wilson(k, n)
    for i in range(4):
        if n[i] == 0:
            assert np.isnan(low[i]) and np.isnan(high[i])
        else:
            assert (low[i], high[i]) == pytest.approx(_scipy_wilson(k[i], n[i]), rel=1e-12, abs=1e-15)
    assert high[-1] - low[-1] < 0.005  # 62,000 fields: a narrow interval


@settings(max_examples=100, deadline=None)
@given(tp=st.integers(0, 300), fn=st.integers(0, 300), fp=st.integers(0, 300))
def test_f1_interval_is_wilson_on_the_jaccard_share(tp, fn, fp):
    low, high = intervals.f1_interval(np.array([tp]), np.array([tp + fn]), np.array([tp + fp]))
    union = tp + fn + fp
    if union == 0:
        assert np.isnan(low[0]) and np.isnan(high[0])
        return
    j_low, j_high = _scipy_wilson(tp, union)
    np.testing.assert_allclose([low[0], high[0]], [2 * j_low / (1 + j_low), 2 * j_high / (1 + j_high)], rtol=1e-12)
    f1 = 2 * tp / (2 * tp + fn + fp)
    assert low[0] - 1e-12 <= f1 <= high[0] + 1e-12


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=50))
def test_mean_interval_equals_scipys_t_interval(values):
    x = np.array(values)
    low, high = intervals.mean_interval(np.array([x.sum()]), np.array([(x**2).sum()]), np.array([len(x)]))
    if len(x) < 2:
        assert np.isnan(low[0]) and np.isnan(high[0])
        return
    sem = stats.sem(x)
    if sem < 1e-6:  # all (nearly) equal: scipy returns NaN for a zero scale, the interval is the mean itself
        assert high[0] - low[0] < 1e-3
        return
    expected = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
    np.testing.assert_allclose([low[0], high[0]], expected, rtol=1e-6, atol=1e-6)


def test_verdict_reads_an_interval_against_a_threshold():
    got = intervals.verdict(np.array([0.1, 0.5, 0.8, np.nan]), np.array([0.6, 0.9, 0.95, np.nan]), 0.7)
    assert list(got) == ["below", "unsure", "above", ""]


def test_crop_metrics_carry_the_intervals_after_the_reference_columns():
    fields, counts = make_table(hand_example())
    table = metrics.crop_metrics(fields, counts)
    assert list(table.columns[:6]) == [*metrics.REFERENCE_METRIC_COLUMNS, "agreement_ci_low", "agreement_ci_high"]
    for row in table.itertuples():
        if row.num_fields:
            assert (row.agreement_ci_low, row.agreement_ci_high) == pytest.approx(
                _scipy_wilson(int(row.n_correct), int(row.num_fields)), rel=1e-12, abs=1e-15)
        else:
            assert np.isnan(row.agreement_ci_low)
        assert set(metrics.INTERVAL_COLUMNS) <= set(table.columns)


crop_rows = st.lists(
    st.tuples(
        st.sampled_from(("Winter Wheat", "Winter Barley", "Spring Barley", "Triticale", "Flax")),
        st.sampled_from(("Winter Wheat", "Winter Barley", "Spring Barley", "Fallow")),
        st.floats(20, 95),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=40, deadline=None)
@given(rows=crop_rows, min_fields=st.integers(1, 30))
def test_certainty_follows_the_intervals(rows, min_fields):
    fields, counts = make_table([field(gt, pred, conf=c) for gt, pred, c in rows])
    table = metrics.crop_metrics(fields, counts)
    s = DiagnosisSettings(min_fields=min_fields)
    flagged = underperforming_crops(table, metrics.confusion_matrix(fields), s).set_index("crop")
    by_crop = table.set_index("crop")
    fails = (by_crop["agreement_score"] < s.min_agreement) | (by_crop["f1"] < s.min_f1) | (
        by_crop["conf_mean"] < s.min_confidence)
    assert set(flagged.index) == set(by_crop.index[fails])  # the intervals never add or remove a crop
    for crop, row in flagged.iterrows():
        m = by_crop.loc[crop]
        sure = []
        if m["num_fields"] and m["agreement_score"] < s.min_agreement:
            sure.append(_scipy_wilson(int(m["n_correct"]), int(m["num_fields"]))[1] < s.min_agreement)
        if m["f1"] < s.min_f1:
            union = int(m["num_fields"] + m["n_predicted"] - m["n_correct"])
            high = _scipy_wilson(int(m["n_correct"]), union)[1]
            sure.append(2 * high / (1 + high) < s.min_f1)
        if m["conf_mean"] < s.min_confidence:
            conf = fields.loc[metrics.evaluable(fields) & (fields["gt_label"] == crop), "confidence_score"]
            if len(conf) >= 2:  # equal confidences: scipy gives NaN for a zero scale, the interval is the mean
                sem = stats.sem(conf)
                high = stats.t.interval(0.95, len(conf) - 1, conf.mean(), sem)[1] if sem > 1e-9 else conf.mean()
                sure.append(high < s.min_confidence)
        expected = "certain" if any(sure) else ("too_few_fields" if m["num_fields"] < min_fields else "possible")
        assert row["certainty"] == expected, crop


def test_many_fields_make_a_crop_certain_and_few_leave_it_open():
    """0.6 agreement: certainly under 0.7 over 1,000 fields, possibly over 40, too few to tell over 10."""
    def flag(n: int, right: int, min_fields: int = 20) -> pd.Series:
        specs = [field("Flax", "Flax" if i < right else "Fallow", conf=80.0) for i in range(n)]
        specs += [field("Fallow", "Fallow", conf=80.0) for _ in range(n)]
        fields, counts = make_table(specs)
        table = metrics.crop_metrics(fields, counts)
        s = DiagnosisSettings(min_fields=min_fields, min_f1=0.0)
        return underperforming_crops(table, metrics.confusion_matrix(fields), s).set_index("crop").loc["Flax"]

    assert flag(1000, 600)["certainty"] == "certain" and flag(1000, 600)["certainly_failed"] == "low_agreement"
    assert flag(40, 24)["certainty"] == "possible"
    assert flag(10, 6)["certainty"] == "too_few_fields"
    assert flag(10, 0)["certainty"] == "certain"  # ten of ten wrong is enough to tell
