"""Precision at k of an uncertainty ranking: the order against a brute-force sort, the headline numbers by hand, the
random draw's interval against exact hypergeometric sums."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import field, make_table
from hypothesis import given, settings
from hypothesis import strategies as st

from cropmon.diagnosis.ranking import errors_in_top_k, precision_at_k, ranked_order
from cropmon.diagnosis.uncertainty import field_uncertainty


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.1, 0.5, 0.9, np.nan]), st.integers(0, 5), st.booleans()),
                min_size=1, max_size=30), st.integers(0, 40))
def test_order_and_precision_equal_a_brute_force_sort(rows, k):
    score = np.array([r[0] for r in rows])
    keys = np.array([r[1] for r in rows], dtype=np.uint64)
    wrong = np.array([r[2] for r in rows])
    brute = sorted(range(len(rows)), key=lambda i: (math.isnan(score[i]), -np.nan_to_num(score[i]), keys[i], i))
    order = ranked_order(score, keys)
    assert [(math.isnan(score[i]), np.nan_to_num(score[i]), keys[i]) for i in order] == \
           [(math.isnan(score[i]), np.nan_to_num(score[i]), keys[i]) for i in brute]
    top = brute[: min(k, len(rows))]
    expected = wrong[top].mean() if top else float("nan")
    assert precision_at_k(wrong, order, k) == pytest.approx(expected, nan_ok=True)


def _aoi():
    """10 evaluable fields: the 3 misclassified ones are the least confident; one field has no pixel."""
    specs = [field("Winter Wheat", "Winter Barley", conf=30.0 + i, purity=0.6, field_id=f"wrong{i}") for i in range(3)]
    specs += [field("Winter Wheat", "Winter Wheat", conf=70.0 + i, field_id=f"right{i}") for i in range(7)]
    specs.append(field("Winter Wheat", None, field_id="no_pixel"))
    return make_table(specs)


def test_headline_numbers_by_hand():
    fields, counts = _aoi()
    u = field_uncertainty(fields, counts)
    top = errors_in_top_k(fields, u, k=2)
    assert (top.k, top.n_fields, top.n_errors, top.errors_in_top_k, top.share) == (2, 10, 3, 2, 1.0)
    assert top.random_share == pytest.approx(0.3)
    assert top.share_low < 1.0 == top.share_high
    assert errors_in_top_k(fields, u, k=500).k == 10  # k is cut to the fields
    assert errors_in_top_k(fields, u, k=5).share == pytest.approx(3 / 5)
    zero = errors_in_top_k(fields, u, k=0)
    assert zero.k == 0 and math.isnan(zero.share)
    with pytest.raises(ValueError):
        errors_in_top_k(fields, u, k=-1)


def test_without_evaluable_fields_the_numbers_are_nan():
    fields, counts = _aoi()
    fields = fields.assign(gt_class=pd.array([pd.NA] * len(fields), dtype="Int16"))
    top = errors_in_top_k(fields, field_uncertainty(fields, counts), k=500)
    assert top.n_fields == 0 and math.isnan(top.share) and math.isnan(top.random_share)


def test_the_random_draws_interval_is_the_central_95_percent_of_the_exact_hypergeometric():
    fields, counts = _aoi()
    fields = pd.concat([fields] * 6, ignore_index=True).assign(field_id=lambda f: [f"f{i}" for i in range(len(f))])
    counts = pd.concat([counts] * 6, ignore_index=True)
    top = errors_in_top_k(fields, field_uncertainty(fields, counts), k=20)
    n, errors, k = top.n_fields, top.n_errors, top.k
    assert (n, errors) == (60, 18)

    def cdf(x: int) -> float:
        return sum(math.comb(errors, j) * math.comb(n - errors, k - j) for j in range(x + 1)) / math.comb(n, k)

    low, high = round(top.random_low * k), round(top.random_high * k)
    assert cdf(low) >= 0.025 > cdf(low - 1)
    assert cdf(high) >= 0.975 > cdf(high - 1)
