"""The report of one AOI: every table, picture and sentence of the diagnosis, written into the run's outputs.

`write_diagnosis` is what the pipeline calls; `build_report` turns the diagnosis's numbers into sentences (no fixed
prose: every sentence is built from the run's numbers).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from cropmon.analysis import metrics
from cropmon.analysis.diagnose import TIERS, Diagnosis, diagnose_run
from cropmon.analysis.settings import DiagnosisSettings
from cropmon.catalogue import U0C, Catalogue
from cropmon.io.outputs import write_csv
from cropmon.report import plots
from cropmon.report.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    lookup,
    names,
    num,
    pct,
    png,
    render_html,
    render_markdown,
)
from cropmon.report.wording import plan_table, rule_text, with_reasons, with_rule

MAX_SENTENCES = 8  # per section; the tables hold the rest


@dataclass
class Written:
    """Files written so far, by file name."""

    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        self.paths[name] = self.out_dir / name
        return self.paths[name]



def _headline(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    o, c, m = d.overall, d.caveats, d.metrics
    in_gt = m.loc[m["num_fields"] > 0]
    text = f"{c['n_scored']:,} of {c['n_fields']:,} fields were scored (a known crop label and at least one pixel)."
    if not len(in_gt):
        return [Heading("Headline"), Paragraph(text + " With no scored field there is nothing to diagnose.")]
    text += (
        f" {pct(o['agreement'])} of them are predicted as their ground-truth crop; weighted by area"
        f" {pct(o['area_agreement'])}, by pixel {pct(o['pixel_agreement'])}. Macro F1 over the {len(m)} crops"
        f" seen (in the GT or predicted) is {num(o['macro_f1'])}, support-weighted F1 {num(o['weighted_f1'])}."
    )
    solid = in_gt.loc[in_gt["num_fields"] >= s.min_fields]
    pool = solid if len(solid) else in_gt
    best, worst = pool.iloc[0], pool.sort_values(["weighted_f1_score", "num_fields"], ascending=[True, False]).iloc[0]
    text += (
        f" Best crop: {best['crop']} (agreement {num(best['agreement_score'])} over {best['num_fields']:,} fields);"
        f" worst: {worst['crop']} ({num(worst['agreement_score'])} over {worst['num_fields']:,})"
        + (f", among crops with at least {s.min_fields} fields." if len(solid) else ".")
    )
    tiers = d.flagged["severity"].value_counts()
    if len(d.flagged):
        counts = [f"{tiers[t]} {t}" for t in TIERS if t in tiers]
        text += f" {len(d.flagged)} crops are underperforming ({', '.join(counts)})."
    else:
        text += " No crop falls below the thresholds."
    numbers = pd.DataFrame(
        {
            "measure": [
                "fields scored",
                "agreement (fields)",
                "agreement (area)",
                "agreement (pixels)",
                "macro F1",
                "weighted F1",
                "underperforming crops",
            ],
            "value": [
                f"{c['n_scored']:,}",
                pct(o["agreement"]),
                pct(o["area_agreement"]),
                pct(o["pixel_agreement"]),
                num(o["macro_f1"]),
                num(o["weighted_f1"]),
                str(len(d.flagged)),
            ],
        }
    )
    return [Heading("Headline"), Paragraph(text), Table(numbers)]


def _crop_sentence(row: pd.Series, m: pd.Series, shares: pd.Series, s: DiagnosisSettings) -> str:
    """One underperforming crop, in words: its numbers and each of its reasons (`shares`: its confusion row)."""
    phrases = []
    for code in row["reasons"].split(";"):
        if code == "never_predicted":
            phrases.append("it is never predicted")
        elif code.startswith("absorbed_by:"):
            other = code.split(":", 1)[1]
            phrases.append(f"{100 * shares[other]:.0f} % of its fields are predicted as {other}")
        elif code == "over_predicted":
            phrases.append(f"it is predicted for {row['n_predicted']:,} fields against {row['num_fields']:,} in the GT")
        elif code == "low_precision":
            share = "none" if row["precision"] == 0 else f"only {pct(row['precision'])}"
            phrases.append(f"{share} of the {row['n_predicted']:,} fields predicted as it are right")
        elif code == "scattered_errors":
            phrases.append(f"its errors are spread (largest: {m['mistaken_for_1']}, {pct(m['mistaken_for_1_share'])})")
        elif code == "low_confidence":
            phrases.append(f"mean confidence {num(row['conf_mean'], 0)} < {s.min_confidence:g}")
        elif code == "too_few_fields":
            n = row["num_fields"]
            phrases.append(f"only {n} GT fields, weak evidence" if n else "it is absent from the GT")
    scores = f"agreement {num(row['agreement_score'])}, F1 {num(row['f1'])}"
    return f"**{row['crop']}** ({row['severity']}; {scores}): {'; '.join(phrases)}."


def _underperforming(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    blocks: list[Block] = [Heading("Underperforming crops"), Paragraph(f"Rule: {rule_text(s)}.")]
    if not len(d.flagged):
        return [*blocks, Paragraph(f"All {len(d.metrics)} crops pass the rule.")]
    by_crop, shares = d.metrics.set_index("crop"), metrics.row_shares(d.confusion)
    sentences = [
        _crop_sentence(row, by_crop.loc[row["crop"]], shares.loc[row["crop"]], s) for _, row in d.flagged.iterrows()
    ]
    rest = len(sentences) - MAX_SENTENCES
    if rest > 0:
        sentences = [*sentences[:MAX_SENTENCES], f"{rest} more in the table and in underperforming_crops.csv."]
    table = d.flagged[
        ["crop", "severity", "reasons", "num_fields", "n_predicted", "agreement_score", "f1", "precision", "conf_mean"]
    ]
    return [*blocks, Bullets(sentences), Table(table, "underperforming_crops.csv (worst tier first)")]


def _pair_sentence(pair: Any) -> str:
    a, b = pair.crop_a, pair.crop_b
    if pair.mutual:
        return (
            f"{a} and {b} are confused both ways: {pair.a_as_b:,} {a} fields ({pct(pair.a_as_b_share)}) are"
            f" predicted as {b}, {pair.b_as_a:,} {b} fields ({pct(pair.b_as_a_share)}) as {a}."
        )
    back = f"; the other way only {pair.b_as_a:,}" if pair.b_as_a else ", never the other way"
    return f"{pair.a_as_b:,} {a} fields ({pct(pair.a_as_b_share)} of {a}) are predicted as {b}{back}."


def _confusions(d: Diagnosis, images: dict[str, Image]) -> list[Block]:
    blocks: list[Block] = [Heading("Confusions")]
    if not len(d.pairs):
        blocks.append(Paragraph("No field is predicted as another crop."))
    else:
        off = int(d.confusion.to_numpy().sum() - np.trace(d.confusion.to_numpy()))
        top = d.pairs.head(3)["fields"].sum()
        blocks.append(
            Paragraph(
                f"{off:,} scored fields are predicted as another crop; the {min(3, len(d.pairs))} largest pairs"
                f" below account for {pct(top / off)} of them ({len(d.pairs)} pairs listed in confusion_pairs.csv)."
            )
        )
        blocks.append(Bullets([_pair_sentence(p) for p in d.pairs.head(MAX_SENTENCES).itertuples()]))
    blocks.append(images["confusion_heatmap.png"])
    return blocks


def _figures(d: Diagnosis, images: dict[str, Image]) -> list[Block]:
    blocks: list[Block] = [Heading("Per crop and across the AOI"), images["agreement_by_crop.png"]]
    blocks.append(images["f1_vs_confidence.png"])
    solid = d.blocks.loc[d.blocks["n_fields"] >= 10]
    if len(solid) >= 2:
        worst, best = solid.loc[solid["error_rate"].idxmax()], solid.loc[solid["error_rate"].idxmin()]
        blocks.append(
            Paragraph(
                f"Across the {len(solid)} blocks of {d.selection.grid.block_km:g} km with at least 10 scored fields,"
                f" the error rate runs from {pct(best['error_rate'])} to {pct(worst['error_rate'])} (worst block"
                f" around x={worst['left']:.4g}..{worst['right']:.4g}, y={worst['bottom']:.4g}..{worst['top']:.4g},"
                f" {int(worst['n_fields'])} fields)."
            )
        )
    blocks.append(images["block_error_map.png"])
    if "map_window.png" in images:
        blocks.append(images["map_window.png"])
    return blocks


def _plan(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    sel = d.selection
    plan, picks, held = sel.plan, sel.picks, sel.evaluation
    blocks: list[Block] = [Heading("Active-learning plan")]
    if not len(plan):
        return [*blocks, Paragraph("Nothing to plan: no crop is underperforming.")]
    groups = plan["group"].nunique()
    text = (
        f"Label {len(picks):,} fields ({picks['area_ha'].sum():,.0f} ha) of {int((plan['quota'] > 0).sum())} crops"
        f" in {groups} group{'s' if groups > 1 else ''}, and hold back {len(held):,} fields"
        f" ({held['area_ha'].sum():,.0f} ha) to measure the next model; no field to label lies within"
        f" {s.buffer_km:g} km of a held-back block."
    )
    if len(held):
        text += (
            f" The current model gets {pct(held['correct'].mean())} of the held-back fields right: the number the"
            " next model has to beat."
        )
    derivation = (
        f"How many: an underperforming crop's target is error x ({s.label_base} + {s.label_share_scale:g} x"
        f" sqrt(its share of the scored area)), error = max(1 - agreement, 1 - F1, confidence gap), clamped to"
        f" [{s.label_min}, {s.label_max}]; crops linked by confusion (absorbed_by either way, or mutual) are"
        f" planned together and a linked crop that is fine gets {s.contrast_ratio:g} x the targets of the crops it is"
        f" linked to, as contrast examples. Each quota is capped by the clean informative fields outside the"
        f" held-back blocks and buffers (at most {s.max_per_block} per crop and {s.block_km:g} km block)"
        + (f", and all quotas together by the budget of {s.label_budget:,} fields." if s.label_budget else ".")
    )
    which = (
        f"Which: misclassified fields first, then right but uncertain ones (confidence < {s.uncertain_confidence:g}"
        f" or pixel-vote margin < {s.uncertain_margin:g}), a bonus for fields confused within their group; only"
        f" fields with at least {s.min_pixels} pixel centres, never an all-touched fallback; picked in rounds over"
        " the blocks so that neighbours do not crowd the list."
    )
    absent = plan["num_fields"] == 0
    short = plan.loc[(plan["quota"] < plan["target"]) & ~absent, "crop"].tolist()
    bullets = [derivation, which]
    if short:
        bullets.append(f"Capped by the fields available (or the budget): {names(short)}.")
    for row in plan.loc[absent].itertuples():
        victims = [c for c in row.members.split(" + ") if c != row.crop and d.confusion.at[c, row.crop] > 0]
        where = f"; the fields wrongly predicted as it are {names(victims)} fields, planned with it" if victims else ""
        bullets.append(f"{row.crop} has no GT field in this AOI, so none of it can be labelled here{where}.")
    table = plan[["group", "crop", "role", "severity", "target", "available", "quota", "expected_ha", "eval_fields"]]
    blocks += [Paragraph(text), Bullets(bullets), Table(table, "label_plan.csv (derivation column: the numbers)")]
    if len(picks):
        top = with_reasons(picks.head(15), s)
        top = top[["rank", "field_id", "crop", "predicted", "confidence_score", "vote_margin", "reason"]]
        blocks.append(Table(top, f"first {len(top)} of {len(picks):,} fields in fields_to_label.csv / .gpkg"))
    return blocks


def _caveats(d: Diagnosis, run_info: Mapping[str, Any], s: DiagnosisSettings) -> list[Block]:
    c = d.caveats
    items = []
    if c["no_pixel"]:
        where = ", ".join(f"{k}: {v:,}" for k, v in c["no_pixel_by_geometry"].items())
        items.append(f"{c['no_pixel']:,} fields got no pixel and are not scored ({where}).")
    if c["unknown_label"]:
        examples = ", ".join(f"'{k}' ({v})" for k, v in c["unknown_label_examples"].items())
        items.append(f"{c['unknown_label']:,} fields carry a label that is in no class and are not scored: {examples}.")
    if c["null_label"]:
        items.append(f"{c['null_label']:,} fields have no label and are not scored.")
    if c["variant_label"]:
        items.append(f"{c['variant_label']:,} labels matched a class only after case/space folding.")
    if c["all_touched"]:
        items.append(
            f"{c['all_touched']:,} fields are so small or thin that no pixel centre falls inside: scored from the"
            " pixels they touch (all-touched fallback), never picked for labelling."
        )
    if c["tiny"]:
        items.append(f"{c['tiny']:,} scored fields have fewer than {s.min_pixels} pixels: never picked for labelling.")
    if c["ties"]:
        items.append(f"{c['ties']:,} fields had a tied majority, broken to the lowest class id.")
    if c["repaired_geometry"]:
        items.append(f"{c['repaired_geometry']:,} field geometries were invalid and repaired before use.")
    if c["duplicate_id"]:
        items.append(f"{c['duplicate_id']:,} fields share their field_id with another: scored, never picked.")
    if c["never_predicted"]:
        items.append(f"Never predicted for any field: {names(c['never_predicted'])}.")
    extra = [crop for crop in c["never_right"] if crop not in c["never_predicted"]]
    if extra:
        items.append(f"Predicted, but never for one of its own fields: {names(extra)}.")
    if c["predicted_not_in_gt"]:
        seen = [f"{k} ({v:,} fields)" for k, v in c["predicted_not_in_gt"].items()]
        items.append(f"Predicted although absent from the GT: {names(seen)}.")
    if c["too_few_fields"]:
        items.append(f"Fewer than {s.min_fields} GT fields (noisy numbers): {names(c['too_few_fields'])}.")
    if c["invalid_class_pixels"] or c["invalid_confidence_pixels"]:
        values = lookup(run_info, "fields", "invalid_class_values")
        seen = (": " + ", ".join(f"{k} ({v:,} px)" for k, v in list(values.items())[:8])) if values else ""
        items.append(
            f"{c['invalid_class_pixels']:,} pixels held a class value that is no class of the"
            f" {d.catalogue.describe()}{seen}, and {c['invalid_confidence_pixels']:,} a confidence outside 0..100;"
            " they are counted, not used."
        )
    dropped = lookup(run_info, "fields", "counts")
    if isinstance(dropped, Mapping) and dropped:
        counts = ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in dropped.items())
        items.append(f"The engine reported: {counts}.")
    return [Heading("Caveats"), Bullets(items or ["None: every field was scored and every label matched a class."])]


def _input_path(run_info: Mapping[str, Any], name: str) -> str | None:
    """run_info's inputs.<name>: a path, or a mapping with a path."""
    value = lookup(run_info, "inputs", name)
    path = value.get("path") if isinstance(value, Mapping) else value
    return path if isinstance(path, str) and path else None


def _flatten(info: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """('a.b', value as short text) for every leaf of a nested mapping."""
    rows = []
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, prefix=f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            rows.append((name, text if len(text) <= 160 else text[:157] + "..."))
    return rows


def _settings(run_info: Mapping[str, Any], s: DiagnosisSettings, seed: int) -> list[Block]:
    values = {**asdict(s), "seed": seed}
    diag = pd.DataFrame({"setting": list(values), "value": [str(v) for v in values.values()]})
    blocks: list[Block] = [Heading("Settings of this run"), Table(diag, "diagnosis settings")]
    rows = [row for row in _flatten(run_info) if not row[0].startswith("settings.diagnosis.")]  # in the table above
    if rows:
        blocks.append(Table(pd.DataFrame(rows, columns=["key", "value"]), "run information"))
    else:
        blocks.append(Paragraph("The pipeline passed no run information."))
    return blocks


def build_report(
    d: Diagnosis, images: dict[str, Image], *, settings: DiagnosisSettings, run_info: Mapping[str, Any], seed: int
) -> tuple[str, list[Block]]:
    """The report's title and blocks, in reading order."""
    source = _input_path(run_info, "raster") or _input_path(run_info, "fields")
    twin = " (digital twin)" if lookup(run_info, "inputs", "digital_twin") is True else ""
    title = f"Crop diagnosis: {Path(source).name}{twin}" if source else "Crop diagnosis"
    return title, [
        *_headline(d, settings),
        *_underperforming(d, settings),
        *_confusions(d, images),
        *_figures(d, images),
        *_plan(d, settings),
        *_caveats(d, run_info, settings),
        *_settings(run_info, settings, seed),
    ]


def _images(d: Diagnosis, s: DiagnosisSettings, window: plots.MapWindow | None) -> dict[str, Image]:
    """Every picture of the report, rendered once (the same bytes go to the PNG files and into the HTML)."""
    flagged = set(d.flagged["crop"])
    listed = [c for c in d.confusion.index if c in set(d.metrics["crop"])]
    shares = metrics.row_shares(d.confusion).loc[listed, listed]
    grid = d.selection.grid
    aspect = grid.unit_x / grid.unit_y
    crs = str(window.crs) if window is not None else ""
    figures = {
        "confusion_heatmap.png": (
            plots.confusion_heatmap(shares),
            "Field-level confusion, each GT row divided by its total (percent in the cells).",
        ),
        "agreement_by_crop.png": (
            plots.agreement_bars(d.metrics, flagged=flagged, min_agreement=s.min_agreement),
            "Agreement per crop; red: underperforming.",
        ),
        "f1_vs_confidence.png": (
            plots.f1_vs_confidence(d.metrics, flagged=flagged, min_f1=s.min_f1, min_confidence=s.min_confidence),
            "F1 against mean confidence per crop; bubble area ~ GT fields; shaded: the underperforming region.",
        ),
        "block_error_map.png": (
            plots.block_map(
                d.blocks, picks=d.selection.picks, evaluation=d.selection.evaluation, aspect=aspect, crs=crs
            ),
            f"Error rate per {s.block_km:g} km block; crosses: fields to label, circles: held back.",
        ),
    }
    if window is not None:
        figures["map_window.png"] = (
            plots.map_window(window, aspect=aspect),
            f"A window of the AOI ({window.crs}): ground truth | prediction | confidence.",
        )
    return {name: Image(name, png(fig), caption) for name, (fig, caption) in figures.items()}


def _field_decimals(frame: pd.DataFrame) -> dict[str, int]:
    """Coordinates keep 7 decimals (~1 cm in degrees); other floats 3."""
    return {c: 7 if c in ("x", "y") else 3 for c in frame.select_dtypes("float").columns}


def _write_layer(table: pd.DataFrame, fields: pd.DataFrame, path: Path, *, layer: str, crs: Any,
                 geometries: Callable[[pd.Index], gpd.GeoSeries] | None = None) -> None:
    """The listed fields as a GeoPackage layer: their polygons (from the table or read by `geometries`), or their
    points when there are none."""
    if geometries is not None:
        polygons = geometries(table.index)
        geometry, crs = polygons.to_numpy(), polygons.crs
    elif isinstance(fields, gpd.GeoDataFrame):
        geometry, crs = fields.geometry.loc[table.index], fields.crs
    else:
        geometry = gpd.points_from_xy(table["x"].astype(float), table["y"].astype(float))
    frame = gpd.GeoDataFrame(table.astype({"correct": bool}), geometry=geometry, crs=crs)
    with warnings.catch_warnings():
        # A plain table without any CRS is written as such, on purpose; pyogrio warns about it.
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        frame.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")


def write_diagnosis(
    fields: pd.DataFrame,
    class_counts: pd.DataFrame,
    out_dir: Path,
    *,
    settings: DiagnosisSettings,
    run_info: dict,
    map_window: plots.MapWindow | None = None,
    seed: int = 0,
    geometries: Callable[[pd.Index], gpd.GeoSeries] | None = None,
    catalogue: Catalogue = U0C,
) -> dict[str, Path]:
    """Write every table, picture and the report of the diagnosis into `out_dir`; return the paths by file name.

    `geometries` reads the polygons of table rows (`FieldResults.geometries`) for the GeoPackage layers of
    fields to label and evaluation fields; without it they come from `fields` when it is a GeoDataFrame.
    """
    run_info = run_info or {}
    out = Written(Path(out_dir))
    out.out_dir.mkdir(parents=True, exist_ok=True)
    d = diagnose_run(fields, class_counts, settings=settings, seed=seed, catalogue=catalogue)
    sel = d.selection
    write_csv(d.metrics, out.path("crop_metrics.csv"))
    write_csv(d.confusion, out.path("confusion_matrix.csv"), index=True)
    write_csv(d.pixel_confusion, out.path("confusion_matrix_pixels.csv"), index=True)
    write_csv(d.pairs, out.path("confusion_pairs.csv"), decimals=3)
    write_csv(with_rule(d.flagged, settings), out.path("underperforming_crops.csv"), decimals=3)
    write_csv(plan_table(sel.plan, settings), out.path("label_plan.csv"), decimals=3)
    crs = map_window.crs if map_window is not None else lookup(run_info, "inputs", "raster", "crs")
    for name, table in (("fields_to_label", with_reasons(sel.picks, settings)), ("evaluation_fields", sel.evaluation)):
        write_csv(table, out.path(f"{name}.csv"), decimals=_field_decimals(table))
        _write_layer(table, fields, out.path(f"{name}.gpkg"), layer=name, crs=crs, geometries=geometries)
    images = _images(d, settings, map_window)
    for name, image in images.items():
        out.path(name).write_bytes(image.png)
    title, blocks = build_report(d, images, settings=settings, run_info=run_info, seed=seed)
    out.path("report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
    out.path("report.html").write_text(render_html(title, blocks), encoding="utf-8")
    return out.paths
