"""The pooled view of a multi-AOI run: metrics by crop over all AOIs and by crop x AOI, and one labelling plan.

`summarise_diagnosis` keeps what the pooled view needs of one AOI, and nothing that grows with its fields: additive
per-crop sums, the 32 x 32 field and pixel confusion matrices, the AOI's own label plan (select.py) and a bounded
list of ranked label candidates (at most min(target, available) per planned crop, so at most 32 x label_max rows).
report/pooled.py turns the summaries into tables, a heatmap and a short report.

Pooled metrics are exact, not averages of averages: counts and sums (`metrics.crop_sums`) are added over the AOIs,
then `metrics.crop_table` derives the per-crop table, the same route as one AOI's `metrics.crop_metrics` (tested
equal to crop_metrics on the concatenated fields).

Label allocation (`allocate_labels`), one labelling campaign over all AOIs:
1. what each AOI needs, by select.py's single-AOI quota logic on that AOI's own numbers: an underperforming crop's
   target is error x (label_base + label_share_scale x sqrt(its area share in the AOI)), clamped to
   [label_min, label_max]; a fine crop linked to it by confusion gets contrast_ratio x the linked targets; a crop
   that passes the rule in an AOI (and is no contrast crop there) gets 0 there: the AOI where it is fine gets none;
2. capped by the clean, informative candidates of the AOI outside its held-back blocks and buffers (`available`);
3. all (crop, AOI) wants together scaled down to one `label_budget` (largest remainder) when they exceed it.
The fields are each AOI's best-ranked candidates of the crop, in select.py's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis import accuracy, metrics, select
from cropmon.diagnosis.diagnose import Diagnosis
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.quotas import within_budget

BY_AOI_COLUMNS: tuple[str, ...] = (
    "crop", "aoi", "num_fields", "agreement_score", "agreement_ci_low", "agreement_ci_high", "weighted_f1_score",
    "f1", "precision", "recall", "n_predicted", "n_correct", "conf_mean", "area_ha", "pooled_agreement",
    "agreement_vs_pooled", "pooled_f1", "f1_vs_pooled",
    "severity", "certainty", "reasons",
)  # fmt: skip
ALLOCATION_COLUMNS: tuple[str, ...] = (
    "crop", "aoi", "role", "severity", "num_fields", "agreement_score", "f1", "conf_mean", "target", "available",
    "wanted", "quota", "crop_quota", "share_of_crop", "eval_fields",
    "area_share", "error", "raw_target", "linked_target", "linked_to",  # the parts of each AOI's own target
)  # fmt: skip
LABEL_COLUMNS: tuple[str, ...] = (
    "field_id", "aoi", "crop", "score", "related_to", "correct", "rank_in_aoi", "group", "role", "predicted",
    "confidence_score", "vote_margin", "n_pixels", "area_ha", "block", "x", "y",
)  # fmt: skip

@dataclass(frozen=True)
class AOISummary:
    """What the pooled view keeps of one AOI (no per-field table, no geometry).

    `sums` holds per GT crop (one row per class, catalogue order) the additive statistics behind the per-crop means;
    `candidates` the ranked label candidates (select.PICK_COLUMNS), at most min(target, available) per planned crop.
    """

    crop_table: pd.DataFrame  # metrics.crop_metrics of the AOI
    sums: pd.DataFrame
    confusion: pd.DataFrame  # n x n field counts, GT rows x predicted columns (catalogue order)
    pixel_confusion: pd.DataFrame  # n x n pixel counts
    overall: dict[str, float]
    underperforming: pd.DataFrame  # diagnose.underperforming_crops of the AOI
    plan: pd.DataFrame  # select.label_plan of the AOI
    candidates: pd.DataFrame
    n_fields: int
    settings: DiagnosisSettings
    seed: int
    catalogue: Catalogue = U0C  # the model's classes (the same for every AOI of a run)
    accuracy: accuracy.AccuracyAssessment | None = None  # the AOI's map accuracy and areas (~30 kB: no field in it)
    has_labels: bool = True  # False: an AOI without ground truth (its fields are ranked in its own outputs only)


def summarise_diagnosis(d: Diagnosis, *, settings: DiagnosisSettings, seed: int) -> AOISummary:
    """The compact summary of one AOI from its diagnosis (made with `settings` and `seed`): the run's tail makes
    it from the diagnosis it already has, without the per-field table."""
    sel = d.selection
    unbudgeted = sel.plan.assign(quota=np.minimum(sel.plan["target"], sel.plan["available"]))
    candidates = select.fields_to_label(sel.candidates, unbudgeted, settings=settings, seed=seed)
    return AOISummary(
        crop_table=d.metrics,
        sums=d.sums,
        confusion=d.confusion,
        pixel_confusion=d.pixel_confusion,
        overall=d.overall,
        underperforming=d.underperforming,
        plan=sel.plan.drop(columns=["members"]),
        candidates=candidates.reset_index(drop=True),
        n_fields=int(d.caveats["n_fields"]),
        settings=settings,
        seed=seed,
        catalogue=d.catalogue,
        accuracy=d.accuracy,
        has_labels=d.has_labels,
    )


def with_labels(summaries: Mapping[str, AOISummary]) -> dict[str, AOISummary]:
    """The AOIs that have ground truth: the only ones the pooled metrics, accuracy and label allocation add up (an
    AOI without any label has nothing to add; its own outputs rank its fields)."""
    return {name: s for name, s in summaries.items() if s.has_labels}


def pooled_accuracy(summaries: Mapping[str, AOISummary]) -> tuple[accuracy.AccuracyAssessment | None, pd.DataFrame]:
    """The accuracy assessment of all AOIs together (their totals and variances added: accuracy.pooled) and the
    per-AOI tables stacked with an `aoi` column; (None, empty) when no AOI has one."""
    parts = {name: s.accuracy for name, s in summaries.items() if s.accuracy is not None}
    if not parts:
        return None, pd.DataFrame()
    catalogue = next(iter(summaries.values())).catalogue
    by_aoi = pd.concat([a.table.assign(aoi=name) for name, a in parts.items()], ignore_index=True)
    by_aoi = by_aoi[["aoi", *[c for c in by_aoi.columns if c != "aoi"]]]
    return accuracy.pooled(list(parts.values()), catalogue), by_aoi


def pooled_confusions(summaries: Mapping[str, AOISummary]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Field confusion, pixel confusion and per-crop sums, added over the AOIs."""
    parts = list(summaries.values())
    confusion = sum((s.confusion for s in parts[1:]), parts[0].confusion)
    pixel = sum((s.pixel_confusion for s in parts[1:]), parts[0].pixel_confusion)
    sums = sum((s.sums for s in parts[1:]), parts[0].sums)
    return confusion, pixel, sums


def pooled_metrics(summaries: Mapping[str, AOISummary]) -> pd.DataFrame:
    """Per-crop metrics over all AOIs together (as if their fields were one table)."""
    return metrics.crop_table(*pooled_confusions(summaries))


def metrics_by_aoi(summaries: Mapping[str, AOISummary], pooled: pd.DataFrame) -> pd.DataFrame:
    """One row per (crop, AOI) where the crop is in the GT or predicted: the AOI's numbers beside the pooled ones.

    Crops in the pooled order, AOIs in the run's order; `severity` / `reasons` say whether the crop fails the rule
    in that AOI (empty when it passes).
    """
    rows = []
    for name, s in summaries.items():
        worst = s.underperforming[["crop", "severity", "certainty", "reasons"]]
        table = s.crop_table.merge(worst, on="crop", how="left")
        rows.append(table.assign(aoi=name))
    by_aoi = pd.concat(rows, ignore_index=True)
    ref = pooled.set_index("crop")
    by_aoi["pooled_agreement"] = by_aoi["crop"].map(ref["agreement_score"])
    by_aoi["pooled_f1"] = by_aoi["crop"].map(ref["f1"])
    by_aoi["agreement_vs_pooled"] = by_aoi["agreement_score"] - by_aoi["pooled_agreement"]
    by_aoi["f1_vs_pooled"] = by_aoi["f1"] - by_aoi["pooled_f1"]
    crop_order = {crop: i for i, crop in enumerate(pooled["crop"])}
    aoi_order = {name: i for i, name in enumerate(summaries)}
    by_aoi = by_aoi.assign(_c=by_aoi["crop"].map(crop_order), _a=by_aoi["aoi"].map(aoi_order))
    return by_aoi.sort_values(["_c", "_a"])[list(BY_AOI_COLUMNS)].reset_index(drop=True)


def aoi_overview(summaries: Mapping[str, AOISummary], allocation: pd.DataFrame) -> pd.DataFrame:
    """One row per AOI: fields, scored, agreement (fields, area, pixels), F1, underperforming crops, and labels:
    what the AOI's numbers ask for (`label_targets`), what its candidates allow (`labels_wanted`), what it gets."""
    by_aoi = allocation.groupby("aoi")[["target", "wanted", "quota"]].sum()
    rows = []
    for name, s in summaries.items():
        o = s.overall
        labels = by_aoi.loc[name] if name in by_aoi.index else pd.Series({"target": 0, "wanted": 0, "quota": 0})
        rows.append(
            {
                "aoi": name,
                "n_fields": s.n_fields,
                "fields_scored": int(o["fields_evaluated"]),
                "agreement": o["agreement"],
                "area_agreement": o["area_agreement"],
                "pixel_agreement": o["pixel_agreement"],
                "macro_f1": o["macro_f1"],
                "weighted_f1": o["weighted_f1"],
                "underperforming_crops": len(s.underperforming),
                "label_targets": int(labels["target"]),
                "labels_wanted": int(labels["wanted"]),
                "labels_allocated": int(labels["quota"]),
            }
        )
    return pd.DataFrame(rows)




def allocation_rows(summaries: Mapping[str, AOISummary]) -> pd.DataFrame:
    """One row per (crop, AOI) for every crop planned in at least one AOI, with each AOI's own target and supply.

    A crop planned somewhere also gets a row (role `fine`, target 0) in each AOI where it has GT fields but passes
    the rule, so the table shows where a crop is not labelled and why.
    """
    planned = {crop for s in summaries.values() for crop in s.plan["crop"]}
    names = next(iter(summaries.values())).catalogue.names if summaries else ()
    order = {crop: i for i, crop in enumerate(names)}
    rows = []
    for name, s in summaries.items():
        plan = s.plan.set_index("crop")
        m = s.crop_table.set_index("crop")
        for crop in sorted(planned, key=lambda c: (order.get(c, len(order)), c)):
            if crop in plan.index:
                p = plan.loc[crop]
                rows.append(
                    {"crop": crop, "aoi": name, "role": p["role"], "severity": p["severity"],
                     "num_fields": int(p["num_fields"]), "agreement_score": p["agreement_score"], "f1": p["f1"],
                     "conf_mean": p["conf_mean"], "target": int(p["target"]), "available": int(p["available"]),
                     "eval_fields": int(p["eval_fields"]), "area_share": p["area_share"], "error": p["error"],
                     "raw_target": p["raw_target"], "linked_target": p["linked_target"], "linked_to": p["linked_to"]}
                )  # fmt: skip
            elif crop in m.index and m.at[crop, "num_fields"] > 0:
                r = m.loc[crop]
                rows.append(
                    {"crop": crop, "aoi": name, "role": "fine", "severity": None,
                     "num_fields": int(r["num_fields"]), "agreement_score": r["agreement_score"], "f1": r["f1"],
                     "conf_mean": r["conf_mean"], "target": 0, "available": 0, "eval_fields": 0, "linked_to": ""}
                )  # fmt: skip
    columns = [c for c in ALLOCATION_COLUMNS if c not in ("wanted", "quota", "crop_quota", "share_of_crop")]
    return pd.DataFrame(rows, columns=columns)


def allocate_labels(rows: pd.DataFrame, *, budget: int | None) -> pd.DataFrame:
    """Quotas of the (crop, AOI) rows of `allocation_rows`: min(target, available), all scaled to one budget.

    Adds `wanted`, `quota`, the crop's total quota over the AOIs and this AOI's share of it.
    """
    out = rows.reset_index(drop=True).copy()
    out["wanted"] = np.minimum(out["target"], out["available"]).astype("int64")
    out["quota"] = within_budget(out["wanted"].to_numpy(), budget)
    out["crop_quota"] = out.groupby("crop")["quota"].transform("sum").astype("int64")
    out["share_of_crop"] = metrics.ratio(out["quota"].to_numpy(float), out["crop_quota"].to_numpy(float))
    return out[list(ALLOCATION_COLUMNS)]


def labels_by_aoi(summaries: Mapping[str, AOISummary], allocation: pd.DataFrame) -> pd.DataFrame:
    """The fields to label: in each AOI, each crop's `quota` best-ranked candidates (select.py's order)."""
    chosen = []
    for name, s in summaries.items():
        quotas = allocation.loc[(allocation["aoi"] == name) & (allocation["quota"] > 0)]
        if not len(quotas) or not len(s.candidates):
            continue
        quota = dict(zip(quotas["crop"], quotas["quota"], strict=True))
        ranked = s.candidates.sort_values("rank")
        take = ranked.groupby("crop").cumcount() < ranked["crop"].map(quota).fillna(0)
        picked = ranked.loc[take].assign(aoi=name)
        picked["rank_in_aoi"] = np.arange(1, len(picked) + 1)
        chosen.append(picked)
    if not chosen:
        return pd.DataFrame(columns=list(LABEL_COLUMNS))
    return pd.concat(chosen, ignore_index=True)[list(LABEL_COLUMNS)]

