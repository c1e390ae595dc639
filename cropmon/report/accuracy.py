"""The accuracy assessment in words, tables and run.json: map accuracy and crop areas with their intervals
(diagnosis/accuracy.py), the honest statement of what they assume, and its files (accuracy_assessment.csv,
error_matrix_area.csv, mapped_area.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropmon.diagnosis.accuracy import OVERALL, AccuracyAssessment
from cropmon.io.outputs import write_csv
from cropmon.report.document import Block, Bullets, Heading, Image, Paragraph, Table, names, strong

ACCURACY_FILES: tuple[str, ...] = ("accuracy_assessment.csv", "error_matrix_area.csv")
TOP_ROWS = 12  # crops in the report's table (the CSV has every class)

ASSUMPTION = (
    "The ground-truth fields are not a probability sample of the AOI. These estimates treat the pixels of the GT"
    " fields, within each map class, as representative of all the pixels the map gives that class (the GT is"
    " representative of its map class)."
)
WHEN_IT_FAILS = (
    "They are biased when that fails: fields collected along roads or where access is easy, crops the labelling"
    " team skips or under-samples, and the map's pixels outside any field (roads, woods, villages), which the map"
    " gives a crop too while no GT field says what they are (restrict the population with --aoi-mask, e.g. a"
    " cropland mask). A map class with mapped pixels but no sampled pixel cannot be assessed and is left out of the"
    " population. For a design-based estimate, label a probability sample: the held-back evaluation set"
    " (evaluation_fields.csv) is one, and `cropmon compare` estimates from it."
)


def design_statement(design: dict[str, Any]) -> str:
    """The estimator and the sample in one paragraph, from the numbers."""
    left = {k: v for k, v in design.get("fields_left_out", {}).items() if v}
    left_text = "; ".join(f"{v:,} with {k.replace('_', ' ')}" for k, v in left.items())
    level = 100 * design.get("level", 0.95)
    return (
        f"Population: the {design['population']} ({design['mapped_ha']:,.0f} ha mapped, {design['assessed_ha']:,.0f}"
        f" ha assessed), stratified by {design['strata']}. Sample: {design['n_fields']:,} GT fields"
        f" ({design['n_pixels']:,} pixels), each field a cluster of pixels whose reference is its label"
        + (f"; left out: {left_text}" if left_text else "")
        + f". Estimator: {design['estimator']} (Olofsson et al. 2014, Stehman 2014); {level:g} % intervals are"
        " +- z SE; no kappa (Pontius & Millones 2011)."
    )


def _interval(value: float, low: float, high: float, *, digits: int = 2) -> str:
    if pd.isna(value):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _ha(value: float, low: float | None = None, high: float | None = None) -> str:
    if pd.isna(value):
        return "n/a"
    text = f"{value:,.0f}"
    return text if low is None or pd.isna(low) else f"{text} [{low:,.0f}, {high:,.0f}]"


def shown_table(a: AccuracyAssessment, top: int = TOP_ROWS) -> pd.DataFrame:
    """The report's view: the largest crops (mapped or adjusted), areas and accuracies with their intervals."""
    t = a.table.loc[a.table["crop"] != OVERALL].copy()
    t["_size"] = np.fmax(t["mapped_ha"].to_numpy(float), t["adjusted_ha"].fillna(0).to_numpy(float))
    t = t.sort_values("_size", ascending=False).head(top)
    return pd.DataFrame({
        "crop": t["crop"],
        "mapped ha": [_ha(v) for v in t["mapped_ha"]],
        "adjusted ha [95 %]": [_ha(v, lo, hi) for v, lo, hi in
                               zip(t["adjusted_ha"], t["adjusted_ha_ci_low"], t["adjusted_ha_ci_high"], strict=True)],
        "user's accuracy": [_interval(v, lo, hi) for v, lo, hi in
                            zip(t["users_accuracy"], t["users_accuracy_ci_low"], t["users_accuracy_ci_high"],
                                strict=True)],
        "producer's accuracy": [_interval(v, lo, hi) for v, lo, hi in
                                zip(t["producers_accuracy"], t["producers_accuracy_ci_low"],
                                    t["producers_accuracy_ci_high"], strict=True)],
        "fields": t["n_fields"].to_numpy(),
        "note": t["note"].to_numpy(),
    })


def biased_crops(a: AccuracyAssessment) -> pd.DataFrame:
    """Crops whose mapped area lies outside the adjusted area's interval, largest gap first."""
    t = a.table.loc[(a.table["crop"] != OVERALL) & a.table["adjusted_ha"].notna()]
    outside = (t["mapped_ha"] < t["adjusted_ha_ci_low"]) | (t["mapped_ha"] > t["adjusted_ha_ci_high"])
    gap = (t["mapped_ha"] - t["adjusted_ha"]).abs()
    return t.loc[outside].assign(_gap=gap).sort_values("_gap", ascending=False).drop(columns="_gap")


def accuracy_blocks(a: AccuracyAssessment | None, image: Image | None) -> list[Block]:
    """The report's section: the estimates, the design and what it assumes, the table and the figure."""
    blocks: list[Block] = [Heading("Map accuracy and crop areas (Olofsson et al. 2014, Stehman 2014)")]
    if a is None:
        return [*blocks, Paragraph("No mapped area was counted for this run, so no accuracy assessment is made.")]
    o = a.overall
    if a.design["n_fields"] == 0:
        return [*blocks, Paragraph("No GT field enters the sample (" + design_statement(a.design) + "): nothing to"
                                   " estimate."), Paragraph(ASSUMPTION + " " + WHEN_IT_FAILS)]
    text = (
        f"Overall accuracy, as an estimated share of the assessed area: {_interval(o['users_accuracy'], o['users_accuracy_ci_low'], o['users_accuracy_ci_high'], digits=3)}"  # noqa: E501
        f" ({100 * a.level:g} % interval). Unlike the field-level agreement above, these are area estimates"
        " corrected for the map's errors: a crop's error-adjusted area is the area the GT says it covers, its"
        " user's accuracy the share of its mapped area that is right, its producer's accuracy the share of its"
        " real area that the map finds."
    )
    bullets = []
    biased = biased_crops(a)
    if len(biased):
        parts = [f"{r.crop} (mapped {r.mapped_ha:,.0f} ha, adjusted {_ha(r.adjusted_ha, r.adjusted_ha_ci_low, r.adjusted_ha_ci_high)})"  # noqa: E501
                 for r in biased.head(5).itertuples()]
        bullets.append(f"{len(biased)} crops' mapped area lies outside the interval of their adjusted area, so the"
                       f" pixel count is biased by the map's own errors: {'; '.join(parts)}.")
    else:
        bullets.append("Every crop's mapped area lies inside the interval of its adjusted area.")
    not_assessed = a.design.get("not_assessed", {})
    if not_assessed:
        total = sum(not_assessed.values())
        bullets.append(f"Not assessed (mapped, but no sampled pixel; left out of the population): "
                       f"{names(list(not_assessed))} ({total:,.0f} ha).")
    if a.design.get("one_field_strata"):
        bullets.append(f"One field only (no variance estimate; their intervals are too narrow): "
                       f"{names(a.design['one_field_strata'])}.")
    rows = a.table.loc[a.table["crop"] != OVERALL]
    absent = rows.loc[(rows["mapped_ha"] > 0) & (rows["n_reference_fields"] == 0) & (rows["n_fields"] > 0)]
    if len(absent):
        bullets.append(f"Mapped but in no sampled GT field: {names(absent['crop'].tolist())}"
                       f" ({absent['mapped_ha'].sum():,.0f} ha mapped). Their adjusted area is 0 by construction:"
                       " the reference comes from the GT, so a crop the labelling team never records cannot be found;"
                       " its pixels count for the crops the GT fields of that map class carry.")
    never = a.table.loc[a.table["note"] == "never_mapped", "crop"].tolist()
    if never:
        bullets.append(f"In the GT but never mapped (user's accuracy undefined, producer's 0): {names(never)}.")
    blocks += [Paragraph(text), Bullets(bullets),
               Paragraph(strong("What this assumes.") + " " + ASSUMPTION + " " + WHEN_IT_FAILS),
               Paragraph(design_statement(a.design)),
               Table(shown_table(a), f"the {min(TOP_ROWS, len(a.table) - 1)} largest crops;"
                                     " accuracy_assessment.csv has every class, error_matrix_area.csv the matrix")]
    if image is not None:
        blocks.append(image)
    return blocks


def accuracy_manifest(a: AccuracyAssessment | None) -> dict[str, Any]:
    """What run.json says of the assessment: the design, what it assumes, and the overall numbers."""
    if a is None:
        return {}
    o = a.overall
    return {
        "design": a.design,
        "assumption": ASSUMPTION,
        "fails_when": WHEN_IT_FAILS,
        "overall_accuracy": _rounded(o["users_accuracy"]),
        "overall_accuracy_se": _rounded(o["users_accuracy_se"]),
        "overall_accuracy_ci": [_rounded(o["users_accuracy_ci_low"]), _rounded(o["users_accuracy_ci_high"])],
        "files": list(ACCURACY_FILES),
    }


def _rounded(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 5)


def error_matrix_table(a: AccuracyAssessment) -> pd.DataFrame:
    """error_matrix_area.csv: area proportions, map rows x reference columns, with their totals (Olofsson's
    table: the row totals are the mapped shares W_k, the column totals the adjusted ones)."""
    m = a.error_matrix.copy()
    m["total"] = m.sum(axis=1)
    m.loc["total"] = m.sum(axis=0)
    m.index.name = "map \\ reference"
    return m


def write_accuracy(a: AccuracyAssessment | None, out_dir: Path) -> list[str]:
    """accuracy_assessment.csv and error_matrix_area.csv (nothing without an assessment)."""
    if a is None:
        return []
    out_dir = Path(out_dir)
    write_csv(a.table, out_dir / "accuracy_assessment.csv", decimals=5)
    write_csv(error_matrix_table(a), out_dir / "error_matrix_area.csv", index=True, decimals=6)
    return list(ACCURACY_FILES)


def write_mapped_area(mapped_area: pd.DataFrame, out_dir: Path) -> list[str]:
    """mapped_area.csv: the map's own census per class (with or without ground truth)."""
    write_csv(mapped_area, Path(out_dir) / "mapped_area.csv", decimals=4)
    return ["mapped_area.csv"]

