"""Per-crop metrics and confusions against a hand-computed table and against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import field, hand_example, make_table, overall_of
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cropmon.diagnosis import metrics
from cropmon.labels import CROP_NAMES

# The reference columns of the hand example, computed by hand (agreement a = right / fields, F1 = 2a / (1 + a)),
# sorted like the reference: F1 descending, then more fields first; the crop only predicted comes last.
HAND_REFERENCE = pd.DataFrame(
    [
        ("Winter Wheat", 6, 4 / 6, 0.8),
        ("Winter Barley", 4, 0.5, 2 / 3),
        ("Silage Corn", 2, 0.5, 2 / 3),
        ("Spring Barley", 5, 0.2, 1 / 3),
        ("Grain Corn", 2, 0.0, 0.0),
        ("Grassland Cultivated", 0, np.nan, np.nan),
    ],
    columns=list(metrics.REFERENCE_METRIC_COLUMNS),
)

CROPS = ("Winter Wheat", "Winter Barley", "Spring Barley", "Grain Corn", "Silage Corn", "Fallow")


@pytest.fixture(scope="module")
def hand():
    fields, counts = make_table(hand_example())
    return fields, counts, metrics.crop_metrics(fields, counts)


def test_reference_columns_equal_the_hand_table(hand):
    _, _, table = hand
    got = table[list(metrics.REFERENCE_METRIC_COLUMNS)]
    pd.testing.assert_frame_equal(got, HAND_REFERENCE, check_dtype=False, atol=1e-12)


def test_reference_columns_come_first_then_the_diagnostics(hand):
    _, _, table = hand
    assert tuple(table.columns[:4]) == metrics.REFERENCE_METRIC_COLUMNS
    for column in ("precision", "recall", "f1", "support", "n_predicted", "conf_mean", "conf_mean_right",
                   "conf_mean_wrong", "purity_mean", "area_ha", "area_agreement", "pixel_precision", "pixel_recall",
                   "pixel_f1", "mistaken_for_1", "mistaken_for_3_share"):  # fmt: skip
        assert column in table.columns


def test_excluded_fields_do_not_count(hand):
    fields, _, table = hand
    assert len(fields) == 21  # 19 scored + an unknown label + a field without pixels
    assert table["num_fields"].sum() == 19
    assert metrics.evaluable(fields).sum() == 19


def test_per_crop_diagnostics_by_hand(hand):
    _, _, table = hand
    ww = table.set_index("crop").loc["Winter Wheat"]
    assert ww["conf_mean"] == pytest.approx((4 * 90 + 50 + 40) / 6)
    assert ww["conf_mean_right"] == pytest.approx(90.0)
    assert ww["conf_mean_wrong"] == pytest.approx(45.0)
    assert ww["area_ha"] == pytest.approx(20.0)  # 4 x 4 ha + 2 x 2 ha
    assert ww["area_agreement"] == pytest.approx(16 / 20)
    assert ww["purity_mean"] == pytest.approx((4 * 1.0 + 0.6 + 0.5) / 6)
    assert ww["n_predicted"] == 5  # its 4 right fields + a Winter Barley field
    sb = table.set_index("crop").loc["Spring Barley"]
    assert (sb["mistaken_for_1"], sb["mistaken_for_1_share"]) == ("Winter Barley", pytest.approx(0.8))
    assert pd.isna(sb["mistaken_for_2"])
    # Pixels: 50 right pixels + 4 fields x (40 Winter Barley + 10 Spring Barley runner-up pixels).
    assert sb["pixel_recall"] == pytest.approx(90 / 250)


def test_overall_numbers_by_hand(hand):
    fields, counts, _ = hand
    overall = overall_of(fields, counts)
    assert overall["fields_evaluated"] == 19
    assert overall["agreement"] == pytest.approx(8 / 19)
    assert overall["area_agreement"] == pytest.approx((16 + 4 + 2 + 0 + 2) / (20 + 8 + 10 + 4 + 4))  # ha


def test_predicted_only_crop_is_listed(hand):
    _, _, table = hand
    gc = table.set_index("crop").loc["Grassland Cultivated"]
    assert (gc["num_fields"], gc["n_predicted"], gc["precision"], gc["area_ha"]) == (0, 1, 0.0, 0.0)
    assert np.isnan(gc["recall"])


def test_confusion_pairs_by_hand(hand):
    fields, _, _ = hand
    pairs = metrics.confusion_pairs(metrics.confusion_matrix(fields), mutual_share=0.2)
    first = pairs.iloc[0]
    assert (first["crop_a"], first["crop_b"], first["a_as_b"], first["b_as_a"]) == (
        "Spring Barley", "Winter Barley", 4, 1
    )  # fmt: skip
    assert first["a_as_b_share"] == pytest.approx(0.8) and first["b_as_a_share"] == pytest.approx(0.25)
    by_pair = pairs.set_index(["crop_a", "crop_b"])["mutual"]
    assert by_pair[("Spring Barley", "Winter Barley")]  # 0.8 and 0.25 both >= 0.2
    assert not by_pair[("Winter Barley", "Winter Wheat")]  # 0.25 and 1/6
    assert not by_pair[("Winter Wheat", "Grassland Cultivated")]  # never the other way
    assert pairs["fields"].is_monotonic_decreasing
    assert len(metrics.confusion_pairs(metrics.confusion_matrix(fields), mutual_share=0.2, top=2)) == 2


def test_pixel_confusion_sums_histograms_by_gt_crop(hand):
    fields, counts, _ = hand
    expected = pd.DataFrame(0, index=list(CROP_NAMES), columns=list(CROP_NAMES))
    for i in fields.index:  # brute force, row by row
        if pd.notna(fields.at[i, "gt_class"]) and fields.at[i, "n_pixels"] > 0:
            expected.loc[fields.at[i, "gt_label"]] += counts.loc[i].to_numpy()
    aligned = counts.reindex(columns=list(CROP_NAMES), fill_value=0).astype("int32")
    sparse = aligned.astype(pd.SparseDtype("int32", 0))  # as the engine hands them over
    for form in (counts, sparse):
        got = metrics.pixel_confusion_matrix(fields, form)
        np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
        assert got.at["Spring Barley", "Spring Barley"] == 90


def test_misaligned_class_counts_are_refused(hand):
    fields, counts, _ = hand
    with pytest.raises(ValueError, match="no row"):
        metrics.crop_metrics(fields, counts.iloc[:-3])
    with pytest.raises(ValueError, match="no crop name"):
        metrics.crop_metrics(fields, counts.rename(columns={"Fallow": "Falow"}))


def test_missing_histogram_columns_count_zero(hand):
    fields, counts, table = hand
    thin = counts.loc[:, counts.sum() > 0]
    pd.testing.assert_frame_equal(metrics.crop_metrics(fields, thin), table)


def test_empty_table_gives_empty_metrics():
    fields, counts = make_table([field(None, "Winter Wheat"), field("Winter Wheat", None)])
    assert metrics.crop_metrics(fields, counts).empty
    assert metrics.confusion_matrix(fields).to_numpy().sum() == 0
    assert overall_of(fields, counts)["fields_evaluated"] == 0


pairs_strategy = st.lists(
    st.tuples(st.sampled_from((*CROPS, None)), st.sampled_from((*CROPS, None)), st.integers(1, 40)),
    min_size=1,
    max_size=60,
)


def _random_table(rows):
    specs = [field(gt, pred, n_pixels=n, purity=0.75) for gt, pred, n in rows]
    return make_table(specs)


@settings(max_examples=40, deadline=None)
@given(rows=pairs_strategy)
def test_scores_equal_scikit_learn(rows):
    fields, counts = _random_table(rows)
    table = metrics.crop_metrics(fields, counts)
    scored = [(gt, pred) for gt, pred, _ in rows if gt is not None and pred is not None]
    if not scored:
        assert table.empty
        return
    y_true, y_pred = map(list, zip(*scored, strict=True))
    labels = sorted(set(y_true) | set(y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=np.nan)
    got = table.set_index("crop").loc[labels]
    np.testing.assert_allclose(got["precision"], p, equal_nan=True)
    np.testing.assert_allclose(got["recall"], r, equal_nan=True)
    np.testing.assert_allclose(got["f1"], f, equal_nan=True)
    np.testing.assert_array_equal(got["support"], s)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(fields).to_numpy(), sk_confusion_matrix(y_true, y_pred, labels=list(CROP_NAMES))
    )
    # The reference's weighted F1: scikit-learn's weighted F1 on the crop's own GT fields only.
    for crop in set(y_true):
        mine = [(t, q) for t, q in scored if t == crop]
        expected = f1_score([t for t, _ in mine], [q for _, q in mine], average="weighted", zero_division=0)
        assert got.at[crop, "weighted_f1_score"] == pytest.approx(expected)
    overall = overall_of(fields, counts)
    assert overall["agreement"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert overall["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert overall["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted", zero_division=0))


@settings(max_examples=25, deadline=None)
@given(rows=pairs_strategy)
def test_pixel_scores_equal_scikit_learn_with_pixel_weights(rows):
    fields, counts = _random_table(rows)
    table = metrics.crop_metrics(fields, counts)
    y_true, y_pred, weight = [], [], []
    for i in fields.index[metrics.evaluable(fields)]:
        for crop, n in counts.loc[i].items():
            if n:
                y_true.append(fields.at[i, "gt_label"])
                y_pred.append(crop)
                weight.append(n)
    labels = list(table["crop"])
    if not labels:
        return
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, sample_weight=weight, zero_division=np.nan
    )
    got = table.set_index("crop").loc[labels]
    np.testing.assert_allclose(got["pixel_precision"], p, equal_nan=True)
    np.testing.assert_allclose(got["pixel_recall"], r, equal_nan=True)
    np.testing.assert_allclose(got["pixel_f1"], f, equal_nan=True)


def test_row_shares_sum_to_one_or_zero(hand):
    fields, _, _ = hand
    shares = metrics.row_shares(metrics.confusion_matrix(fields))
    totals = shares.sum(axis=1)
    assert set(np.round(totals, 12)) == {0.0, 1.0}


def test_field_metrics_are_scikit_learns_on_the_label_vectors(hand, monkeypatch):
    import sklearn.metrics

    fields, counts, table = hand
    calls = []
    real = sklearn.metrics.precision_recall_fscore_support

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(sklearn.metrics, "precision_recall_fscore_support", spy)
    pd.testing.assert_frame_equal(metrics.crop_metrics(fields, counts), table)
    (truth, pred), kwargs = calls[0]
    assert kwargs["labels"] == list(range(32)) and np.isnan(kwargs["zero_division"])
    ev = metrics.evaluable(fields)
    np.testing.assert_array_equal(truth, fields.loc[ev, "gt_class"].astype(int))
    np.testing.assert_array_equal(pred, fields.loc[ev, "majority_crop"].astype(int))


def _catalogue_table(rows: list[tuple[int, int]], ids: list[int]) -> pd.DataFrame:
    """A minimal per-field table of (GT id, predicted id) rows for `metrics` with another catalogue."""
    n = len(rows)
    return pd.DataFrame({
        "gt_class": pd.array([g for g, _ in rows], dtype="Int16"), "majority_crop": [float(p) for _, p in rows],
        "n_pixels": np.full(n, 10), "confidence_score": np.linspace(20, 90, n), "purity": np.full(n, 0.8),
        "area_m2": np.full(n, 1e4),
    })  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(data=st.data(), ids=st.lists(st.integers(0, 40), min_size=1, max_size=5, unique=True))
def test_any_catalogue_scores_equal_scikit_learn(data, ids):
    from cropmon.catalogue import Catalogue

    ids = sorted(ids)
    catalogue = Catalogue.from_rows([(i, f"crop{i}", [f"label{i}"]) for i in ids])
    rows = data.draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)), min_size=1, max_size=40))
    fields = _catalogue_table(rows, ids)
    counts = pd.DataFrame(0, index=fields.index, columns=list(catalogue.names))
    for i, (_, p) in enumerate(rows):
        counts.at[i, f"crop{p}"] = 10
    table = metrics.crop_metrics(fields, counts, catalogue=catalogue).set_index("crop")
    y_true, y_pred = [f"crop{g}" for g, _ in rows], [f"crop{p}" for _, p in rows]
    names = list(catalogue.names)
    with warnings.catch_warnings():  # scikit-learn warns about a 1 x 1 matrix even with labels= given
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        expected = sk_confusion_matrix(y_true, y_pred, labels=names)
    np.testing.assert_array_equal(metrics.confusion_matrix(fields, catalogue).to_numpy(), expected)
    listed = [c for c in names if c in table.index]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=listed, zero_division=np.nan)
    np.testing.assert_allclose(table.loc[listed, "precision"], p, equal_nan=True)
    np.testing.assert_allclose(table.loc[listed, "recall"], r, equal_nan=True)
    np.testing.assert_allclose(table.loc[listed, "f1"], f, equal_nan=True)
    np.testing.assert_array_equal(table.loc[listed, "support"], s)
    # The pooled route (scores from the confusion matrix's cells as weighted samples) gives the same numbers.
    pd.testing.assert_frame_equal(
        metrics.field_scores_from_confusion(metrics.confusion_matrix(fields, catalogue)),
        metrics.field_scores_of(fields, catalogue),
    )
