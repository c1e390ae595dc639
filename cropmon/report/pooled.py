"""The pooled view of a multi-AOI run as files: tables, the F1-by-AOI heatmap and a short report, from the AOIs'
compact summaries (diagnosis/pooled.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from cropmon.diagnosis.diagnose import underperforming_crops
from cropmon.diagnosis.pooled import (
    AOISummary,
    allocate_labels,
    allocation_rows,
    aoi_overview,
    labels_by_aoi,
    metrics_by_aoi,
    pooled_accuracy,
    pooled_confusions,
    pooled_metrics,
    with_labels,
)
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.io.outputs import write_csv
from cropmon.report.accuracy import accuracy_blocks, error_matrix_table
from cropmon.report.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    names,
    pct,
    png,
    render_html,
    render_markdown,
    strong,
)
from cropmon.report.plots import area_plot, f1_heatmap
from cropmon.report.wording import allocation_table, with_reasons, with_rule

log = logging.getLogger(__name__)

MAX_SENTENCES = 8


def _headline(overview: pd.DataFrame, pooled: pd.DataFrame, flagged: pd.DataFrame, *,
              unlabelled: list[str] | None = None) -> list:
    scored = int(overview["fields_scored"].sum())
    right = int(pooled["n_correct"].sum())
    agreement = right / scored if scored else float("nan")
    per_aoi = ", ".join(f"{r.aoi} {pct(r.agreement)}" for r in overview.itertuples())
    text = (
        f"{len(overview)} AOIs, {int(overview['n_fields'].sum()):,} fields, {scored:,} scored. Pooled agreement"
        f" {pct(agreement)} (every scored field counts once: the field-weighted mean of the AOIs: {per_aoi})."
    )
    if overview["agreement"].notna().sum() > 1:
        worst = overview.loc[overview["agreement"].idxmin()]
        best = overview.loc[overview["agreement"].idxmax()]
        text += (
            f" The hardest AOI is {worst['aoi']} ({worst['underperforming_crops']} underperforming crops), the"
            f" easiest {best['aoi']} ({best['underperforming_crops']})."
        )
    text += f" Over all AOIs together {len(flagged)} crops fail the rule."
    if unlabelled:
        text += " " + _without_labels_sentence(unlabelled)
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
        where = f"; underperforming in {names(weak)}" if weak else ""
        sentences.append(
            f"{strong(crop)}: agreement {lo['agreement_score']:.2f} in {lo['aoi']} ({lo['num_fields']:,} fields)"
            f" against {hi['agreement_score']:.2f} in {hi['aoi']} ({hi['num_fields']:,}); pooled"
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
        blocks.append(Paragraph(f"Underperforming in every AOI: {names(everywhere)}."))
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
            f"The candidates of {names(stale)} were chosen with other diagnosis settings or seed than this pooled"
            " view's: their held-back blocks may differ from the ones in their own outputs."
        )
    few = sorted({c for s in summaries.values() for c in s.crop_table.loc[
        (s.crop_table["num_fields"] > 0) & (s.crop_table["num_fields"] < settings.min_fields), "crop"]})  # fmt: skip
    if few:
        items.append(f"Fewer than {settings.min_fields} GT fields in at least one AOI (noisy there): {names(few)}.")
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




def write_pooled(
    summaries: dict[str, AOISummary], out_dir: Path, *, settings: DiagnosisSettings, seed: int
) -> list[str]:
    """Write the pooled view of the AOIs into `out_dir`; return the file names written.

    crop_metrics_pooled.csv, crop_metrics_by_aoi.csv, aoi_overview.csv, confusion_matrix_pooled.csv,
    underperforming_crops_pooled.csv, label_allocation.csv, fields_to_label_by_aoi.csv, f1_by_aoi.png, report.md,
    report.html; with the AOIs' accuracy assessments also accuracy_assessment_pooled.csv (strata = AOI x map
    class: totals and variances added), accuracy_assessment_by_aoi.csv, error_matrix_area_pooled.csv and
    area_adjusted_pooled.png.
    """
    if not summaries:
        raise ValueError("write_pooled needs at least one AOI summary")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, s in summaries.items():
        if s.settings != settings or s.seed != seed:
            log.warning("AOI %s was summarised with other diagnosis settings or seed than the pooled view", name)
    unlabelled = [name for name, s in summaries.items() if not s.has_labels]
    labelled = with_labels(summaries)
    if not labelled:
        return _write_without_labels(summaries, out_dir, settings=settings, seed=seed)
    confusion, _, _ = pooled_confusions(labelled)
    pooled = pooled_metrics(labelled)
    flagged = underperforming_crops(pooled, confusion, settings)
    by_aoi = metrics_by_aoi(labelled, pooled)
    allocation = allocate_labels(allocation_rows(labelled), budget=settings.label_budget)
    picks = with_reasons(labels_by_aoi(labelled, allocation), settings, drop=("correct",))
    overview = aoi_overview(summaries, allocation)
    figure = f1_heatmap(by_aoi, pooled, aois=list(labelled), min_f1=settings.min_f1)
    image = Image("f1_by_aoi.png", png(figure), "F1 per crop and AOI; last column: all AOIs pooled.")
    files = {
        "crop_metrics_pooled.csv": lambda p: write_csv(pooled, p, decimals=2),
        "crop_metrics_by_aoi.csv": lambda p: write_csv(by_aoi, p, decimals=3),
        "aoi_overview.csv": lambda p: write_csv(overview, p, decimals=3),
        "confusion_matrix_pooled.csv": lambda p: write_csv(confusion, p, decimals=3, index=True),
        "underperforming_crops_pooled.csv": lambda p: write_csv(with_rule(flagged, settings), p, decimals=3),
        "label_allocation.csv": lambda p: write_csv(allocation_table(allocation, settings), p, decimals=3),
        "fields_to_label_by_aoi.csv": lambda p: write_csv(picks, p, decimals=7),
        "f1_by_aoi.png": lambda p: p.write_bytes(image.png),
    }
    assessment, accuracy_by_aoi = pooled_accuracy(labelled)
    area_image = None
    if assessment is not None:
        area_image = Image("area_adjusted_pooled.png", png(area_plot(assessment.table, level=assessment.level)),
                           "Mapped vs error-adjusted area per crop over all AOIs, with 95 % intervals.")
        files.update({
            "accuracy_assessment_pooled.csv": lambda p: write_csv(assessment.table, p, decimals=5),
            "accuracy_assessment_by_aoi.csv": lambda p: write_csv(accuracy_by_aoi, p, decimals=5),
            "error_matrix_area_pooled.csv": lambda p: write_csv(error_matrix_table(assessment), p, decimals=6,
                                                                index=True),
            "area_adjusted_pooled.png": lambda p: p.write_bytes(area_image.png),
        })
    for name, write in files.items():
        write(out_dir / name)
    title = f"Pooled crop diagnosis: {len(summaries)} AOIs ({', '.join(summaries)})"
    blocks = [
        *_headline(overview, pooled, flagged, unlabelled=unlabelled),
        *_where_weak(by_aoi, flagged, image, settings),
        *(accuracy_blocks(assessment, area_image) if assessment is not None else []),
        *_allocation_blocks(allocation, picks, settings),
        *_caveats(summaries, settings, seed),
        Heading("Settings"),
        Table(_settings_table(settings, seed), "diagnosis settings"),
    ]
    (out_dir / "report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(title, blocks), encoding="utf-8")
    return [*files, "report.md", "report.html"]


def _without_labels_sentence(unlabelled: list[str]) -> str:
    files = ", ".join(f"{name}/fields_to_label.csv" for name in unlabelled)
    return (f"Without ground truth: {names(unlabelled)}. Their fields are ranked by the model's uncertainty in their"
            f" own outputs ({files}); they enter no pooled metric, accuracy or label allocation, which need labelled"
            " fields.")


def _write_without_labels(summaries: dict[str, AOISummary], out_dir: Path, *, settings: DiagnosisSettings,
                          seed: int) -> list[str]:
    """The pooled view when no AOI has ground truth: the overview of the AOIs and a report that says so."""
    overview = aoi_overview(summaries, allocate_labels(allocation_rows({}), budget=settings.label_budget))
    write_csv(overview, out_dir / "aoi_overview.csv", decimals=3)
    title = f"Pooled crop diagnosis: {len(summaries)} AOIs ({', '.join(summaries)}), without ground truth"
    blocks: list[Block] = [
        Heading("Headline"),
        Paragraph(f"{len(summaries)} AOIs, {int(overview['n_fields'].sum()):,} fields, none with a usable label:"
                  " nothing to pool. " + _without_labels_sentence(list(summaries))),
        Table(overview[["aoi", "n_fields"]], "aoi_overview.csv"),
        Heading("Settings"),
        Table(_settings_table(settings, seed), "diagnosis settings"),
    ]
    (out_dir / "report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(title, blocks), encoding="utf-8")
    return ["aoi_overview.csv", "report.md", "report.html"]
