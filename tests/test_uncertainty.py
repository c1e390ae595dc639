"""Per-field uncertainty: the committee scores against scikit-activeml on hypothesis-chosen histograms (ties and
empty fields included), band 4, the acquisition score, and the engine's own purity and vote margin."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import field, make_table
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skactiveml.pool import uncertainty_scores

from cropmon.catalogue import Catalogue
from cropmon.diagnosis.uncertainty import SCORES, UNCERTAINTY_COLUMNS, field_uncertainty


def _catalogue(n: int) -> Catalogue:
    return Catalogue.from_mapping({f"crop{i}": [f"label{i}"] for i in range(n)})


@st.composite
def histograms(draw) -> np.ndarray:
    """Small counts (0..6) over 2..8 classes: many exact ties of the top classes and many empty fields."""
    n_classes = draw(st.integers(2, 8))
    n_fields = draw(st.integers(1, 25))
    return draw(arrays(np.int64, (n_fields, n_classes), elements=st.integers(0, 6)))


def _frame(counts: np.ndarray, confidence: np.ndarray | None = None):
    catalogue = _catalogue(counts.shape[1])
    n = len(counts)
    conf = np.full(n, 50.0) if confidence is None else confidence
    fields = pd.DataFrame({"confidence_score": np.where(counts.sum(axis=1) > 0, conf, np.nan)})
    return fields, pd.DataFrame(counts, columns=list(catalogue.names)), catalogue


@settings(max_examples=300, deadline=None)
@given(histograms())
def test_scores_equal_scikit_activeml_on_the_histogram_as_probabilities(counts):
    fields, class_counts, catalogue = _frame(counts)
    out = field_uncertainty(fields, class_counts, catalogue=catalogue)
    total = counts.sum(axis=1)
    filled = total > 0
    probas = counts[filled] / total[filled, None]
    k = counts.shape[1]
    if filled.any():
        np.testing.assert_allclose(out["vote_least_confidence"].to_numpy()[filled],
                                   uncertainty_scores(probas, method="least_confident"), rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["vote_margin_uncertainty"].to_numpy()[filled],
                                   uncertainty_scores(probas, method="margin_sampling"), rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["vote_entropy"].to_numpy()[filled] * math.log(k),
                                   uncertainty_scores(probas, method="entropy"), rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["purity"].to_numpy()[filled], probas.max(axis=1), rtol=0, atol=1e-12)
    # an empty field (no pixel) has no prediction to be uncertain about: NaN everywhere, 0 pixels
    assert out.loc[~filled, [*SCORES, "purity"]].isna().all().all()
    assert (out["n_pixels"].to_numpy() == total).all()
    assert list(out.columns) == list(UNCERTAINTY_COLUMNS)


def test_ties_empty_fields_and_pure_fields_by_hand():
    counts = np.array([[3, 3, 0], [5, 0, 0], [0, 0, 0], [2, 1, 1]])
    fields, class_counts, catalogue = _frame(counts)
    out = field_uncertainty(fields, class_counts, catalogue=catalogue)
    assert out.loc[0, "vote_margin_uncertainty"] == 1.0  # an exact tie of the two top classes
    assert out.loc[0, "vote_least_confidence"] == 0.5
    assert out.loc[0, "vote_entropy"] == pytest.approx(math.log(2) / math.log(3))
    assert (out.loc[1, ["vote_least_confidence", "vote_margin_uncertainty", "vote_entropy"]] == 0).all()
    assert out.loc[1, "purity"] == 1.0
    assert out.loc[2].drop("n_pixels").isna().all() and out.loc[2, "n_pixels"] == 0
    assert out.loc[3, "vote_margin_uncertainty"] == pytest.approx(1 - (0.5 - 0.25))


def test_one_class_catalogue_has_zero_entropy():
    fields, class_counts, catalogue = _frame(np.array([[4], [0]]))
    out = field_uncertainty(fields, class_counts, catalogue=catalogue)
    assert out.loc[0, "vote_entropy"] == 0.0 and out.loc[0, "vote_margin_uncertainty"] == 0.0
    assert np.isnan(out.loc[1, "vote_entropy"])


def test_band4_least_confidence_and_the_acquisition_score():
    counts = np.array([[8, 2, 0], [10, 0, 0], [5, 5, 0]])
    fields, class_counts, catalogue = _frame(counts, confidence=np.array([80.0, np.nan, 40.0]))
    out = field_uncertainty(fields, class_counts, catalogue=catalogue)
    assert out["band4_least_confidence"].tolist()[0] == pytest.approx(0.2)
    assert np.isnan(out.loc[1, "band4_least_confidence"])  # every confidence invalid: band 4 says nothing
    assert out.loc[0, "acquisition_score"] == pytest.approx(0.5 * (0.2 + (1 - 0.6)))
    assert out.loc[1, "acquisition_score"] == 0.0  # the margin alone
    assert out.loc[2, "acquisition_score"] == pytest.approx(0.5 * (0.6 + 1.0))


def test_engine_contract_sparse_or_dense_any_row_order_and_the_tables_own_purity_and_margin():
    specs = [field("Winter Wheat", "Winter Wheat", purity=p, n_pixels=n, conf=c, runner_up="Winter Barley")
             for p, n, c in [(1.0, 40, 90.0), (0.6, 20, 55.0), (0.75, 12, 70.0), (0.5, 10, 30.0)]]
    specs.append(field("Winter Wheat", None))
    fields, counts = make_table(specs)
    dense = field_uncertainty(fields, counts)
    sparse = field_uncertainty(fields, counts.astype(pd.SparseDtype("int32", 0)))
    pd.testing.assert_frame_equal(dense, sparse)
    ok = fields["n_pixels"] > 0
    np.testing.assert_allclose(dense.loc[ok, "purity"], fields.loc[ok, "purity"])
    np.testing.assert_allclose(dense.loc[ok, "vote_margin_uncertainty"], 1 - fields.loc[ok, "vote_margin"])
    order = np.array([3, 0, 4, 2, 1])
    shuffled = field_uncertainty(fields.iloc[order], counts.iloc[::-1])  # histograms matched by index, not position
    pd.testing.assert_frame_equal(shuffled, dense.iloc[order])


def test_histograms_that_do_not_fit_the_fields_are_refused():
    fields, counts = make_table([field("Winter Wheat", "Winter Wheat")])
    with pytest.raises(ValueError, match="no row"):
        field_uncertainty(fields, counts.iloc[:0])
    with pytest.raises(ValueError, match="no crop name"):
        field_uncertainty(fields, counts.rename(columns={"Winter Wheat": "Wheat"}))
    with pytest.raises(ValueError, match="negative"):
        field_uncertainty(fields, -counts)


def test_uncertainty_by_predicted_class_by_hand():
    from cropmon.diagnosis.uncertainty import CLASS_COLUMNS, by_predicted_class

    specs = [field(None, "Winter Wheat", conf=80.0, purity=1.0), field(None, "Winter Wheat", conf=60.0, purity=0.5),
             field(None, "Canola", conf=90.0, purity=1.0), field(None, None)]  # the last one has no pixel
    fields, counts = make_table(specs)
    u = field_uncertainty(fields, counts)
    table = by_predicted_class(fields, u).set_index("crop")
    assert list(table.reset_index().columns) == list(CLASS_COLUMNS)
    assert list(table.index) == ["Winter Wheat", "Canola"]  # catalogue order, classes with a field only
    assert table.at["Winter Wheat", "fields"] == 2 and table.at["Canola", "fields"] == 1
    assert table.at["Winter Wheat", "mean_confidence"] == pytest.approx(70.0)
    assert table.at["Winter Wheat", "mean_purity"] == pytest.approx(0.75)
    # acquisition: (0.2 + 0) / 2 and (0.4 + 1) / 2 (an exact 1:1 split: margin uncertainty 1)
    assert table.at["Winter Wheat", "mean_acquisition_score"] == pytest.approx((0.1 + 0.7) / 2)
    assert table.at["Canola", "mean_acquisition_score"] == pytest.approx(0.05)
