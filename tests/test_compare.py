"""Comparing two runs: the bootstrap on synthetic tables with known answers, the evaluation set, bad inputs, and
two twins with the same fields whose second model is better on chosen crops."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cropmon import errors
from cropmon.cli import EXIT_INPUT, EXIT_OK, main
from cropmon.diagnosis import compare
from cropmon.labels import CROP_NAMES
from cropmon.report import compare as compare_report
from cropmon.twin import make_twin


def _fields(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """A per-field table with the columns a comparison reads: (field_id, GT crop, predicted crop, confidence)."""
    return pd.DataFrame(
        {
            "field_id": [r[0] for r in rows],
            "gt_label": [r[1] for r in rows],
            "majority_crop_label": [r[2] for r in rows],
            "confidence_score": [r[3] for r in rows],
            "n_pixels": 20,
        }
    )


def _crop(crop: str, n: int, right: int, *, prefix: str, wrong_as: str = "Fallow", conf: float = 70.0) -> list:
    return [(f"{prefix}{i}", crop, crop if i < right else wrong_as, conf) for i in range(n)]


def _compare(a: pd.DataFrame, b: pd.DataFrame, ids=None, **kwargs) -> pd.DataFrame:
    chosen = compare.evaluation_set(a, b, None if ids is None else pd.Series(ids))
    return compare.compare_tables(chosen, n_boot=kwargs.pop("n_boot", 2000), **kwargs).set_index("crop")


def test_identical_runs_are_unchanged_with_zero_deltas():
    rng = np.random.default_rng(1)
    crops = ["Winter Wheat", "Spring Barley", "Flax", "Fallow", "Potatoes"]
    rows = [
        (f"f{i}", rng.choice(crops), rng.choice(crops), float(rng.uniform(20, 95))) for i in range(400)
    ]  # fmt: skip
    table = _compare(_fields(rows), _fields(rows))
    assert set(table["verdict"]) == {"unchanged"}
    for m in compare.MEASURES:
        assert (table[f"{m}_delta"] == 0).all()
        assert (table[f"{m}_delta_lo"] == 0).all() and (table[f"{m}_delta_hi"] == 0).all()


def test_scores_and_verdicts_by_hand():
    """Spring Barley: 20 fields, A gets none right (all -> Fallow), B all: +1 in every resample. Flax: 20 fields,
    15 right in both (the same ones): 0 in every resample. Lentils: 4 fields, A 0 right, B 4: too few for a verdict.
    """
    a = _fields(_crop("Spring Barley", 20, 0, prefix="s") + _crop("Flax", 20, 15, prefix="x")
                + _crop("Lentils", 4, 0, prefix="l", wrong_as="Peas"))  # fmt: skip
    b = _fields(_crop("Spring Barley", 20, 20, prefix="s") + _crop("Flax", 20, 15, prefix="x")
                + _crop("Lentils", 4, 4, prefix="l", wrong_as="Peas"))  # fmt: skip
    table = _compare(a, b)
    sb = table.loc["Spring Barley"]
    assert (sb["n_a"], sb["agreement_a"], sb["agreement_b"], sb["f1_a"], sb["f1_b"]) == (20, 0.0, 1.0, 0.0, 1.0)
    assert sb["agreement_delta_lo"] == sb["agreement_delta_hi"] == 1.0
    assert sb["verdict"] == "better"
    assert table.at["Flax", "verdict"] == "unchanged" and table.at["Flax", "agreement_delta"] == 0
    assert table.at["Lentils", "verdict"] == "too_few_fields"
    assert table.index[0] == "Spring Barley"  # better first
    assert table["interval_level"].iloc[0] == pytest.approx(1 - 0.05 / 2)  # two crops with a verdict


def test_false_alarms_in_the_set_count_in_f1():
    """F1 over the set: Flax fields predicted as Spring Barley lower Spring Barley's precision."""
    a = _fields(_crop("Spring Barley", 10, 10, prefix="s") + _crop("Flax", 10, 6, prefix="x", wrong_as="Spring Barley"))
    scores = compare.crop_scores(compare.scored_fields(a))
    assert scores.at["Spring Barley", "agreement"] == 1.0
    assert scores.at["Spring Barley", "f1"] == pytest.approx(2 * 10 / (10 + 14))


def test_noise_alone_flags_no_crop_and_worse_is_found():
    """30 crops whose outcomes are redrawn at random between A and B (same true agreement): the simultaneous
    intervals flag none, where 30 separate 95 % intervals flag some. A crop that drops from 0.9 to 0.3 is worse."""
    rng = np.random.default_rng(11)
    crops = [f"c{k}" for k in range(30)]
    names = list(CROP_NAMES[:30])
    a_rows, b_rows = [], []
    for k, crop in enumerate(names):
        p = 0.3 + 0.4 * (k % 3) / 2
        for i in range(40):
            fid = f"{crops[k]}_{i}"
            a_rows.append((fid, crop, crop if rng.random() < p else "Vineyard", 50.0))
            b_rows.append((fid, crop, crop if rng.random() < p else "Vineyard", 50.0))
    a, b = _fields(a_rows), _fields(b_rows)
    chosen = compare.evaluation_set(a, b, None)
    assert set(compare.compare_tables(chosen, n_boot=4000)["verdict"]) == {"unchanged"}
    separate = compare.bootstrap_deltas(chosen, n_boot=4000, n_crops=1)
    assert ((separate["agreement_delta_lo"] > 0) | (separate["agreement_delta_hi"] < 0)).sum() >= 1

    drop = _crop("Sunflowers", 40, 36, prefix="u"), _crop("Sunflowers", 40, 12, prefix="u")
    table = _compare(pd.concat([a, _fields(drop[0])]), pd.concat([b, _fields(drop[1])]), n_boot=4000)
    assert table.at["Sunflowers", "verdict"] == "worse"
    assert set(table.drop(index="Sunflowers")["verdict"]) == {"unchanged"}


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(2)
    rows = [(f"f{i}", "Flax", "Flax" if rng.random() < 0.6 else "Peas", rng.uniform(30, 90)) for i in range(50)]
    rows_b = [(f, c, "Flax" if rng.random() < 0.8 else "Peas", rng.uniform(30, 90)) for f, c, _, _ in rows]
    one, two, other = (_compare(_fields(rows), _fields(rows_b), seed=s) for s in (5, 5, 6))
    pd.testing.assert_frame_equal(one, two)
    assert one.at["Flax", "conf_mean_delta_lo"] != other.at["Flax", "conf_mean_delta_lo"]


def test_evaluation_set_choice_and_refusals():
    a = _fields(_crop("Flax", 12, 6, prefix="x") + _crop("Peas", 12, 12, prefix="p"))
    chosen = compare.evaluation_set(a, a, pd.Series(["x0", "x1", "p3"]))
    assert (chosen.source, chosen.paired, len(chosen.a)) == ("evaluation_fields", True, 3)
    assert list(chosen.a["field_id"]) == list(chosen.b["field_id"]) == ["x0", "x1", "p3"]
    assert compare.evaluation_set(a, a, None).source == "common_fields"
    assert compare.evaluation_set(a, a, pd.Series([], dtype=str)).source == "common_fields"  # holds back nothing
    other = a.assign(field_id="o" + a["field_id"])
    unpaired = compare.evaluation_set(a, other, None)
    assert (unpaired.source, unpaired.paired) == ("all_fields", False)
    assert set(_compare(a, other)["verdict"]) == {"unchanged"}

    with pytest.raises(errors.NotComparable, match="1 of the 2 evaluation fields of run A are not in run B"):
        compare.evaluation_set(a, a.iloc[1:], pd.Series(["x0", "x1"]))
    relabelled = a.assign(gt_label=np.where(a["field_id"] == "x1", "Peas", a["gt_label"]))
    with pytest.raises(errors.NotComparable, match="another ground-truth crop"):
        compare.evaluation_set(a, relabelled, pd.Series(["x0", "x1"]))
    unscored = a.assign(n_pixels=np.where(a["field_id"] == "x1", 0, 20))
    chosen = compare.evaluation_set(a, unscored, pd.Series(["x0", "x1"]))
    assert len(chosen.a) == 1 and chosen.dropped == {"not scored in both runs": 1}


def _write_run(path, fields: pd.DataFrame, *, evaluation: list[str] | None = None, manifest: dict | None = None):
    path.mkdir(parents=True)
    fields.to_parquet(path / "fields.parquet", index=False)
    pd.DataFrame({"crop": ["Flax"], "num_fields": [12], "agreement_score": [0.5]}).to_csv(
        path / "crop_metrics.csv", index=False
    )
    if evaluation is not None:
        pd.DataFrame({"field_id": evaluation, "crop": "Flax"}).to_csv(path / "evaluation_fields.csv", index=False)
    (path / "run.json").write_text(json.dumps(manifest or {"inputs": {}}))
    return path


def _cli_error(capsys, *argv: str) -> str:
    code = main(["compare", *map(str, argv), "--bootstrap", "200"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    lines = [line for line in err.splitlines() if line.startswith("cropmon: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_refuses_runs_that_cannot_be_compared(tmp_path, capsys):
    a = _fields(_crop("Flax", 12, 6, prefix="x"))
    run_a = _write_run(tmp_path / "a", a, evaluation=["x0", "x1"])
    run_b = _write_run(tmp_path / "b", a.iloc[1:])
    line = _cli_error(capsys, run_a, run_b, "--out", tmp_path / "out")
    assert str(run_b) in line and "x0" in line and "Fix: run the next model on the same ground-truth fields" in line
    (run_b / "fields.parquet").unlink()
    line = _cli_error(capsys, run_a, run_b, "--out", tmp_path / "out")
    assert "fields.parquet: fields.parquet is missing" in line and "Fix:" in line
    line = _cli_error(capsys, run_a, tmp_path / "nowhere", "--out", tmp_path / "out")
    assert "the run directory does not exist" in line
    multi = _write_run(tmp_path / "multi", a, manifest={"aois": {"north": {}, "south": {}}})
    line = _cli_error(capsys, run_a, multi, "--out", tmp_path / "out")
    assert "multi-AOI run" in line and "north, south" in line
    (run_b / "crop_metrics.csv").write_text("crop,other\nFlax,1\n")
    a.to_parquet(run_b / "fields.parquet", index=False)
    line = _cli_error(capsys, run_a, run_b, "--out", tmp_path / "out")
    assert "crop_metrics.csv: no column num_fields, agreement_score" in line
    line = _cli_error(capsys, run_a, run_a, "--out", run_a)
    assert "would replace a run directory" in line
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in run_a.iterdir()) == [
        "crop_metrics.csv", "evaluation_fields.csv", "fields.parquet", "run.json"
    ]  # fmt: skip


def test_read_run_without_evaluation_fields(tmp_path):
    a = _fields(_crop("Flax", 12, 6, prefix="x"))
    run = compare_report.read_run(_write_run(tmp_path / "a", a))
    assert run.evaluation_ids is None and len(run.fields) == 12
    with pytest.raises(errors.InputError):
        (tmp_path / "a" / "run.json").write_text("{not json")
        compare_report.read_run(tmp_path / "a")


# ---------------------------------------------------------------------------------------------------------------
# Two twins: the same fields, a model that is better on Spring Barley and Flax

BETTER = {"Spring Barley": 0.85, "Flax": 0.9}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs of the default settings: A's held-back set is its probability sample (blocks, then fields by
    map class: ~2,200 of 9,613 fields at scale 1/16, ~55 of each better crop)."""
    root = tmp_path_factory.mktemp("compare")
    runs = {}
    for name, quality in (("a", None), ("b", BETTER)):
        twin = make_twin(root / f"twin_{name}", scale=1 / 16, seed=3, quality=quality)
        args = ["run", "--raster", twin.raster, "--fields", twin.fields, "--scheduler", "threads", "--progress", "off"]
        args += ["--out", root / f"run_{name}"]
        assert main([str(x) for x in args]) == EXIT_OK
        runs[name] = root / f"run_{name}"
    return root, runs


def test_better_model_is_better_exactly_on_the_chosen_crops(two_runs, capsys):
    root, runs = two_runs
    capsys.readouterr()
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--out", str(root / "cmp"), "--seed", "1"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "worse: none" in out and all(crop in out.split("better: ")[1].split(";")[0] for crop in BETTER)
    table = pd.read_csv(root / "cmp" / "comparison.csv")
    verdicts = table.groupby("verdict")["crop"].agg(set).to_dict()
    assert verdicts["better"] == set(BETTER)
    assert "worse" not in verdicts
    held = pd.read_csv(runs["a"] / "evaluation_fields.csv")
    assert table["n_a"].sum() == len(held)  # scored on exactly A's held-back fields, in both runs
    assert (table["n_a"] == table["n_b"]).all()
    better = table.set_index("crop").loc[list(BETTER)]
    assert better["n_a"].min() >= 40
    assert (better["pa_delta_lo"] > 0).all() and (better["pa_delta"] > 0.15).all()  # the design-based verdict
    assert (held["inclusion_probability"] > 0).all() and (held["inclusion_probability"] <= 1).all()
    text = (root / "cmp" / "comparison.md").read_text()
    assert f"held-back evaluation fields (evaluation_fields.csv): {len(held):,} listed" in text
    assert "probability sample" in text and "Overall accuracy (pixels, fields as clusters): A" in text
    assert "Better: " in text and "Worse: no crop." in text
    assert (root / "cmp" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_compared_with_itself_is_unchanged(two_runs, tmp_path):
    _, runs = two_runs
    _, table, chosen = compare_report.write_comparison(runs["a"], runs["a"], tmp_path / "same", n_boot=500)
    assert chosen.source == "evaluation_fields"
    assert set(table["verdict"]) <= {"unchanged", "too_few_fields"}
    assert (table["agreement_delta"] == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# The design-based estimates: inclusion-probability weights, blocks as primary units, coverage of a known truth


def test_design_based_estimates_weight_each_field_by_its_inclusion_probability():
    """Stratum Flax-mapped fields drawn with probability 1, Peas-mapped ones with 1/4: each sampled Peas field
    stands for 4. Producer's accuracy of Flax, by hand: right Flax pixels / all Flax pixels, weighted."""
    a = _fields(_crop("Flax", 8, 6, prefix="x", wrong_as="Peas") + _crop("Peas", 4, 4, prefix="p"))
    a["n_pixels"] = [10, 10, 10, 10, 10, 10, 30, 30, 20, 20, 20, 20]
    held = pd.DataFrame({"field_id": a["field_id"], "inclusion_probability": [1.0] * 6 + [0.25] * 6,
                         "block": [f"b{i}" for i in range(12)], "block_fraction": 0.5})
    chosen = compare.evaluation_set(a, a, held["field_id"])
    design = compare.design_sample(chosen, held)
    table, overall = compare.design_comparison(design, order=("Flax", "Peas"))
    flax_pixels = 6 * 10 + 4 * 2 * 30  # two Flax fields mapped as Peas, weight 4
    assert table.at["Flax", "pa_a"] == pytest.approx(60 / flax_pixels)
    assert table.at["Peas", "ua_a"] == pytest.approx(4 * 80 / (4 * 80 + 4 * 60))
    assert overall["oa_a"] == pytest.approx((60 + 4 * 80) / (60 + 4 * 80 + 4 * 60))
    assert overall["probability_sample"] and overall["fpc"] == 0.5 and overall["primary_units"] == 12
    assert table.at["Flax", "pa_delta"] == 0 and table.at["Flax", "pa_delta_lo"] == pytest.approx(0, abs=1e-12)


def _frame(rng: np.random.Generator, *, blocks: int = 80, per_block: int = 30) -> pd.DataFrame:
    """Clean GT fields in blocks with block-level effects, model A and a better model B (correlated errors)."""
    crops = np.array(["Winter Wheat", "Spring Barley", "Flax"])
    rows = []
    for b in range(blocks):
        skill = rng.normal(0, 0.6)  # a block where both models do worse or better
        for i in range(per_block):
            crop = crops[rng.choice(3, p=[0.6, 0.25, 0.15])]
            u = rng.random()
            p_a = 1 / (1 + np.exp(-(1.2 + skill))) if crop != "Spring Barley" else 0.45
            p_b = min(p_a + 0.12, 0.99)
            right_a, right_b = u < p_a, u < p_b
            other = crops[(np.flatnonzero(crops == crop)[0] + 1) % 3]
            rows.append((f"f{b}_{i}", crop, crop if right_a else other, crop if right_b else other,
                         int(rng.integers(5, 60)), b % 10, b // 10))
    frame = pd.DataFrame(rows, columns=["field_id", "crop", "pred_a", "pred_b", "n_pixels", "block_x", "block_y"])
    return frame


def test_the_block_design_covers_the_true_paired_gain():
    """Repeated draws of the evaluation design (diagnosis/evaluation.py) from a frame whose whole truth is known:
    the paired interval of B - A in overall accuracy covers the frame's true gain in about 95 % of the draws."""
    from cropmon.diagnosis.evaluation import draw_evaluation
    from cropmon.diagnosis.settings import DiagnosisSettings

    rng = np.random.default_rng(7)
    frame = _frame(rng)
    px = frame["n_pixels"].to_numpy(float)
    truth = ((frame["pred_b"] == frame["crop"]) * px).sum() / px.sum() - (
        (frame["pred_a"] == frame["crop"]) * px).sum() / px.sum()
    candidates = frame.assign(predicted=frame["pred_a"], correct=frame["pred_a"] == frame["crop"])
    settings = DiagnosisSettings(eval_target_se=0.02, eval_min_per_stratum=5, eval_max_share=0.3)
    covered, draws = 0, 150
    for seed in range(draws):
        cand = candidates.assign(_key=compare_hash(candidates["field_id"], seed))
        _, sample, design = draw_evaluation(cand, settings=settings, seed=seed)
        ids = sample["field_id"]
        a = frame.set_index("field_id").loc[ids]
        fields_a = pd.DataFrame({"field_id": ids, "gt_label": a["crop"].to_numpy(),
                                 "majority_crop_label": a["pred_a"].to_numpy(), "confidence_score": 50.0,
                                 "n_pixels": a["n_pixels"].to_numpy()})
        fields_b = fields_a.assign(majority_crop_label=a["pred_b"].to_numpy())
        held = sample.assign(block=sample["psu"].astype(str), block_fraction=design.block_fraction)
        chosen = compare.evaluation_set(fields_a, fields_b, held["field_id"])
        _, overall = compare.design_comparison(compare.design_sample(chosen, held), order=tuple(CROP_NAMES))
        covered += overall["oa_delta_lo"] <= truth <= overall["oa_delta_hi"]
    assert 0.90 <= covered / draws <= 0.99, covered / draws


def compare_hash(ids: pd.Series, seed: int) -> np.ndarray:
    from cropmon.diagnosis.blocks import seeded_hash

    return seeded_hash(ids, seed)
