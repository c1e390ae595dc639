"""The pooled view of a multi-AOI run: metrics by crop over all AOIs and by crop x AOI, and one labelling plan.

`summarise_aoi` keeps what the pooled view needs of one AOI, and nothing that grows with its fields: additive
per-crop sums, the 32 x 32 field and pixel confusion matrices, the AOI's own label plan (select.py) and a bounded
list of ranked label candidates (at most min(target, available) per planned crop, so at most 32 x label_max rows).
`write_pooled` turns the summaries into tables, a heatmap and a short report.

Pooled metrics are exact, not averages of averages: counts and sums are added over the AOIs, then the per-crop
table is derived as `metrics.crop_metrics` derives it (tested equal to crop_metrics on the concatenated fields).

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

import dataclasses
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cropmon import metrics, select
from cropmon.diagnose import DiagnosisSettings, underperforming_crops
from cropmon.labels import CROP_NAMES
from cropmon.report import Bullets, Heading, Image, Paragraph, Table, render_html, render_markdown

log = logging.getLogger(__name__)

SUM_COLUMNS: tuple[str, ...] = (
    "conf_sum", "conf_n", "conf_right_sum", "conf_right_n", "conf_wrong_sum", "conf_wrong_n", "purity_sum",
    "purity_n", "area_m2", "area_right_m2",
)  # fmt: skip
BY_AOI_COLUMNS: tuple[str, ...] = (
    "crop", "aoi", "num_fields", "agreement_score", "weighted_f1_score", "f1", "precision", "recall", "n_predicted",
    "n_correct", "conf_mean", "area_ha", "pooled_agreement", "agreement_vs_pooled", "pooled_f1", "f1_vs_pooled",
    "severity", "reasons",
)  # fmt: skip
ALLOCATION_COLUMNS: tuple[str, ...] = (
    "crop", "aoi", "role", "severity", "num_fields", "agreement_score", "f1", "conf_mean", "target", "available",
    "wanted", "quota", "crop_quota", "share_of_crop", "eval_fields", "derivation",
)  # fmt: skip
LABEL_COLUMNS: tuple[str, ...] = (
    "field_id", "aoi", "crop", "score", "reason", "rank_in_aoi", "group", "role", "predicted", "confidence_score",
    "vote_margin", "n_pixels", "area_ha", "block", "x", "y",
)  # fmt: skip
MAX_SENTENCES = 8


@dataclass(frozen=True)
class AOISummary:
    """What the pooled view keeps of one AOI (no per-field table, no geometry).

    `sums` holds per GT crop (32 rows, catalogue order) the additive statistics behind the per-crop means;
    `candidates` the ranked label candidates (select.PICK_COLUMNS), at most min(target, available) per planned crop.
    """

    crop_table: pd.DataFrame  # metrics.crop_metrics of the AOI
    sums: pd.DataFrame
    confusion: pd.DataFrame  # 32 x 32 field counts, GT rows x predicted columns
    pixel_confusion: pd.DataFrame  # 32 x 32 pixel counts
    overall: dict[str, float]
    flagged: pd.DataFrame  # diagnose.underperforming_crops of the AOI
    plan: pd.DataFrame  # select.label_plan of the AOI
    candidates: pd.DataFrame
    n_fields: int
    settings: DiagnosisSettings
    seed: int


def crop_sums(fields: pd.DataFrame) -> pd.DataFrame:
    """Per GT crop (32 rows): sums and counts of confidence (all, right, wrong) and purity, area and area right."""
    truth, pred = metrics.truth_and_prediction(fields)
    ev = fields.loc[truth.index]
    right = (truth == pred).to_numpy()
    conf = ev["confidence_score"].astype(float).to_numpy()
    purity = ev["purity"].astype(float).to_numpy()
    area = ev["area_m2"].astype(float).to_numpy()
    frame = pd.DataFrame(
        {
            "crop": truth.to_numpy(),
            "conf_sum": np.nan_to_num(conf),
            "conf_n": np.isfinite(conf),
            "conf_right_sum": np.where(right, np.nan_to_num(conf), 0.0),
            "conf_right_n": np.isfinite(conf) & right,
            "conf_wrong_sum": np.where(~right, np.nan_to_num(conf), 0.0),
            "conf_wrong_n": np.isfinite(conf) & ~right,
            "purity_sum": np.nan_to_num(purity),
            "purity_n": np.isfinite(purity),
            "area_m2": np.nan_to_num(area),
            "area_right_m2": np.where(right, np.nan_to_num(area), 0.0),
        }
    )
    sums = frame.groupby("crop").sum().reindex(list(CROP_NAMES), fill_value=0)
    sums.index.name = "crop"
    return sums[list(SUM_COLUMNS)].astype(float)


def summarise_aoi(
    fields: pd.DataFrame,
    class_counts: pd.DataFrame,
    *,
    settings: DiagnosisSettings | None = None,
    seed: int = 0,
) -> AOISummary:
    """The compact summary of one AOI's per-field table (see `AOISummary`).

    The plan is select.py's, with the same settings and seed as the AOI's own outputs, so its held-back evaluation
    blocks are respected: no candidate lies in them or in their buffers.
    """
    settings = settings or DiagnosisSettings()
    confusion = metrics.confusion_matrix(fields)
    pixel_confusion = metrics.pixel_confusion_matrix(fields, class_counts)
    crop_table = metrics.crop_metrics(fields, class_counts, confusion=confusion, pixel_confusion=pixel_confusion)
    flagged = underperforming_crops(crop_table, confusion, settings)
    sel = select.plan_selection(fields, crop_table, flagged, confusion, settings=settings, seed=seed)
    unbudgeted = sel.plan.assign(quota=np.minimum(sel.plan["target"], sel.plan["available"]))
    candidates = select.fields_to_label(sel.candidates, unbudgeted, settings=settings, seed=seed)
    return AOISummary(
        crop_table=crop_table,
        sums=crop_sums(fields),
        confusion=confusion,
        pixel_confusion=pixel_confusion,
        overall=metrics.overall(crop_table, pixel_confusion),
        flagged=flagged,
        plan=sel.plan.drop(columns=["members", "linked_to"]),
        candidates=candidates.reset_index(drop=True),
        n_fields=len(fields),
        settings=settings,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------------------------
# Pooled metrics


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=np.asarray(den) > 0)


def metrics_from_sums(confusion: pd.DataFrame, pixel_confusion: pd.DataFrame, sums: pd.DataFrame) -> pd.DataFrame:
    """The per-crop table of `metrics.crop_metrics` (same columns, order and sort) from counts and sums alone."""
    s = sums.reindex(confusion.index, fill_value=0.0)
    field_stats = pd.DataFrame(
        {
            "conf_mean": _ratio(s["conf_sum"].to_numpy(), s["conf_n"].to_numpy()),
            "conf_mean_right": _ratio(s["conf_right_sum"].to_numpy(), s["conf_right_n"].to_numpy()),
            "conf_mean_wrong": _ratio(s["conf_wrong_sum"].to_numpy(), s["conf_wrong_n"].to_numpy()),
            "purity_mean": _ratio(s["purity_sum"].to_numpy(), s["purity_n"].to_numpy()),
            "area_ha": s["area_m2"].to_numpy() / 1e4,
            "area_agreement": _ratio(s["area_right_m2"].to_numpy(), s["area_m2"].to_numpy()),
        },
        index=confusion.index,
    )
    return metrics.crop_table(confusion, pixel_confusion, field_stats)


def pooled_confusions(summaries: Mapping[str, AOISummary]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Field confusion, pixel confusion and per-crop sums, added over the AOIs."""
    parts = list(summaries.values())
    confusion = sum((s.confusion for s in parts[1:]), parts[0].confusion)
    pixel = sum((s.pixel_confusion for s in parts[1:]), parts[0].pixel_confusion)
    sums = sum((s.sums for s in parts[1:]), parts[0].sums)
    return confusion, pixel, sums


def pooled_metrics(summaries: Mapping[str, AOISummary]) -> pd.DataFrame:
    """Per-crop metrics over all AOIs together (as if their fields were one table)."""
    return metrics_from_sums(*pooled_confusions(summaries))


def metrics_by_aoi(summaries: Mapping[str, AOISummary], pooled: pd.DataFrame) -> pd.DataFrame:
    """One row per (crop, AOI) where the crop is in the GT or predicted: the AOI's numbers beside the pooled ones.

    Crops in the pooled order, AOIs in the run's order; `severity` / `reasons` say whether the crop fails the rule
    in that AOI (empty when it passes).
    """
    rows = []
    for name, s in summaries.items():
        table = s.crop_table.merge(s.flagged[["crop", "severity", "reasons"]], on="crop", how="left")
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
                "underperforming_crops": len(s.flagged),
                "label_targets": int(labels["target"]),
                "labels_wanted": int(labels["wanted"]),
                "labels_allocated": int(labels["quota"]),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# Label allocation


def apportion(wanted: np.ndarray, budget: int | None) -> np.ndarray:
    """`wanted` scaled down to sum to `budget` when it exceeds it: largest remainder, never above `wanted`.

    Ties in the remainders go to the earlier row (stable), so the result depends on the row order only.
    """
    wanted = np.asarray(wanted, dtype="int64")
    total = int(wanted.sum())
    if budget is None or total <= budget:
        return wanted.copy()
    exact = wanted * budget / total
    quota = np.floor(exact).astype("int64")
    extra = np.argsort(-(exact - quota), kind="stable")[: budget - int(quota.sum())]
    quota[extra] += 1
    return quota


def _fine_text(row: pd.Series, s: DiagnosisSettings) -> str:
    """Why a crop gets no label in an AOI where it passes the rule."""
    if row["num_fields"] == 0:
        return "no GT field of the crop in this AOI: no labels here"
    return (
        f"fine here (agreement {row['agreement_score']:.2f} >= {s.min_agreement:g}, F1 {row['f1']:.2f} >="
        f" {s.min_f1:g}, confidence {row['conf_mean']:.0f} >= {s.min_confidence:g}) and no contrast crop: no labels"
    )


def _without_own_budget(derivation: str) -> str:
    """An AOI plan's derivation without its own budget step: the pooled plan applies one budget to all AOIs."""
    return re.sub(r"; budget [\d,]+ -> \d+$", "", derivation)


def allocation_rows(summaries: Mapping[str, AOISummary], *, settings: DiagnosisSettings) -> pd.DataFrame:
    """One row per (crop, AOI) for every crop planned in at least one AOI, with each AOI's own target and supply.

    A crop planned somewhere also gets a row (role `fine`, target 0) in each AOI where it has GT fields but passes
    the rule, so the table shows where a crop is not labelled and why.
    """
    planned = {crop for s in summaries.values() for crop in s.plan["crop"]}
    rows = []
    for name, s in summaries.items():
        plan = s.plan.set_index("crop")
        m = s.crop_table.set_index("crop")
        for crop in sorted(planned, key=CROP_NAMES.index):
            if crop in plan.index:
                p = plan.loc[crop]
                rows.append(
                    {"crop": crop, "aoi": name, "role": p["role"], "severity": p["severity"],
                     "num_fields": int(p["num_fields"]), "agreement_score": p["agreement_score"], "f1": p["f1"],
                     "conf_mean": p["conf_mean"], "target": int(p["target"]), "available": int(p["available"]),
                     "eval_fields": int(p["eval_fields"]), "derivation": _without_own_budget(p["derivation"])}
                )  # fmt: skip
            elif crop in m.index and m.at[crop, "num_fields"] > 0:
                r = m.loc[crop]
                rows.append(
                    {"crop": crop, "aoi": name, "role": "fine", "severity": None,
                     "num_fields": int(r["num_fields"]), "agreement_score": r["agreement_score"], "f1": r["f1"],
                     "conf_mean": r["conf_mean"], "target": 0, "available": 0, "eval_fields": 0,
                     "derivation": _fine_text(r, settings)}
                )  # fmt: skip
    columns = [c for c in ALLOCATION_COLUMNS if c not in ("wanted", "quota", "crop_quota", "share_of_crop")]
    return pd.DataFrame(rows, columns=columns)


def allocate_labels(rows: pd.DataFrame, *, budget: int | None) -> pd.DataFrame:
    """Quotas of the (crop, AOI) rows of `allocation_rows`: min(target, available), all scaled to one budget.

    Adds `wanted`, `quota`, the crop's total quota over the AOIs and this AOI's share of it, and completes the
    `derivation` text with the cap and the budget.
    """
    out = rows.reset_index(drop=True).copy()
    out["wanted"] = np.minimum(out["target"], out["available"]).astype("int64")
    out["quota"] = apportion(out["wanted"].to_numpy(), budget)
    out["crop_quota"] = out.groupby("crop")["quota"].transform("sum").astype("int64")
    out["share_of_crop"] = _ratio(out["quota"].to_numpy(float), out["crop_quota"].to_numpy(float))
    total = int(out["wanted"].sum())
    binding = budget is not None and total > budget
    notes = []
    for role, wanted, quota in zip(out["role"], out["wanted"], out["quota"], strict=True):
        if role == "fine":
            notes.append("")
        elif binding:
            scale = budget / total
            notes.append(
                f"; pooled budget {budget:,} over {total:,} wanted in all AOIs: {wanted} x {scale:.3f} -> {quota}"
            )
        else:
            notes.append(f"; pooled: {wanted} (all AOIs want {total:,}, within the budget)")
    out["derivation"] = out["derivation"] + pd.Series(notes, index=out.index)
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


# ---------------------------------------------------------------------------------------------------------------
# Picture


def f1_heatmap(by_aoi: pd.DataFrame, pooled: pd.DataFrame, *, aois: list[str], min_f1: float) -> Figure:
    """F1 per crop (rows, pooled order) x AOI (columns, then `pooled`); cells of crops failing the rule framed.

    Each cell shows the F1 and the crop's GT fields there; blank where the crop is neither in the GT nor predicted.
    """
    crops = list(pooled.loc[pooled["num_fields"] > 0, "crop"])
    f1 = by_aoi.pivot(index="crop", columns="aoi", values="f1").reindex(index=crops, columns=aois)
    n = by_aoi.pivot(index="crop", columns="aoi", values="num_fields").reindex(index=crops, columns=aois)
    flagged = by_aoi.assign(bad=by_aoi["severity"].notna()).pivot(index="crop", columns="aoi", values="bad")
    flagged = flagged.reindex(index=crops, columns=aois).fillna(False).astype(bool)
    ref = pooled.set_index("crop").loc[crops]
    grid = np.column_stack([f1.to_numpy(float), ref["f1"].to_numpy(float)]) if crops else np.zeros((0, len(aois) + 1))
    counts = np.column_stack([n.to_numpy(float), ref["num_fields"].to_numpy(float)]) if crops else grid
    fig = Figure(figsize=(3.5 + 1.1 * (len(aois) + 1), max(3.0, 0.34 * len(crops) + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(aois) + 1), [*aois, "pooled"])
    ax.set_yticks(range(len(crops)), crops, fontsize=8)
    ax.axvline(len(aois) - 0.5, color="black", lw=1.5)
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f} ({counts[i, j]:.0f})", ha="center", va="center", fontsize=7)
        if j < len(aois) and flagged.iat[i, j]:
            ax.add_patch(Rectangle((j - 0.47, i - 0.45), 0.94, 0.9, fill=False, edgecolor="black", lw=1.8))
    fig.colorbar(image, ax=ax, label="F1 over all fields", shrink=0.8)
    ax.set_title(f"F1 by crop and AOI (GT fields in brackets; framed: underperforming there; F1 rule {min_f1:g})",
                 fontsize=9)  # fmt: skip
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Report


def _pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.1f} %"


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _headline(overview: pd.DataFrame, pooled: pd.DataFrame, flagged: pd.DataFrame) -> list:
    scored = int(overview["fields_scored"].sum())
    right = int(pooled["n_correct"].sum())
    agreement = right / scored if scored else float("nan")
    per_aoi = ", ".join(f"{r.aoi} {_pct(r.agreement)}" for r in overview.itertuples())
    text = (
        f"{len(overview)} AOIs, {int(overview['n_fields'].sum()):,} fields, {scored:,} scored. Pooled agreement"
        f" {_pct(agreement)} (every scored field counts once: the field-weighted mean of the AOIs: {per_aoi})."
    )
    if len(overview) > 1 and overview["agreement"].notna().any():
        worst = overview.loc[overview["agreement"].idxmin()]
        best = overview.loc[overview["agreement"].idxmax()]
        text += (
            f" The hardest AOI is {worst['aoi']} ({worst['underperforming_crops']} underperforming crops), the"
            f" easiest {best['aoi']} ({best['underperforming_crops']})."
        )
    text += f" Over all AOIs together {len(flagged)} crops fail the rule."
    shown = overview.drop(columns=["area_agreement", "pixel_agreement"])
    return [Heading("Headline"), Paragraph(text), Table(shown, "aoi_overview.csv")]


def _spread_sentences(by_aoi: pd.DataFrame, *, min_fields: int) -> list[str]:
    """Crops whose agreement differs most between AOIs (AOIs with at least `min_fields` of its fields)."""
    solid = by_aoi.loc[by_aoi["num_fields"] >= min_fields]
    sentences = []
    spreads = []
    for crop, rows in solid.groupby("crop", sort=False):
        if len(rows) < 2:
            continue
        lo, hi = rows.loc[rows["agreement_score"].idxmin()], rows.loc[rows["agreement_score"].idxmax()]
        spreads.append((hi["agreement_score"] - lo["agreement_score"], crop, lo, hi, rows))
    for spread, crop, lo, hi, rows in sorted(spreads, key=lambda t: -t[0])[:MAX_SENTENCES]:
        if spread < 0.05:
            break
        weak = list(rows.loc[rows["severity"].notna(), "aoi"])
        where = f"; underperforming in {_names(weak)}" if weak else ""
        sentences.append(
            f"**{crop}**: agreement {lo['agreement_score']:.2f} in {lo['aoi']} ({lo['num_fields']:,} fields) against"
            f" {hi['agreement_score']:.2f} in {hi['aoi']} ({hi['num_fields']:,}); pooled"
            f" {lo['pooled_agreement']:.2f}{where}."
        )
    return sentences


def _where_weak(by_aoi: pd.DataFrame, flagged: pd.DataFrame, image: Image, s: DiagnosisSettings) -> list:
    blocks: list = [Heading("Where is each crop weak?")]
    sentences = _spread_sentences(by_aoi, min_fields=s.min_fields)
    if sentences:
        blocks += [
            Paragraph(f"The largest differences between AOIs (AOIs with at least {s.min_fields} fields of the crop):"),
            Bullets(sentences),
        ]
    else:
        blocks.append(Paragraph("No crop's agreement differs by 5 points or more between AOIs."))
    everywhere = [
        crop for crop, rows in by_aoi.loc[by_aoi["num_fields"] > 0].groupby("crop", sort=False)
        if len(rows) == by_aoi["aoi"].nunique() and rows["severity"].notna().all()
    ]  # fmt: skip
    if everywhere:
        blocks.append(Paragraph(f"Underperforming in every AOI: {_names(everywhere)}."))
    blocks.append(image)
    if len(flagged):
        table = flagged[["crop", "severity", "reasons", "num_fields", "agreement_score", "f1", "conf_mean"]]
        blocks.append(Table(table, "underperforming_crops_pooled.csv (the rule on the pooled numbers)"))
    return blocks


def _allocation_blocks(allocation: pd.DataFrame, picks: pd.DataFrame, s: DiagnosisSettings) -> list:
    blocks: list = [Heading("Label allocation across AOIs")]
    if not len(allocation):
        return [*blocks, Paragraph("No crop is underperforming in any AOI: nothing to label.")]
    planned = allocation.loc[allocation["role"] != "fine"]
    per_aoi = allocation.groupby("aoi", sort=False)[["target", "wanted", "quota"]].sum()
    crops = allocation.loc[allocation["quota"] > 0, "crop"].nunique()

    def listing(column: str) -> str:
        return ", ".join(f"{aoi} {value:,}" for aoi, value in per_aoi[column].items())

    text = (
        f"Label {int(allocation['quota'].sum()):,} fields of {crops} crops: {listing('quota')}. The AOIs' own numbers"
        f" ask for {listing('target')} (targets); their clean, informative candidates outside the held-back blocks"
        f" allow {listing('wanted')}."
    )
    fine = allocation.loc[allocation["role"] == "fine"]
    if len(fine):
        text += (
            f" {fine['crop'].nunique()} of the crops planned somewhere are fine elsewhere and get no label there"
            f" ({len(fine)} crop x AOI pairs)."
        )
    budget = f"one budget of {s.label_budget:,} fields for all AOIs" if s.label_budget else "no budget"
    derivation = [
        "What each AOI needs: select.py's quota on the AOI's own numbers: error x (label_base"
        f" {s.label_base} + {s.label_share_scale:g} x sqrt(the crop's area share in the AOI)), error = max(1 -"
        f" agreement, 1 - F1, confidence gap), clamped to [{s.label_min}, {s.label_max}], for crops that fail the"
        f" rule there; a fine crop confused with them (contrast) gets {s.contrast_ratio:g} x their targets; a crop"
        " that passes the rule in an AOI and is no contrast crop there gets none there.",
        "Capped by the AOI's clean, informative fields outside its held-back evaluation blocks and their buffers"
        f" (at most {s.max_per_block} per crop and block): `wanted` = min(target, available).",
        f"Pooled: {budget}; when all AOIs want more, each `wanted` is scaled down in proportion (largest remainder).",
        "Which fields: each AOI's best-ranked candidates of the crop (misclassified first, then uncertain; spread"
        " over blocks), as in the AOI's own fields_to_label.csv.",
    ]
    pivot = planned.pivot_table(index="crop", columns="aoi", values="quota", aggfunc="sum", fill_value=0)
    pivot = pivot.reindex(columns=list(dict.fromkeys(allocation["aoi"])), fill_value=0)
    pivot["total"] = pivot.sum(axis=1)
    pivot = pivot.sort_values("total", ascending=False).reset_index()
    blocks += [Paragraph(text), Bullets(derivation), Table(pivot, "labels per crop and AOI (label_allocation.csv)")]
    if len(picks):
        top = picks.head(12)[["aoi", "field_id", "crop", "score", "reason"]]
        blocks.append(Table(top, f"first {len(top)} of {len(picks):,} fields in fields_to_label_by_aoi.csv"))
    return blocks


def _caveats(summaries: Mapping[str, AOISummary], settings: DiagnosisSettings, seed: int) -> list:
    items = []
    stale = [name for name, s in summaries.items() if s.settings != settings or s.seed != seed]
    if stale:
        items.append(
            f"The candidates of {_names(stale)} were chosen with other diagnosis settings or seed than this pooled"
            " view's: their held-back blocks may differ from the ones in their own outputs."
        )
    few = sorted({c for s in summaries.values() for c in s.crop_table.loc[
        (s.crop_table["num_fields"] > 0) & (s.crop_table["num_fields"] < settings.min_fields), "crop"]})  # fmt: skip
    if few:
        items.append(f"Fewer than {settings.min_fields} GT fields in at least one AOI (noisy there): {_names(few)}.")
    items.append(
        "Each AOI's own outputs (OUT/<aoi>/) hold its full tables, maps and held-back evaluation fields; this view"
        " keeps only their per-crop counts, so it adds no per-field table."
    )
    return [Heading("Caveats"), Bullets(items)]


# ---------------------------------------------------------------------------------------------------------------
# Files


def _settings_table(settings: DiagnosisSettings, seed: int) -> pd.DataFrame:
    rows = [*dataclasses.asdict(settings).items(), ("seed", seed)]
    return pd.DataFrame({"setting": [k for k, _ in rows], "value": [str(v) for _, v in rows]})


def _csv(frame: pd.DataFrame, path: Path, *, decimals: int = 3, index: bool = False) -> None:
    """CSV with floats rounded (1.0 is written '1')."""
    frame.round(decimals).to_csv(path, index=index, float_format="%.10g")


def write_pooled(
    summaries: dict[str, AOISummary], out_dir: Path, *, settings: DiagnosisSettings, seed: int
) -> list[str]:
    """Write the pooled view of the AOIs into `out_dir`; return the file names written.

    crop_metrics_pooled.csv, crop_metrics_by_aoi.csv, aoi_overview.csv, confusion_matrix_pooled.csv,
    underperforming_crops_pooled.csv, label_allocation.csv, fields_to_label_by_aoi.csv, f1_by_aoi.png, report.md,
    report.html.
    """
    if not summaries:
        raise ValueError("write_pooled needs at least one AOI summary")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, s in summaries.items():
        if s.settings != settings or s.seed != seed:
            log.warning("AOI %s was summarised with other diagnosis settings or seed than the pooled view", name)
    confusion, _, _ = pooled_confusions(summaries)
    pooled = pooled_metrics(summaries)
    flagged = underperforming_crops(pooled, confusion, settings)
    by_aoi = metrics_by_aoi(summaries, pooled)
    allocation = allocate_labels(allocation_rows(summaries, settings=settings), budget=settings.label_budget)
    picks = labels_by_aoi(summaries, allocation)
    overview = aoi_overview(summaries, allocation)
    figure = f1_heatmap(by_aoi, pooled, aois=list(summaries), min_f1=settings.min_f1)
    image = Image("f1_by_aoi.png", _png(figure), "F1 per crop and AOI; last column: all AOIs pooled.")
    files = {
        "crop_metrics_pooled.csv": lambda p: _csv(pooled, p, decimals=2),
        "crop_metrics_by_aoi.csv": lambda p: _csv(by_aoi, p),
        "aoi_overview.csv": lambda p: _csv(overview, p),
        "confusion_matrix_pooled.csv": lambda p: _csv(confusion, p, index=True),
        "underperforming_crops_pooled.csv": lambda p: _csv(flagged, p),
        "label_allocation.csv": lambda p: _csv(allocation, p),
        "fields_to_label_by_aoi.csv": lambda p: _csv(picks, p, decimals=7),
        "f1_by_aoi.png": lambda p: p.write_bytes(image.png),
    }
    for name, write in files.items():
        write(out_dir / name)
    title = f"Pooled crop diagnosis: {len(summaries)} AOIs ({', '.join(summaries)})"
    blocks = [
        *_headline(overview, pooled, flagged),
        *_where_weak(by_aoi, flagged, image, settings),
        *_allocation_blocks(allocation, picks, settings),
        *_caveats(summaries, settings, seed),
        Heading("Settings"),
        Table(_settings_table(settings, seed), "diagnosis settings"),
    ]
    (out_dir / "report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(title, blocks), encoding="utf-8")
    return [*files, "report.md", "report.html"]
