"""The active-learning plan: how many fields each underperforming crop gets, which fields, and which are held back.

Fields come from this AOI's ground truth and must be *clean*: evaluable, at least `min_pixels` pixel centres
inside (never an all_touched fallback), a usable geometry and a unique id. Band 7-8 (a second crop cycle) play no
part: uncertainty is band-4 confidence and the pixel-vote margin of the class histogram.

Spatial blocks: squares of about `block_km` on a lattice anchored at the CRS origin (kilometres become degrees at
the AOI's mean latitude when x/y are lon/lat). The held-back evaluation set is drawn first, before any quota, as a
probability sample with blocks as primary units (diagnosis/evaluation.py: sized from `eval_target_se`, each field's
inclusion probability known); no field in an evaluation block or closer than `buffer_km` to one is labelled
(buffer); fields to label come from the other blocks, at most `max_per_block` per crop and block, best-first in
rounds over the blocks so that neighbours do not crowd the list. Ties break on a hash of the field id (or block)
and the seed, so the result depends on the seed only, not on row order.

Quotas (`label_plan`): an underperforming crop's target is error x (label_base + label_share_scale x
sqrt(area share)), clamped to [label_min, label_max], where error = max(1 - agreement, 1 - F1, confidence gap);
crops linked by confusion (absorbed_by either way, or a mutual pair) form one group, and a linked crop that is not
underperforming joins as a *contrast* crop with contrast_ratio x the targets of the crops it is linked to. Each
quota is then capped by the clean, informative fields left to label, and all quotas together by `label_budget`
(largest remainder).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse.csgraph import connected_components

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis.blocks import BlockGrid, block_keys, block_labels, pick_in_rounds, seeded_hash
from cropmon.diagnosis.evaluation import EvaluationDesign, draw_evaluation
from cropmon.diagnosis.intervals import wilson
from cropmon.diagnosis.metrics import row_shares, truth_and_prediction
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.diagnosis.uncertainty import acquisition_score
from cropmon.quotas import within_budget
from cropmon.schema import has_field_id

CLEAN_GEOMETRY = ("ok", "repaired", "multipolygon")
RELATED_BONUS = 0.5  # score bonus of a field predicted as (or runner-up) another crop of its group
PICK_COLUMNS: tuple[str, ...] = (
    "rank", "field_id", "crop", "group", "role", "predicted", "runner_up", "correct", "confidence_score",
    "vote_margin", "purity", "n_pixels", "area_ha", "block", "pick_round", "x", "y", "score", "related_to",
)  # fmt: skip
EVAL_COLUMNS: tuple[str, ...] = (
    "field_id", "crop", "group", "predicted", "correct", "confidence_score", "vote_margin", "n_pixels", "area_ha",
    "block", "x", "y", "stratum", "inclusion_probability", "block_fraction",
)  # fmt: skip


# The per-field columns `candidate_fields` reads: it copies these columns of the clean rows only, not the whole
# table, whose copies would weigh on the diagnosis's peak memory.
CANDIDATE_INPUTS: tuple[str, ...] = (
    "field_id", "n_pixels", "pixel_rule", "geometry_status", "duplicate_id", "x", "y", "confidence_score",
    "vote_margin", "runner_up_crop", "purity", "area_m2",
)  # fmt: skip


def clean_fields(fields: pd.DataFrame, settings: DiagnosisSettings) -> pd.Series:
    """Which fields a plan may pick, with or without a label: at least `min_pixels` pixels burnt by their centres,
    a clean geometry, a unique, non-null field id and a point (for its block)."""
    return (
        (fields["n_pixels"] >= settings.min_pixels)
        & (fields["pixel_rule"] == "centre")
        & fields["geometry_status"].isin(CLEAN_GEOMETRY)
        & ~fields["duplicate_id"].astype(bool)
        & has_field_id(fields["field_id"])
        & np.isfinite(fields["x"].astype(float))
        & np.isfinite(fields["y"].astype(float))
    )


@dataclass(frozen=True)
class Selection:
    """Everything the plan decided: the block grid, the clean candidates (with split), quotas, picks, evaluation."""

    grid: BlockGrid
    candidates: pd.DataFrame
    plan: pd.DataFrame
    picks: pd.DataFrame
    evaluation: pd.DataFrame
    design: EvaluationDesign | None = None  # how the evaluation sample was drawn (diagnosis/evaluation.py)


def candidate_fields(fields: pd.DataFrame, *, settings: DiagnosisSettings, grid: BlockGrid,
                     catalogue: Catalogue = U0C) -> pd.DataFrame:
    """The clean fields of the GT with what ranking needs: crop, prediction, uncertainty, informative, block.

    `uncertainty` is `uncertainty.acquisition_score` of the table's confidence and vote margin (the same score the
    fields without a label are ranked by); `informative` fields are misclassified, or right but under
    `uncertain_confidence` or `uncertain_margin`. Index = the fields' index.
    """
    truth, pred = truth_and_prediction(fields, catalogue)
    clean = clean_fields(fields, settings).loc[truth.index]
    truth, pred = truth.loc[clean], pred.loc[clean]
    ev = fields.loc[truth.index, list(CANDIDATE_INPUTS)]
    conf = ev["confidence_score"].astype(float)
    margin = ev["vote_margin"].astype(float)
    runner = ev["runner_up_crop"].astype(float)
    u_margin = 1 - margin
    bx, by = grid.index(ev["x"].to_numpy(float), ev["y"].to_numpy(float))
    out = pd.DataFrame(
        {
            "field_id": ev["field_id"].astype(str),
            "crop": truth,
            "predicted": pred,
            "runner_up": pd.Series(
                np.where(runner.notna(), catalogue.names_of(runner.fillna(catalogue.ids[0]).astype(int)),
                         np.array(None, dtype=object)),
                index=ev.index,
            ),
            "correct": truth == pred,
            "confidence_score": conf,
            "purity": ev["purity"].astype(float),
            "vote_margin": margin,
            "n_pixels": ev["n_pixels"].astype("int64"),
            "area_ha": ev["area_m2"].astype(float) / 1e4,
            "x": ev["x"].astype(float),
            "y": ev["y"].astype(float),
            "block_x": bx,
            "block_y": by,
            "uncertainty": acquisition_score((1 - conf / 100).to_numpy(), u_margin.to_numpy()),
        },
        index=ev.index,
    )
    out["informative"] = ~out["correct"] | (conf < settings.uncertain_confidence) | (margin < settings.uncertain_margin)
    return out


def plan_groups(flagged: pd.DataFrame, confusion_df: pd.DataFrame, *, settings: DiagnosisSettings) -> pd.DataFrame:
    """Crops to plan, one row each: group, role (underperforming | contrast), severity, members, linked crops.

    Two crops are linked when one of them is underperforming and either takes `absorbed_share` of the other's
    fields or their confusion is mutual (both ways >= `mutual_share`); linked crops are planned together
    (connected components). Groups follow the order of their worst crop in `flagged` (worst tier first);
    `linked_to` names the underperforming crops each crop is directly linked to.
    """
    names = np.asarray(confusion_df.index, dtype=object)
    shares = row_shares(confusion_df).to_numpy()
    bad = np.isin(names, flagged["crop"].to_numpy())
    absorbed = (shares > 0) & (shares >= settings.absorbed_share)
    both_ways = np.minimum(shares, shares.T)
    mutual = (both_ways > 0) & (both_ways >= settings.mutual_share)
    adjacency = (absorbed | absorbed.T | mutual) & (bad[:, None] | bad[None, :])
    np.fill_diagonal(adjacency, False)
    _, component = connected_components(adjacency, directed=False)
    member = bad | adjacency.any(axis=1)
    order = {crop: i for i, crop in enumerate(flagged["crop"])}
    linked = [";".join(names[adjacency[i] & bad]) for i in np.flatnonzero(member)]
    table = pd.DataFrame({"crop": names[member], "component": component[member], "linked_to": linked})
    table["role"] = np.where(table["crop"].isin(order), "underperforming", "contrast")
    table["_order"] = table["crop"].map(order).fillna(len(order))
    table["_first"] = table.groupby("component")["_order"].transform("min")
    table = table.sort_values(["_first", "_order", "crop"]).reset_index(drop=True)
    table["group"] = "G" + (table.groupby("_first", sort=False).ngroup() + 1).astype(str)
    table["members"] = table.groupby("group")["crop"].transform(" + ".join)
    table["severity"] = table["crop"].map(dict(zip(flagged["crop"], flagged["severity"], strict=True)))
    for column in ("certainty", "certainly_failed"):
        table[column] = table["crop"].map(dict(zip(flagged["crop"], flagged[column], strict=True)))
    return table[["group", "crop", "role", "severity", "certainty", "certainly_failed", "members", "linked_to"]]


def spatial_split(candidates: pd.DataFrame, in_eval_block: pd.Series, *, settings: DiagnosisSettings,
                  grid: BlockGrid) -> pd.Series:
    """'eval' | 'buffer' | 'label' for each candidate: in an evaluation block (diagnosis/evaluation.py), closer than
    `buffer_km` to one, or free to label."""
    bx, by = candidates["block_x"].to_numpy(), candidates["block_y"].to_numpy()
    keys = block_keys(bx, by)
    in_eval = in_eval_block.reindex(candidates.index, fill_value=False).to_numpy(bool)
    chosen_keys = np.unique(keys[in_eval])
    near = np.zeros(len(candidates), dtype=bool)  # buffer_km <= block_km: only the 8 neighbours can be closer
    x, y = candidates["x"].to_numpy(float), candidates["y"].to_numpy(float)
    for ox, oy in itertools.product((-1, 0, 1), repeat=2):
        neighbour_chosen = np.isin(block_keys(bx + ox, by + oy), chosen_keys)
        near |= neighbour_chosen & (grid.km_to_block(x, y, bx + ox, by + oy) < settings.buffer_km)
    split = np.where(in_eval, "eval", np.where(near, "buffer", "label"))
    return pd.Series(split, index=candidates.index, dtype=object)


def _label_pool(candidates: pd.DataFrame) -> pd.DataFrame:
    """Candidates worth labelling (informative) in label blocks."""
    return candidates.loc[candidates["informative"] & (candidates["split"] == "label")]


def _targets(plan: pd.DataFrame, metrics_df: pd.DataFrame, settings: DiagnosisSettings) -> pd.DataFrame:
    """Each planned crop's error, area share, raw target (before clamping; for a contrast crop contrast_ratio x the
    sum of its linked crops' targets, `linked_target`) and clamped target: the parts the derivation is told from."""
    m = metrics_df.set_index("crop").reindex(plan["crop"])
    total_area = float(metrics_df["area_ha"].sum())
    area = m["area_ha"].fillna(0.0).to_numpy()
    share = area / total_area if total_area > 0 else np.zeros_like(area)
    conf_gap = ((settings.min_confidence - m["conf_mean"]) / settings.min_confidence).clip(lower=0).fillna(0)
    error = np.fmax.reduce([1 - m["agreement_score"].to_numpy(), 1 - m["f1"].to_numpy(), conf_gap.to_numpy()])
    error = np.nan_to_num(error, nan=1.0)
    raw = error * (settings.label_base + settings.label_share_scale * np.sqrt(share))
    under = (plan["role"] == "underperforming").to_numpy()
    ceil = np.ceil(raw - 1e-9)  # so that float noise (50.000000001) does not add a field
    target = np.where(under, np.clip(ceil, settings.label_min, settings.label_max), 0)
    target_of = dict(zip(plan["crop"], target, strict=True))
    linked = [[c for c in links.split(";") if c] for links in plan["linked_to"]]
    linked_target = np.array([sum(target_of[c] for c in crops) for crops in linked], dtype=float)
    raw = np.where(under, raw, settings.contrast_ratio * linked_target)
    target = np.where(under, target, np.clip(np.ceil(raw - 1e-9), settings.label_min, settings.label_max))
    return pd.DataFrame(
        {
            "area_share": share,
            "error": np.where(under, error, np.nan),
            "raw_target": raw,
            "linked_target": np.where(under, np.nan, linked_target),
            "target": target.astype("int64"),
        },
        index=plan.index,
    )


def label_plan(
    metrics_df: pd.DataFrame, groups: pd.DataFrame, candidates: pd.DataFrame, *, settings: DiagnosisSettings,
    evaluation: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per planned crop (see `plan_groups`): target, fields available, quota, held-back quota, expected effort.

    `candidates` must carry the `split` column of `spatial_split`; `evaluation` is the held-back sample
    (`evaluation_set`). The module docstring gives the derivation; its parts are columns (error, area_share,
    raw_target, linked_target, target, available, quota), which the report words per crop, with the evidence: the
    crop's agreement and its 95 % interval, and how closely the held-back fields of the crop will measure the next
    model's agreement (`eval_fields`, `eval_ci_half_width`: Wilson at today's agreement on that many fields).
    """
    plan = groups.reset_index(drop=True)
    m = metrics_df.set_index("crop").reindex(plan["crop"])
    plan["num_fields"] = m["num_fields"].to_numpy()
    plan["agreement_score"] = m["agreement_score"].to_numpy()
    plan["agreement_ci_low"] = m["agreement_ci_low"].to_numpy()
    plan["agreement_ci_high"] = m["agreement_ci_high"].to_numpy()
    plan["f1"] = m["f1"].to_numpy()
    plan["conf_mean"] = m["conf_mean"].to_numpy()
    plan = plan.join(_targets(plan, metrics_df, settings))
    pool = _label_pool(candidates)
    per_block = pool.groupby(["crop", "block_x", "block_y"]).size().clip(upper=settings.max_per_block)
    available = per_block.groupby(level="crop").sum().reindex(plan["crop"], fill_value=0).to_numpy()
    plan["clean_fields"] = candidates["crop"].value_counts().reindex(plan["crop"], fill_value=0).to_numpy()
    plan["available"] = available
    capped = np.minimum(plan["target"].to_numpy(), available)
    plan["quota"] = within_budget(capped, settings.label_budget)
    mean_area = pool.groupby("crop")["area_ha"].mean().reindex(plan["crop"]).fillna(0.0).to_numpy()
    plan["expected_ha"] = plan["quota"] * mean_area
    held = (evaluation if evaluation is not None else candidates.iloc[:0])["crop"].value_counts()
    plan["eval_fields"] = held.reindex(plan["crop"], fill_value=0).to_numpy().astype("int64")
    n_eval = plan["eval_fields"].to_numpy()
    low, high = wilson(np.rint(np.nan_to_num(plan["agreement_score"].to_numpy(float), nan=0.5) * n_eval), n_eval)
    plan["eval_ci_half_width"] = (high - low) / 2
    return plan


def _tie_keys(candidates: pd.DataFrame, seed: int) -> np.ndarray:
    """The seeded tie-break key of each candidate (made once by plan_selection, else here)."""
    return candidates["_key"].to_numpy() if "_key" in candidates else seeded_hash(candidates["field_id"], seed)


def fields_to_label(
    candidates: pd.DataFrame, plan: pd.DataFrame, *, settings: DiagnosisSettings, seed: int
) -> pd.DataFrame:
    """The ranked fields to label: each crop's quota, best score first in rounds over its label blocks.

    score = 1 if misclassified + uncertainty (0..1) + RELATED_BONUS if predicted as (or runner-up) another crop
    of its group (`related_to`: that crop, else ""). Index = the fields' index; `rank` orders the whole list
    (round, then score).
    """
    planned = plan.loc[plan["quota"] > 0]
    pool = _label_pool(candidates)
    pool = pool.loc[pool["crop"].isin(planned["crop"])].assign(_key=lambda p: _tie_keys(p, seed))
    group_of = dict(zip(plan["crop"], plan["group"], strict=True))
    role_of = dict(zip(planned["crop"], planned["role"], strict=True))
    same_group = {crop: {c for c, g in group_of.items() if g == group_of[crop] and c != crop} for crop in role_of}
    crops, predicted, runner = pool["crop"].to_numpy(), pool["predicted"].to_numpy(), pool["runner_up"].to_numpy()
    predicted_related = np.array([p in same_group[c] for c, p in zip(crops, predicted, strict=True)], dtype=bool)
    runner_related = np.array([r in same_group[c] for c, r in zip(crops, runner, strict=True)], dtype=bool)
    related_to = np.where(predicted_related, predicted, np.where(runner_related, runner, ""))
    score = (~pool["correct"]).astype(float) + pool["uncertainty"] + RELATED_BONUS * (related_to != "")
    pool = pool.assign(score=score, related_to=related_to, group=pool["crop"].map(group_of),
                       role=pool["crop"].map(role_of))
    quota = pd.Series(planned["quota"].to_numpy(), index=planned["crop"])
    chosen = pick_in_rounds(pool, quota, by=["score"], ascending=[False], max_round=settings.max_per_block)
    if not len(chosen):
        return pd.DataFrame(columns=list(PICK_COLUMNS))
    picks = chosen.sort_values(["pick_round", "score", "_key"], ascending=[True, False, True])
    picks["rank"] = np.arange(1, len(picks) + 1)
    picks["block"] = block_labels(picks["block_x"], picks["block_y"])
    return picks[list(PICK_COLUMNS)]


def evaluation_set(sample: pd.DataFrame, plan: pd.DataFrame, design: EvaluationDesign) -> pd.DataFrame:
    """The held-back fields (`draw_evaluation`'s sample) as evaluation_fields.csv lists them: the fields' numbers,
    the plan group of their crop (empty when it is not planned), their block (the primary unit), map-class stratum,
    inclusion probability and the share of the frame's blocks drawn (`block_fraction`, for the finite-population
    correction), sorted by block then field id."""
    if not len(sample):
        return pd.DataFrame(columns=list(EVAL_COLUMNS))
    group_of = dict(zip(plan["crop"], plan["group"], strict=True))
    groups = sample["crop"].map(group_of).astype(object)
    held = sample.assign(group=groups.where(groups.notna(), ""),
                         block=block_labels(sample["block_x"], sample["block_y"]),
                         block_fraction=design.block_fraction)
    return held.sort_values(["block", "field_id"])[list(EVAL_COLUMNS)]


def plan_selection(
    fields: pd.DataFrame,
    metrics_df: pd.DataFrame,
    flagged: pd.DataFrame,
    confusion_df: pd.DataFrame,
    *,
    settings: DiagnosisSettings,
    seed: int,
    catalogue: Catalogue = U0C,
    held_out: pd.Index | None = None,
) -> Selection:
    """The whole plan for one AOI: the held-back evaluation sample first (it depends on the clean fields and the
    seed only, never on the plan), then groups, the split, quotas and the fields to label.

    `held_out`: fields (index labels) the plan must not use until someone has looked at them, the suspect labels
    (diagnosis/suspects.py): they are no candidates, so they are neither picked to label nor in the evaluation
    sample's frame."""
    grid = BlockGrid.for_points(fields["x"].to_numpy(float), fields["y"].to_numpy(float), block_km=settings.block_km)
    candidates = candidate_fields(fields, settings=settings, grid=grid, catalogue=catalogue)
    if held_out is not None and len(held_out):
        candidates = candidates.loc[~candidates.index.isin(held_out)]
    candidates["_key"] = seeded_hash(candidates["field_id"], seed)
    in_eval_block, sample, design = draw_evaluation(candidates, settings=settings, seed=seed)
    candidates["split"] = spatial_split(candidates, in_eval_block, settings=settings, grid=grid)
    groups = plan_groups(flagged, confusion_df, settings=settings)
    plan = label_plan(metrics_df, groups, candidates, settings=settings, evaluation=sample)
    picks = fields_to_label(candidates, plan, settings=settings, seed=seed)
    held = evaluation_set(sample, plan, design)
    return Selection(grid=grid, candidates=candidates, plan=plan, picks=picks, evaluation=held, design=design)
