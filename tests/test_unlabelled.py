"""Fields to label without ground truth: the pool, the quotas per predicted class (by hand and as properties), the
spread over blocks, determinism, and the degenerate inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import field, make_table
from hypothesis import given, settings
from hypothesis import strategies as st

from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.diagnosis.unlabelled import PICK_COLUMNS, QUOTA_COLUMNS, select_unlabelled, spread_quotas
from cropmon.errors import ConfigError

WW, WB, VY = "Winter Wheat", "Winter Barley", "Vineyard"
BLOCK_DEG = 0.1  # > 5 km in longitude at lat 50 (~7.2 km): one field column per block


def _unlabelled(pred: str, *, block: int = 0, conf: float = 60.0, purity: float = 1.0, **kw) -> dict:
    spec = field(None, pred, conf=conf, purity=purity, x=2.0 + BLOCK_DEG * block + 0.001 * kw.pop("i", 0), **kw)
    spec["label"] = None  # no label at all (not an unknown one)
    return spec


def _select(specs, areas, *, seed=0, **overrides):
    fields, counts = make_table(specs)
    s = dataclasses.replace(DiagnosisSettings(), **overrides)
    return select_unlabelled(fields, counts, pd.Series(areas, dtype=float), settings=s, seed=seed)


def test_the_pool_is_the_clean_fields_without_a_usable_label():
    specs = [
        _unlabelled(WW, field_id="ok"),
        {**field(None, WW, field_id="unknown_label"), "label": "radish"},  # a label that is no class: unlabelled
        field(WW, WW, field_id="labelled"),
        _unlabelled(WW, n_pixels=4, field_id="tiny"),
        _unlabelled(WW, pixel_rule="all_touched", field_id="touched"),
        _unlabelled(None, field_id="no_pixel"),
        _unlabelled(WW, field_id="dup"),
    ]
    fields, counts = make_table(specs)
    fields.loc[fields["field_id"] == "dup", "duplicate_id"] = True
    out = select_unlabelled(fields, counts, pd.Series({WW: 1.0}), settings=DiagnosisSettings(), seed=0)
    assert sorted(out.pool["field_id"]) == ["ok", "unknown_label"]
    assert sorted(out.picks["field_id"]) == ["ok", "unknown_label"]
    assert list(out.picks.columns) == list(PICK_COLUMNS) and list(out.quotas.columns) == list(QUOTA_COLUMNS)


def test_square_root_quotas_by_hand_and_what_a_capped_class_leaves_goes_to_the_others():
    # area shares 81 : 16 : 1 -> weights 9 : 4 : 1. Budget 14: one each first, the other 11 by 9:4:1 (7.07, 3.14,
    # 0.79 -> 7, 3, 0 and the last field to the largest remainder, 0.79) -> wanted 8, 4, 2.
    wanted, quota = spread_quotas(np.array([9.0, 4.0, 1.0]), np.array([100, 100, 100]), 14)
    assert wanted.tolist() == [8, 4, 2] and quota.tolist() == [8, 4, 2]
    # the third class has 1 field: it gets 1, and its other field goes to the first by 9:4 (0.69 vs 0.31)
    wanted, quota = spread_quotas(np.array([9.0, 4.0, 1.0]), np.array([100, 100, 1]), 14)
    assert wanted.tolist() == [8, 4, 2] and quota.tolist() == [9, 4, 1]
    assert spread_quotas(np.array([9.0, 0.0]), np.array([3, 5]), None)[1].tolist() == [3, 0]  # no budget
    assert spread_quotas(np.array([1.0, 1.0]), np.array([2, 2]), 0)[1].tolist() == [0, 0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100, allow_nan=False), st.integers(0, 30)), min_size=1, max_size=12),
       st.integers(0, 200))
def test_quotas_use_the_budget_never_exceed_what_a_class_has_and_give_each_at_least_its_capped_share(rows, budget):
    weights = np.array([w for w, _ in rows])
    available = np.array([a for _, a in rows])
    wanted, quota = spread_quotas(weights, available, budget)
    pickable = int(available[weights > 0].sum())
    assert int(quota.sum()) == min(budget, pickable)
    assert (quota <= available).all() and (quota[weights == 0] == 0).all()
    assert (quota >= np.minimum(wanted, available)).all()  # redistribution only adds
    if weights.sum() > 0:
        assert int(wanted.sum()) == budget


def test_rare_predicted_crops_get_more_than_their_area_share():
    # Vineyard: 1 % of the predicted area. Proportional allocation would give it ~1 of 100 fields, the square root
    # (sqrt(0.01) = 0.1 against sqrt(0.99)) one first and then 98 x 0.1 / 1.095 of the rest: 10.
    specs = [_unlabelled(WW, block=b, i=i, field_id=f"ww{b}_{i}") for b in range(40) for i in range(3)]
    specs += [_unlabelled(VY, block=b, i=i, field_id=f"vy{b}_{i}") for b in range(5) for i in range(3)]
    out = _select(specs, {WW: 99.0, VY: 1.0}, label_budget=100)
    quota = out.quotas.set_index("crop")["quota"]
    exact_vineyard = 1 + 98 * 0.1 / (0.1 + 0.99**0.5)
    assert abs(quota[VY] - exact_vineyard) < 1 and quota.sum() == 100
    proportional = _select(specs, {WW: 99.0, VY: 1.0}, label_budget=100, unlabelled_area_power=1.0)
    assert proportional.quotas.set_index("crop").at[VY, "quota"] <= 2
    assert (out.picks["predicted"] == VY).sum() == quota[VY]


def test_picks_are_the_most_uncertain_first_in_rounds_over_blocks():
    # block 0 holds 10 very uncertain fields, blocks 1-4 one moderately uncertain field each
    specs = [_unlabelled(WW, block=0, i=i, conf=20.0 + i, field_id=f"hot{i}") for i in range(10)]
    specs += [_unlabelled(WW, block=b, conf=50.0, field_id=f"b{b}") for b in range(1, 5)]
    out = _select(specs, {WW: 1.0}, label_budget=6, max_per_block=3)
    picks = out.picks.set_index("field_id")
    assert list(out.picks["rank"]) == list(range(1, 7))
    # round 1: the best of each of the 5 blocks (hot0 first: the most uncertain; b1-b4 tie, in hash order);
    # round 2: block 0's second best
    assert picks.index[0] == "hot0" and set(picks.index[1:5]) == {"b1", "b2", "b3", "b4"}
    assert picks.index[5] == "hot1" and (picks["pick_round"] == [1, 1, 1, 1, 1, 2]).all()
    many = _select(specs, {WW: 1.0}, label_budget=100, max_per_block=3)
    assert many.picks.groupby(["predicted", "block"]).size().max() == 3  # at most max_per_block per block
    assert len(many.picks) == 3 + 4 and set(many.quotas["status"]) == {"all_picked"}


def test_same_seed_same_picks_whatever_the_row_order():
    rng = np.random.default_rng(3)
    specs = [_unlabelled([WW, WB, VY][i % 3], block=int(rng.integers(0, 6)), i=i,
                         conf=float(rng.choice([40.0, 50.0])), field_id=f"f{i}") for i in range(120)]
    a = _select(specs, {WW: 5.0, WB: 3.0, VY: 0.5}, label_budget=30, seed=7)
    b = _select(specs[::-1], {WW: 5.0, WB: 3.0, VY: 0.5}, label_budget=30, seed=7)
    assert list(a.picks["field_id"]) == list(b.picks["field_id"]) and len(a.picks) == 30
    others = [list(_select(specs, {WW: 5.0, WB: 3.0, VY: 0.5}, label_budget=30, seed=s).picks["field_id"])
              for s in range(1, 6)]
    assert any(o != list(a.picks["field_id"]) for o in others)  # ties (equal scores) break on the seed


def test_degenerate_inputs_give_documented_outputs():
    specs = [_unlabelled(WW, block=b, field_id=f"w{b}") for b in range(3)] + [field(WB, WB, field_id="labelled")]
    # a budget larger than the fields: every field that can be picked; a class with area but no field: quota 0
    out = _select(specs, {WW: 10.0, WB: 5.0, VY: 1.0}, label_budget=500)
    q = out.quotas.set_index("crop")
    assert len(out.picks) == 3 and q.at[WW, "status"] == "all_picked"
    assert q.at[WB, "status"] == "no_field" and q.at[WB, "quota"] == 0  # its one field carries a label
    assert q.at[VY, "status"] == "no_field"
    # a class predicted in the pool but absent from the areas: no quota, said so
    q2 = _select(specs, {WB: 1.0}, label_budget=10).quotas.set_index("crop")
    assert q2.at[WW, "status"] == "no_area" and q2.at[WW, "quota"] == 0
    # no budget: everything
    assert len(_select(specs, {WW: 1.0}, label_budget=None).picks) == 3
    # no field at all, or every field labelled: an empty list with its columns
    fields, counts = make_table(specs)
    empty = select_unlabelled(fields.iloc[:0], counts.iloc[:0], pd.Series({WW: 1.0}), settings=DiagnosisSettings(),
                              seed=0)
    assert empty.picks.empty and list(empty.picks.columns) == list(PICK_COLUMNS)
    labelled = select_unlabelled(fields.iloc[3:], counts.iloc[3:], pd.Series({WB: 1.0}),
                                 settings=DiagnosisSettings(), seed=0)
    assert labelled.picks.empty and labelled.pool.empty
    with pytest.raises(ConfigError, match="label_budget"):
        DiagnosisSettings(label_budget=-1)
    with pytest.raises(ValueError, match=">= 0"):
        _select(specs, {WW: -1.0})
    with pytest.raises(ValueError, match="not in the"):
        _select(specs, {"Wheat": 1.0})
