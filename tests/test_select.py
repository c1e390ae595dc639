"""The active-learning selection: quotas by hand, clean candidates, and the selection rules as properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from diagnosis_fixtures import field, hand_example, make_table
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from cropmon.diagnosis import metrics, select
from cropmon.diagnosis.blocks import seeded_hash
from cropmon.diagnosis.diagnose import underperforming_crops
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.quotas import within_budget
from cropmon.report.wording import plan_derivation

LAT = 50.0
KM_X = 111.320 * math.cos(math.radians(LAT))  # km per degree of longitude at the test AOI's latitude
KM_Y = 110.574


def _plan(fields, counts, s, seed=0, held_out=None):
    table = metrics.crop_metrics(fields, counts)
    confusion = metrics.confusion_matrix(fields)
    flagged = underperforming_crops(table, confusion, s)
    return select.plan_selection(fields, table, flagged, confusion, settings=s, seed=seed, held_out=held_out)


def test_block_grid_in_degrees_and_in_metres():
    deg = select.BlockGrid.for_points(np.array([1.5, 2.5]), np.array([49.5, 50.5]), block_km=5.0)
    assert deg.dy == pytest.approx(5 / 110.574)
    assert deg.dx == pytest.approx(5 / KM_X, rel=1e-3)  # mean latitude 50
    utm = select.BlockGrid.for_points(
        np.array([450_000.0, 460_000.0]), np.array([5_500_000.0, 5_510_000.0]), block_km=5.0
    )
    assert (utm.dx, utm.dy) == (5000.0, 5000.0)
    ix, iy = utm.index(np.array([4999.0, 5000.0, -1.0]), np.array([0.0, 12_000.0, 0.0]))
    assert list(ix) == [0, 1, -1] and list(iy) == [0, 2, 0]
    assert utm.km_to_block(np.array([7000.0]), np.array([2500.0]), np.array([0]), np.array([0]))[0] == 2.0


def test_candidates_are_clean_fields_only():
    specs = [
        field("Winter Wheat", "Winter Barley", field_id="ok"),
        field("Winter Wheat", "Winter Barley", n_pixels=4, field_id="tiny"),
        field("Winter Wheat", "Winter Barley", pixel_rule="all_touched", field_id="touched"),
        field("Winter Wheat", None, field_id="no_pixel"),
        field(None, "Winter Barley", field_id="unknown_label"),
        field("Winter Wheat", "Winter Barley", field_id="dup"),
        field("Winter Wheat", "Winter Barley", field_id="not_polygon"),
    ]
    fields, _ = make_table(specs)
    fields.loc[fields["field_id"] == "dup", "duplicate_id"] = True
    fields.loc[fields["field_id"] == "not_polygon", "geometry_status"] = "not_polygon"
    grid = select.BlockGrid.for_points(fields["x"].to_numpy(), fields["y"].to_numpy(), block_km=5.0)
    candidates = select.candidate_fields(fields, settings=DiagnosisSettings(min_pixels=10), grid=grid)
    assert list(candidates["field_id"]) == ["ok"]


def test_uncertainty_comes_from_confidence_and_the_pixel_vote_margin():
    specs = [
        field("Winter Wheat", "Winter Wheat", conf=90.0, purity=1.0, field_id="sure"),
        field("Winter Wheat", "Winter Wheat", conf=90.0, purity=0.6, field_id="split_vote"),
        field("Winter Wheat", "Winter Wheat", conf=40.0, purity=1.0, field_id="unsure"),
        field("Winter Wheat", "Winter Barley", conf=90.0, purity=1.0, field_id="wrong"),
    ]
    fields, _ = make_table(specs)
    grid = select.BlockGrid.for_points(fields["x"].to_numpy(), fields["y"].to_numpy(), block_km=5.0)
    c = select.candidate_fields(fields, settings=DiagnosisSettings(), grid=grid).set_index("field_id")
    assert c.at["sure", "uncertainty"] == pytest.approx(0.5 * 0.1)
    assert c.at["split_vote", "uncertainty"] == pytest.approx(0.5 * (0.1 + 0.8))  # margin 0.6 - 0.4 = 0.2
    assert c.at["unsure", "uncertainty"] == pytest.approx(0.5 * 0.6)
    assert list(c["informative"]) == [False, True, True, True]


def test_the_plan_ranks_by_the_acquisition_score_that_ranks_fields_without_labels():
    """One formula in one place: the candidates' uncertainty is uncertainty.acquisition_score, on the table's
    confidence and vote margin, and equals the histogram's acquisition score of diagnosis/uncertainty.py."""
    from cropmon.diagnosis.uncertainty import field_uncertainty

    rng = np.random.default_rng(3)
    specs = [field("Winter Wheat", str(rng.choice(["Winter Wheat", "Winter Barley", "Canola"])),
                   conf=float(rng.uniform(20, 99)), purity=float(rng.uniform(0.34, 1.0)), n_pixels=int(n),
                   runner_up="Fallow", x=2.0 + 0.01 * i) for i, n in enumerate(rng.integers(10, 80, 200))]
    fields, counts = make_table(specs)
    grid = select.BlockGrid.for_points(fields["x"].to_numpy(), fields["y"].to_numpy(), block_km=5.0)
    c = select.candidate_fields(fields, settings=DiagnosisSettings(), grid=grid)
    scores = field_uncertainty(fields, counts).loc[c.index, "acquisition_score"]
    np.testing.assert_allclose(c["uncertainty"], scores, rtol=0, atol=1e-12)
    by_hand = 0.5 * ((1 - fields.loc[c.index, "confidence_score"] / 100) + (1 - fields.loc[c.index, "vote_margin"]))
    np.testing.assert_array_equal(c["uncertainty"].to_numpy(), by_hand.to_numpy())  # bit for bit: the plan is unchanged


def test_held_out_fields_are_neither_candidates_nor_held_back():
    specs = [field("Winter Wheat", "Winter Wheat", conf=90.0, x=2.0 + 0.02 * i, field_id=f"f{i}") for i in range(60)]
    fields, counts = make_table(specs)
    s = DiagnosisSettings(block_km=1.0, buffer_km=0.2, eval_min_per_stratum=5)
    held_out = fields.index[fields["field_id"].isin(["f1", "f2", "f30"])]
    sel = _plan(fields, counts, s, held_out=held_out)
    assert not set(sel.candidates.index) & set(held_out) and len(sel.candidates) == len(fields) - 3
    assert not {"f1", "f2", "f30"} & set(sel.evaluation["field_id"]) and len(sel.evaluation)


def test_second_cycle_bands_play_no_part():
    # Bands 7-8 (crop_type_2 and its confidence) are a second crop cycle, not a runner-up: even if a table carried
    # them, the ranking would not move; only band 4 and the pixel-vote margin count.
    rng = np.random.default_rng(4)
    specs = [
        field("Spring Barley", str(rng.choice(["Spring Barley", "Winter Barley"])), conf=float(rng.uniform(30, 90)),
              purity=float(rng.choice([0.6, 1.0])), x=float(rng.uniform(1.9, 2.1)), y=float(rng.uniform(49.9, 50.0)))
        for _ in range(120)
    ]  # fmt: skip
    fields, counts = make_table(specs)
    with_cycle = fields.assign(crop_type_2=rng.integers(0, 8, len(fields)), crop_type_2_confidence=99.0)
    s = DiagnosisSettings(block_km=1.0, buffer_km=0.2)
    plain, second = _plan(fields, counts, s), _plan(with_cycle, counts, s)
    assert len(plain.picks) > 10
    pd.testing.assert_frame_equal(plain.picks, second.picks)


def test_plan_groups_link_confused_crops():
    fields, counts = make_table(hand_example())
    s = DiagnosisSettings(min_fields=3)
    flagged = underperforming_crops(metrics.crop_metrics(fields, counts), metrics.confusion_matrix(fields), s)
    groups = select.plan_groups(flagged, metrics.confusion_matrix(fields), settings=s)
    members = {g: set(rows["crop"]) for g, rows in groups.groupby("group")}
    # Spring Barley -> Winter Barley 0.8 and Winter Barley -> Winter Wheat 0.25 (absorbed, >= 0.2); the corns 1.0
    # and 0.5; Grassland Cultivated takes 1/6 of Winter Wheat (< 0.2, never the other way): it stays alone.
    assert sorted(map(sorted, members.values())) == [
        ["Grain Corn", "Silage Corn"],
        ["Grassland Cultivated"],
        ["Spring Barley", "Winter Barley", "Winter Wheat"],
    ]
    assert set(groups["role"]) == {"underperforming"}
    assert groups.iloc[0]["crop"] == "Spring Barley"  # the worst crop's group first


def _block_of_fields(crop, n, *, x, y, wrong=True, conf=40.0, seed=0):
    rng = np.random.default_rng(seed)
    pred = "Winter Barley" if wrong else crop
    return [
        field(
            crop,
            pred,
            conf=conf,
            x=x + rng.uniform(0, 0.005),
            y=y + rng.uniform(0, 0.005),
            field_id=f"{crop}{seed}_{i}",
        )
        for i in range(n)
    ]


def test_quota_follows_the_documented_formula():
    # Spring Barley: 40 fields, all predicted as Winter Barley, spread over 40 blocks; Winter Barley 200 fields right.
    specs = []
    for i in range(40):
        specs += _block_of_fields("Spring Barley", 1, x=1.6 + 0.1 * (i % 8), y=49.6 + 0.1 * (i // 8), seed=i)
        specs += _block_of_fields("Winter Barley", 5, x=1.6 + 0.1 * (i % 8), y=49.6 + 0.1 * (i // 8), wrong=False,
                                  conf=90.0, seed=100 + i)  # fmt: skip
    fields, counts = make_table(specs)
    s = DiagnosisSettings(label_base=20, label_share_scale=100.0, label_min=5, label_max=500,
                          eval_min_per_stratum=5)
    plan = _plan(fields, counts, s).plan.set_index("crop")
    error, share = 1.0, 40 / 240  # all fields are 2 ha
    expected = math.ceil(error * (20 + 100 * math.sqrt(share)))
    assert plan.at["Spring Barley", "target"] == expected
    assert plan.at["Spring Barley", "quota"] == min(expected, plan.at["Spring Barley", "available"])
    assert plan.at["Winter Barley", "role"] == "contrast"
    assert plan.at["Winter Barley", "target"] == math.ceil(0.5 * expected)
    assert plan.at["Spring Barley", "raw_target"] == pytest.approx(error * (20 + 100 * math.sqrt(share)))
    assert plan.at["Spring Barley", "area_share"] == pytest.approx(share)
    assert plan.at["Winter Barley", "linked_target"] == expected  # the targets its confused crops get
    words = plan_derivation(plan.reset_index(), s)
    assert f"target {expected} (clamped to [5, 500])" in words.iloc[list(plan.index).index("Spring Barley")]


def test_apportion_respects_the_budget():
    wanted = np.array([10, 0, 7, 3])
    assert list(within_budget(wanted, None)) == [10, 0, 7, 3]
    assert list(within_budget(wanted, 100)) == [10, 0, 7, 3]
    assert list(within_budget(wanted, 10)) == [5, 0, 4, 1]  # 5, 3.5, 1.5: remainders to the first largest


def test_a_crowded_block_gives_at_most_max_per_block():
    specs = _block_of_fields("Spring Barley", 30, x=2.0, y=50.0)  # 30 wrong fields in one small block
    for i in range(6):  # and one wrong field in each of 6 blocks far away
        specs += _block_of_fields("Spring Barley", 1, x=1.5 + 0.2 * i, y=49.5, seed=10 + i)
    specs += _block_of_fields("Winter Barley", 40, x=1.5, y=50.3, wrong=False, conf=95.0)
    fields, counts = make_table(specs)
    s = DiagnosisSettings(max_per_block=2, eval_max_share=0.05, label_min=20, buffer_km=0.5)
    result = _plan(fields, counts, s)
    picks = result.picks.loc[result.picks["crop"] == "Spring Barley"]
    assert picks.groupby("block").size().max() <= 2
    assert len(picks) == result.plan.set_index("crop").at["Spring Barley", "quota"]
    far = picks["y"] < 49.6
    assert far.sum() >= 4  # the scattered fields are on the list, not only the crowded block


# --- properties ------------------------------------------------------------------------------------------------

CROPS = ("Winter Wheat", "Winter Barley", "Spring Barley", "Triticale", "Grain Corn", "Silage Corn")
PREDS = (*CROPS, "Fallow")


field_rows = st.lists(
    st.tuples(
        st.sampled_from(CROPS),
        st.sampled_from((None, *PREDS)),  # None: predicted as its GT crop
        st.floats(20, 99),
        st.integers(1, 80),
        st.sampled_from((0.55, 0.7, 0.9, 1.0)),
        st.floats(1.9, 2.0),
        st.floats(49.95, 50.0),
        st.sampled_from(("centre", "centre", "centre", "all_touched")),
    ),
    min_size=10,
    max_size=150,
)
selection_settings = st.builds(
    DiagnosisSettings,
    min_fields=st.integers(1, 10),
    min_pixels=st.integers(1, 20),
    block_km=st.sampled_from((1.0, 2.0)),
    buffer_km=st.sampled_from((0.0, 0.5, 1.0)),
    max_per_block=st.integers(1, 4),
    label_min=st.integers(1, 5),
    label_max=st.integers(5, 40),
    label_budget=st.sampled_from((None, 5, 25, 60)),
    eval_min_per_stratum=st.integers(1, 15),
    eval_target_se=st.sampled_from((0.02, 0.05, 0.2)),
    eval_max_share=st.sampled_from((0.2, 0.5)),
)


@st.composite
def aois(draw):
    rows = [
        field(gt, pred or gt, conf=conf, n_pixels=n, purity=purity, x=x, y=y, area_m2=1e4 * n, pixel_rule=rule,
              field_id=f"id{i:04d}")
        for i, (gt, pred, conf, n, purity, x, y, rule) in enumerate(draw(field_rows))
    ]  # fmt: skip
    return rows, draw(selection_settings), draw(st.integers(0, 2**31))


def _km(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Pairwise distances (km) between the points of a and b, equirectangular (an independent oracle)."""
    dx = (a["x"].to_numpy()[:, None] - b["x"].to_numpy()[None, :]) * KM_X
    dy = (a["y"].to_numpy()[:, None] - b["y"].to_numpy()[None, :]) * KM_Y
    return np.hypot(dx, dy)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=aois())
def test_selection_rules_hold(case):
    rows, s, seed = case
    fields, counts = make_table(rows)
    result = _plan(fields, counts, s, seed=seed)
    plan, picks, held = result.plan, result.picks, result.evaluation
    assume(len(plan))
    buffered = bool((result.candidates["split"] == "buffer").any())
    event(f"picks: {len(picks) > 0}, held back: {len(held) > 0}, buffer used: {buffered}")
    # never twice, never both lists
    assert picks["field_id"].is_unique and held["field_id"].is_unique
    assert not set(picks["field_id"]) & set(held["field_id"])
    # every quota and cap
    per_crop = picks["crop"].value_counts().reindex(plan["crop"], fill_value=0).to_numpy()
    np.testing.assert_array_equal(per_crop, plan["quota"].to_numpy())
    assert (plan["quota"] <= plan["target"]).all() and (plan["quota"] <= plan["available"]).all()
    assert ((plan["target"] >= s.label_min) & (plan["target"] <= s.label_max)).all()
    if s.label_budget is not None:
        assert len(picks) <= s.label_budget
    if len(picks):
        assert picks.groupby(["crop", "block"]).size().max() <= s.max_per_block
    held_per_crop = held["crop"].value_counts().reindex(plan["crop"], fill_value=0)
    assert (held_per_crop.to_numpy() == plan["eval_fields"].to_numpy()).all()
    # the held-back sample: in the evaluation blocks, each field's probability (blocks drawn / blocks) x (drawn /
    # fields of its map class in those blocks), at least the floor of each map class when the blocks hold it
    design = result.design
    assert design.blocks <= max(design.blocks_in_frame * s.eval_max_share, 0)
    in_blocks = result.candidates.loc[result.candidates["split"] == "eval"]
    assert set(held["field_id"]) <= set(in_blocks["field_id"])
    for stratum, row in design.strata.set_index("stratum").iterrows():
        mine = held.loc[held["stratum"] == stratum]
        have = int((in_blocks["predicted"] == stratum).sum())
        assert len(mine) == row["sampled"] == min(have, max(s.eval_min_per_stratum, len(mine)))
        if len(mine):
            expected = design.blocks / design.blocks_in_frame * len(mine) / have
            np.testing.assert_allclose(mine["inclusion_probability"], expected)
    # only clean fields; picks are misclassified or uncertain
    chosen = fields.set_index("field_id").loc[list(picks["field_id"]) + list(held["field_id"])]
    assert (chosen["n_pixels"] >= s.min_pixels).all() and (chosen["pixel_rule"] == "centre").all()
    uncertain = (
        (picks["predicted"] != picks["crop"])
        | (picks["confidence_score"] < s.uncertain_confidence)
        | (picks["vote_margin"] < s.uncertain_margin)
    )
    assert uncertain.all()
    # the held-back fields are in other blocks than the picks, and at least buffer_km away from every pick
    assert not set(picks["block"]) & set(held["block"])
    if len(picks) and len(held):
        assert _km(picks, held).min() >= s.buffer_km * 0.99
    # ranks
    assert list(picks["rank"]) == list(range(1, len(picks) + 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=aois(), order_seed=st.integers(0, 1000))
def test_selection_depends_on_the_seed_only(case, order_seed):
    rows, s, seed = case
    fields, counts = make_table(rows)
    first = _plan(fields, counts, s, seed=seed)
    again = _plan(fields, counts, s, seed=seed)
    pd.testing.assert_frame_equal(first.picks, again.picks)
    pd.testing.assert_frame_equal(first.evaluation, again.evaluation)
    order = np.random.default_rng(order_seed).permutation(len(fields))
    shuffled = _plan(fields.iloc[order], counts.iloc[order], s, seed=seed)
    assert list(shuffled.picks["field_id"]) == list(first.picks["field_id"])
    assert set(shuffled.evaluation["field_id"]) == set(first.evaluation["field_id"])


def test_another_seed_gives_another_draw():
    specs = []
    for i in range(60):
        specs += _block_of_fields("Spring Barley", 3, x=1.6 + 0.05 * (i % 10), y=49.6 + 0.05 * (i // 10), seed=i)
    specs += _block_of_fields("Winter Barley", 60, x=1.6, y=50.3, wrong=False, conf=95.0)
    fields, counts = make_table(specs)
    s = DiagnosisSettings(block_km=2.0, buffer_km=0.5)
    draws = {tuple(sorted(_plan(fields, counts, s, seed=seed).evaluation["field_id"])) for seed in range(4)}
    assert len(draws) > 1


def test_buffer_keeps_picks_away_from_held_back_blocks():
    rng = np.random.default_rng(0)
    specs = [
        field("Spring Barley", "Winter Barley", conf=40.0, x=rng.uniform(1.9, 2.2), y=rng.uniform(49.9, 50.1),
              field_id=f"f{i}")
        for i in range(400)
    ]  # fmt: skip
    fields, counts = make_table(specs)
    s = DiagnosisSettings(block_km=1.0, buffer_km=0.5, eval_min_per_stratum=30, eval_max_share=0.3, label_max=400)
    result = _plan(fields, counts, s)
    split = result.candidates["split"].value_counts()
    assert split["eval"] > 0 and split["buffer"] > 0
    # every field is right or wrong alike (all predicted Winter Barley): no spatial correlation, so the fewest blocks
    assert result.design.blocks == 10 and result.design.rho == 0
    assert len(result.evaluation) == min(split["eval"], 30)  # the floor, or all the blocks hold
    assert _km(result.picks, result.evaluation).min() >= 0.5 * 0.99
    # the target (400) exceeds what is left: the list takes every field it may
    plan = result.plan.set_index("crop")
    assert plan.at["Spring Barley", "target"] == 400
    assert len(result.picks) == plan.at["Spring Barley", "quota"] == plan.at["Spring Barley", "available"]


def test_the_evaluation_sample_is_drawn_before_and_apart_from_the_plan():
    """Other thresholds change the plan (which crops, how many fields) but not the held-back sample: it depends
    on the clean fields and the seed only."""
    rng = np.random.default_rng(1)
    crops = ["Spring Barley", "Winter Barley", "Winter Wheat", "Flax"]
    specs = [field(str(c), str(rng.choice(crops)), conf=float(rng.uniform(30, 95)), x=float(rng.uniform(1.8, 2.3)),
                   y=float(rng.uniform(49.8, 50.2)), field_id=f"g{i}")
             for i, c in enumerate(rng.choice(crops, 600))]
    fields, counts = make_table(specs)
    base = DiagnosisSettings(block_km=1.0, buffer_km=0.3)
    strict = DiagnosisSettings(block_km=1.0, buffer_km=0.3, min_agreement=0.99, label_budget=50, label_base=10)
    one, two = _plan(fields, counts, base), _plan(fields, counts, strict)
    assert not one.plan.equals(two.plan)
    pd.testing.assert_frame_equal(one.evaluation, two.evaluation)


def test_inverse_probability_weights_count_the_frame_on_average():
    """Horvitz-Thompson: over many draws, the sum of 1 / inclusion probability of a map class's sampled fields
    averages to the number of that class's clean fields (the weights are the design's, not a guess)."""
    rng = np.random.default_rng(2)
    crops = ["Spring Barley", "Winter Barley", "Winter Wheat"]
    specs = [field(str(c), str(rng.choice(crops, p=[0.2, 0.3, 0.5])), x=float(rng.uniform(1.8, 2.4)),
                   y=float(rng.uniform(49.8, 50.2)), field_id=f"h{i}")
             for i, c in enumerate(rng.choice(crops, 500))]
    fields, _ = make_table(specs)
    s = DiagnosisSettings(block_km=2.0, buffer_km=0.5, eval_min_per_stratum=15)
    grid = select.BlockGrid.for_points(fields["x"].to_numpy(), fields["y"].to_numpy(), block_km=s.block_km)
    candidates = select.candidate_fields(fields, settings=s, grid=grid)
    frame = candidates["predicted"].value_counts()
    totals = []
    for seed in range(300):
        cand = candidates.assign(_key=seeded_hash(candidates["field_id"], seed))
        _, sample, _ = select.draw_evaluation(cand, settings=s, seed=seed)
        totals.append((1 / sample["inclusion_probability"]).groupby(sample["stratum"]).sum())
    mean = pd.concat(totals, axis=1).fillna(0).mean(axis=1).reindex(frame.index)
    se = pd.concat(totals, axis=1).fillna(0).std(axis=1).reindex(frame.index) / np.sqrt(300)
    assert (np.abs(mean - frame) < 4 * se + 1e-9).all(), (mean, frame)
