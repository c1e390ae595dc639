"""The report's words for active learning beyond the plan of the ground truth: what the uncertainty ranking finds
(runs with GT), the suspect labels, the plan of the fields without a usable label, and the report of a run without
any ground truth, which says what such a run can and cannot tell. Also what run.json says of each, and the tables
of their files. Every sentence is built from the diagnosis's numbers (diagnosis/ranking.py, suspects.py,
unlabelled.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cropmon.diagnosis.diagnose import Diagnosis
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.io.outputs import write_parquet
from cropmon.report.accuracy import accuracy_manifest
from cropmon.report.document import Block, Bullets, Heading, Paragraph, Table, names, num, pct, strong
from cropmon.report.run_facts import RunFacts

QUOTAS_FILE = "unlabelled_quotas.csv"
SUSPECTS_FILE = "suspect_labels.csv"
UNCERTAINTY_FILE = "field_uncertainty.parquet"
RANKING_ASSUMPTION = (
    "The interval of the top-k share takes those k fields as a binomial sample of what the ranking picks from"
    " fields like these; the random range is the central 95 % of a random draw of k (hypergeometric). Both take the"
    " GT labels as right: a wrong label counts as a model error. How well the ranking does rests on the model's"
    " confidence being lower on its wrong fields than on its right ones, and on wrong fields having mixed pixels;"
    " in a region the model has never seen, its confidence is the signal least to be trusted"
    " (docs/active-learning.md)."
)
NO_ACCURACY = (
    "It cannot tell how accurate the map is: agreement, F1, confusions, user's and producer's accuracy and"
    " error-adjusted areas all need fields with a known crop (and map accuracy a probability sample of them,"
    " Olofsson et al. 2014). None is estimated here; the mapped areas are the map's own pixel counts, biased by its"
    " errors by an unknown amount."
)


def unlabelled_picks_file(d: Diagnosis) -> str:
    """The name of the unlabelled plan's field list (no suffix): `fields_to_label` in a run without any ground truth
    (it is the run's only plan), `unlabelled_to_label` beside the GT plan's fields_to_label otherwise."""
    return "unlabelled_to_label" if d.has_labels else "fields_to_label"


def why_no_labels(run_info: Mapping[str, Any]) -> str:
    """Why a run has no ground truth, from run_info (the settings and the fields as read)."""
    facts = RunFacts.of(run_info)
    if facts.no_labels:
        return "--no-labels: the labels were not read"
    if facts.label_column_absent:
        wanted = facts.label_column or "normalized_label"
        return f"the fields file has no label column {wanted!r}"
    return "no field carries a label"


def pool_size(d: Diagnosis) -> int:
    """The clean fields without a label the unlabelled plan picked from (kept when the pool itself is dropped)."""
    return int(d.caveats.get("unlabelled_pool", 0))


# -- run.json ---------------------------------------------------------------------------------------------------


def ground_truth_manifest(d: Diagnosis) -> dict[str, Any]:
    """run.json `ground_truth`: how many fields carry a usable label, and what the run could estimate."""
    n = int(d.caveats["n_fields"])
    labelled = n - int(d.caveats["unknown_label"]) - int(d.caveats["null_label"])
    kind = "none" if not d.has_labels else ("all" if labelled == n else "some")
    return {"fields": kind, "n_labelled": labelled, "n_without_label": n - labelled,
            "accuracy": "estimated" if d.has_labels else "not estimable without labelled fields"}


def ranking_manifest(d: Diagnosis) -> dict[str, Any]:
    """run.json `ranking`: the headline's numbers with the assumption (empty without ground truth)."""
    if d.ranking is None:
        return {}
    numbers = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in dataclasses.asdict(d.ranking).items()}
    return {**numbers, "assumption": RANKING_ASSUMPTION}


def suspects_manifest(d: Diagnosis) -> dict[str, Any]:
    """run.json `suspect_labels`: how many, per GT crop, the floors, and whether the plan kept them out."""
    if not d.has_labels:
        return {}
    s = d.settings
    by_crop = d.suspects["gt_label"].astype(str).value_counts()
    return {"n": len(d.suspects), "by_crop": {str(k): int(v) for k, v in by_crop.items()},
            "min_confidence": s.suspect_min_confidence, "min_purity": s.suspect_min_purity,
            "kept_out_of_plan": s.exclude_suspects, "file": SUSPECTS_FILE}


def unlabelled_manifest(d: Diagnosis) -> dict[str, Any]:
    """run.json `unlabelled_plan`: the pool, the picks and each predicted class's status (empty without a pool)."""
    u = d.unlabelled
    if u is None:
        return {}
    statuses = u.quotas["status"].value_counts()
    return {"n_without_label": int(d.caveats["unknown_label"] + d.caveats["null_label"]),
            "n_pool": pool_size(d), "n_picked": len(u.picks),
            "budget": d.settings.label_budget, "classes": {str(k): int(v) for k, v in statuses.items()},
            "files": [f"{unlabelled_picks_file(d)}.csv", f"{unlabelled_picks_file(d)}.gpkg", QUOTAS_FILE]}



def accuracy_assessment_manifest(d: Diagnosis) -> dict[str, Any]:
    """run.json `accuracy_assessment`: the map's accuracy and areas (report/accuracy.py), or why there is none."""
    if not d.has_labels:
        return {"estimated": False, "why": NO_ACCURACY}
    return accuracy_manifest(d.accuracy)


def evaluation_design_manifest(d: Diagnosis) -> dict[str, Any]:
    """run.json `evaluation_design`: how the held-back probability sample was drawn (diagnosis/evaluation.py)."""
    return d.selection.design.as_manifest() if d.selection.design is not None else {}

# -- tables -----------------------------------------------------------------------------------------------------


def suspects_by_crop(suspects: pd.DataFrame) -> pd.DataFrame:
    """Per GT crop of the suspects: how many, and the crop the model most often sees instead."""
    if not len(suspects):
        return pd.DataFrame(columns=["gt_label", "suspects", "predicted_as"])
    counts = suspects.groupby(["gt_label", "predicted"]).size().rename("n").reset_index()
    top = counts.sort_values(["gt_label", "n", "predicted"], ascending=[True, False, True]).drop_duplicates("gt_label")
    table = suspects["gt_label"].value_counts().rename("suspects").rename_axis("gt_label").reset_index()
    table = table.merge(top[["gt_label", "predicted"]].rename(columns={"predicted": "predicted_as"}), on="gt_label")
    return table.sort_values(["suspects", "gt_label"], ascending=[False, True]).reset_index(drop=True)


def field_uncertainty_table(d: Diagnosis, table: pd.DataFrame) -> pd.DataFrame:
    """field_uncertainty.parquet: one row per field (the per-field table's order): its id, predicted class and
    scores (diagnosis/uncertainty.UNCERTAINTY_COLUMNS; NaN for a field without a pixel)."""
    if d.uncertainty is None:
        raise ValueError("the diagnosis has no per-field uncertainty (a slim diagnosis: Diagnosis.without_candidates)")
    predicted = table["majority_crop_label"].astype(str)
    return pd.concat([pd.DataFrame({"field_id": table["field_id"], "predicted": predicted.where(predicted != "")},
                                   index=table.index), d.uncertainty.loc[table.index]], axis=1)


def write_field_uncertainty(d: Diagnosis, table: pd.DataFrame, out_dir: Path) -> list[str]:
    write_parquet(field_uncertainty_table(d, table), Path(out_dir) / UNCERTAINTY_FILE)
    return [UNCERTAINTY_FILE]


# -- report blocks ----------------------------------------------------------------------------------------------


def ranking_sentence(d: Diagnosis) -> str:
    """'The 500 most uncertain fields hold x % errors [lo, hi], against y % at random (a random 500: a-b).'"""
    r = d.ranking
    if r is None or not r.k:
        return ""
    return (
        f"The {r.k:,} most uncertain fields (by the acquisition score, which never sees the GT) hold"
        f" {strong(pct(r.share))} errors [{pct(r.share_low)}, {pct(r.share_high)}], against {pct(r.random_share)}"
        f" at random (a random {r.k:,}: {pct(r.random_low)} to {pct(r.random_high)})."
    )


def ranking_blocks(d: Diagnosis) -> list[Block]:
    r = d.ranking
    if r is None:
        return []
    if not r.k:
        return [Paragraph("No scored field to rank: nothing to say of what the uncertainty ranking finds.")]
    text = (
        f"{ranking_sentence(d)} {r.errors_in_top_k:,} of the {r.k:,} are misclassified; over all {r.n_fields:,}"
        f" scored fields, {r.n_errors:,}. The acquisition score is the mean of band-4 least confidence and the"
        " pixel vote's margin uncertainty, the same score that ranks fields where there is no label"
        f" ({UNCERTAINTY_FILE} has every field's scores)."
    )
    return [Paragraph(text), Paragraph(RANKING_ASSUMPTION)]


def suspect_blocks(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    if not d.has_labels:
        return []
    n = len(d.suspects)
    rule = (f"a GT label that disagrees with a prediction of mean confidence >= {s.suspect_min_confidence:g} and"
            f" purity >= {s.suspect_min_purity:g} over at least {s.min_pixels} pixel centres")
    if not n:
        return [Paragraph(f"No suspect label ({rule}).")]
    table = suspects_by_crop(d.suspects)
    kept = ("They are neither among the fields to label nor held back for evaluation until someone has looked at"
            " them (exclude_suspects = false lets the plan use them)." if s.exclude_suspects else
            "The plan uses them like any other field (exclude_suspects = false).")
    text = (
        f"{strong(f'{n:,} suspect labels')} ({rule}; {SUSPECTS_FILE}, most confident first, with how many of the"
        f" {s.suspect_neighbours} nearest labelled fields within {s.suspect_neighbour_km:g} km carry the predicted"
        f" crop): {pct(n / max(int(d.caveats['n_scored']), 1))} of the scored fields. Where the model is this sure it"
        " nearly always agrees with the GT, so such a field is worth a look at its label before anyone trains on it;"
        f" some are the model's own confident errors. {kept}"
    )
    return [Paragraph(text), Table(table.head(12), f"suspect labels per GT crop ({SUSPECTS_FILE})")]


def unlabelled_blocks(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    """The plan of the fields without a usable label: how many per predicted class and why, the first picks."""
    u = d.unlabelled
    if u is None:
        return []
    file = unlabelled_picks_file(d)
    q, picks = u.quotas, u.picks
    if not len(picks):
        why = "no field without a label is clean enough to pick" if not pool_size(d) else "the budget is 0"
        return [Paragraph(f"No field to label: {why} (at least {s.min_pixels} pixel centres, never an all-touched"
                          " fallback, a usable geometry and a unique field_id).")]
    budget = f"the budget of {s.label_budget:,} fields" if s.label_budget is not None else "no budget"
    text = (
        f"Label {len(picks):,} of the {pool_size(d):,} clean fields without a label ({picks['area_ha'].sum():,.0f} ha),"
        f" over {int((q['quota'] > 0).sum())} predicted classes ({file}.csv / .gpkg, in order)."
    )
    bullets = [
        f"How many per predicted class: {budget} shared by weight = (the class's share of the mapped area) ^"
        f" {s.unlabelled_area_power:g} (1: in proportion to the area, 0: equal; {s.unlabelled_area_power:g} lets rare"
        " crops have their share), every class with area one first, each capped by the fields it has to give (at"
        f" most {s.max_per_block} per {s.block_km:g} km block), what a capped class cannot use shared by the others"
        f" ({QUOTAS_FILE}).",
        "Which: the most uncertain first by the acquisition score (the mean of band-4 least confidence and the pixel"
        f" vote's margin uncertainty), in rounds over the {s.block_km:g} km blocks so that neighbours do not crowd"
        " the list.",
    ]
    for status, words in (("no_field", "have mapped area but no field to pick"),
                          ("all_picked", "gave every field they had"),
                          ("no_area", "are predicted for fields but have no mapped area (no quota)")):
        crops = list(q.loc[q["status"] == status, "crop"])
        if crops:
            more = f" and {len(crops) - 8} more" if len(crops) > 8 else ""
            listed = ", ".join(crops[:8]) + more if more else names(crops)
            bullets.append(f"{len(crops)} class{'es' if len(crops) > 1 else ''} {words}: {listed}.")
    shown = q.loc[q["quota"] > 0, ["crop", "area_share", "weight", "wanted", "available", "quota", "status"]]
    top = picks.head(15)[["rank", "field_id", "predicted", "acquisition_score", "confidence_score", "purity",
                          "block"]]
    return [Paragraph(text), Bullets(bullets), Table(shown, f"fields to label per predicted class ({QUOTAS_FILE})"),
            Table(top, f"first {len(top)} of {len(picks):,} fields in {file}.csv / .gpkg")]


def active_section(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    """A run with ground truth: what the ranking finds, the suspect labels, and the plan of its unlabelled fields."""
    blocks: list[Block] = [Heading("Uncertainty ranking and suspect labels"), *ranking_blocks(d),
                           *suspect_blocks(d, s)]
    if d.unlabelled is not None:
        n = int(d.caveats["unknown_label"] + d.caveats["null_label"])
        blocks += [Heading("Fields without a label"),
                   Paragraph(f"{n:,} fields carry no usable label (no label, or one that is no class): they are"
                             " ranked by the model's uncertainty alone, as in a region without ground truth."),
                   *unlabelled_blocks(d, s)]
    return blocks


def headline_without_labels(d: Diagnosis, s: DiagnosisSettings, run_info: Mapping[str, Any]) -> list[Block]:
    """The headline of a run without ground truth: what it can tell and what it cannot."""
    c = d.caveats
    u = d.unlabelled
    ranked = int(d.uncertainty_by_class["fields"].sum()) if len(d.uncertainty_by_class) else 0
    picked = len(u.picks) if u is not None else 0
    text = (
        f"{c['n_fields']:,} fields, none with a usable label ({why_no_labels(run_info)}): a run without ground"
        f" truth. {ranked:,} fields with pixels are scored by the model's uncertainty (band-4 confidence and the"
        f" vote of their pixels) and {picked:,} are picked to label first, spread over the predicted classes and"
        " the AOI. The run tells the map's area per predicted class, each field's uncertainty and which fields to"
        " label; " + NO_ACCURACY[0].lower() + NO_ACCURACY[1:]
    )
    numbers = pd.DataFrame({
        "measure": ["fields", "fields with pixels (scored by uncertainty)", "clean fields to pick from",
                    "fields to label", "predicted classes"],
        "value": [f"{c['n_fields']:,}", f"{ranked:,}", f"{pool_size(d):,}", f"{picked:,}",
                  str(len(d.uncertainty_by_class))],
    })
    return [Heading("Headline"), Paragraph(text), Table(numbers)]


def predicted_blocks(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    """The map's area per predicted class beside its fields' uncertainty (no ground truth needed)."""
    blocks: list[Block] = [Heading("What the map predicts, and how sure it is")]
    classes = d.uncertainty_by_class
    if d.mapped_area is not None:
        area = d.mapped_area.loc[d.mapped_area["pixels"] > 0, ["crop", "area_ha", "share"]]
        table = area.merge(classes, on="crop", how="outer").fillna({"fields": 0})
        caption = "mapped area (mapped_area.csv: the map's pixel count) and the fields predicted as each class"
    else:
        table, caption = classes, "the fields predicted as each class"
    table = table.sort_values(table.columns[1], ascending=False, na_position="last")
    table = table.astype({"fields": "int64"})
    solid = classes.loc[classes["fields"] >= s.min_fields]
    if len(solid):
        least = solid.sort_values("mean_acquisition_score", ascending=False).iloc[0]
        most = solid.sort_values("mean_acquisition_score").iloc[0]
        blocks.append(Paragraph(
            f"Of the classes predicted for at least {s.min_fields} fields, the model is least sure of"
            f" {least['crop']} (mean acquisition score {num(least['mean_acquisition_score'])}, mean confidence"
            f" {num(least['mean_confidence'], 0)} over {int(least['fields']):,} fields) and surest of {most['crop']}"
            f" ({num(most['mean_acquisition_score'])}, confidence {num(most['mean_confidence'], 0)} over"
            f" {int(most['fields']):,}). Scores lie in [0, 1], higher is less sure; {UNCERTAINTY_FILE} has every"
            " field's scores (least confidence from band 4; least confidence, margin and entropy of the pixel vote;"
            " purity; the acquisition score)."))
    blocks.append(Table(table, caption))
    return blocks


def cannot_tell_blocks(d: Diagnosis) -> list[Block]:
    return [Heading("What this run cannot tell"), Bullets([
        NO_ACCURACY,
        "Whether the model's confidence means the same here as where it was trained: in a region it has never seen,"
        " a confident field may still be wrong (a systematic confusion, such as Spring Barley taken for Winter"
        " Barley, gives pure, confident wrong fields no uncertainty score can see).",
        "The fields to label are chosen to teach the model, not to measure it: they are no probability sample, so"
        " accuracy estimated from them once labelled would be biased. With labels, a run draws a held-back"
        " probability sample (evaluation_fields.csv) before its plan, and `cropmon compare` estimates from it.",
    ])]


def plan_without_labels(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    return [Heading("Fields to label"), *unlabelled_blocks(d, s)]
