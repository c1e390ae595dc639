"""Which crops underperform, how badly (a severity tier) and why (reason codes), from the per-crop metrics.

The rule, with every threshold in `DiagnosisSettings` (report/wording.rule_text spells it out with the numbers for
the CSV and the report):

- a crop is *underperforming* when its agreement < `min_agreement`, or its F1 over all fields < `min_f1`, or the
  mean confidence over its GT fields < `min_confidence`;
- tier: `critical` when min(agreement, F1) < `critical_score`; else `high` when it is both wrong (agreement or F1
  low) and unsure (confidence low); else `medium` when only wrong; `low` when only unsure. A crop with fewer than
  `min_fields` GT fields drops one tier: a handful of fields is weak evidence;
- certainty, from the 95 % intervals of the scores (`intervals`): `certain` when the interval of a failed measure
  lies wholly under its threshold (its upper bound is below it), `possible` when only the point estimate does,
  `too_few_fields` when it is not certain and the crop has fewer than `min_fields` GT fields (too few to tell).

Reason codes, the most telling first: `never_predicted` (no field is predicted as the crop), `absorbed_by:<crop>`
(that crop takes >= `absorbed_share` of its fields), `over_predicted` (predicted >= `over_prediction_ratio` times
as often as it is in the GT), `low_precision` (precision < `min_precision`, or F1 fails while agreement passes),
`scattered_errors` (agreement fails with no single absorber), `low_confidence`, `too_few_fields`.

`diagnose_run` gathers every number of one run's diagnosis (metrics, confusions, underperforming crops, the plan,
the caveats) into one `Diagnosis`, which the report words and draws.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

import numpy as np
import pandas as pd

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis import accuracy, metrics, select
from cropmon.diagnosis.blocks import block_agreement
from cropmon.diagnosis.intervals import verdict
from cropmon.diagnosis.metrics import row_shares
from cropmon.diagnosis.ranking import TopKErrors, errors_in_top_k
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.diagnosis.suspects import SUSPECT_COLUMNS, suspect_labels
from cropmon.diagnosis.uncertainty import CLASS_COLUMNS, by_predicted_class, field_uncertainty
from cropmon.diagnosis.unlabelled import PICK_COLUMNS, QUOTA_COLUMNS, UnlabelledSelection, select_unlabelled
from cropmon.schema import has_field_id

TIERS: tuple[str, ...] = ("critical", "high", "medium", "low")
CERTAINTIES: tuple[str, ...] = ("certain", "possible", "too_few_fields")
UNDERPERFORMING_COLUMNS: tuple[str, ...] = (
    "crop", "severity", "certainty", "reason", "reasons", "failed", "certainly_failed", "num_fields", "n_predicted",
    "agreement_score", "agreement_ci_low", "agreement_ci_high", "f1", "f1_ci_low", "f1_ci_high", "precision",
    "conf_mean", "conf_mean_ci_low", "conf_mean_ci_high", "wrong_fields", "false_alarms", "absorbed_by",
    "absorbed_share",
)  # fmt: skip
# measure flag -> (the interval's columns, the setting holding its threshold)
MEASURES: dict[str, tuple[str, str, str]] = {
    "low_agreement": ("agreement_ci_low", "agreement_ci_high", "min_agreement"),
    "low_f1": ("f1_ci_low", "f1_ci_high", "min_f1"),
    "low_confidence": ("conf_mean_ci_low", "conf_mean_ci_high", "min_confidence"),
}


def _absorbers(confusion: pd.DataFrame, share: float) -> dict[str, list[tuple[str, float]]]:
    """For each GT crop, the other crops that take at least `share` of its fields, largest first."""
    shares = row_shares(confusion)
    out: dict[str, list[tuple[str, float]]] = {}
    for crop, row in shares.iterrows():
        row = row.drop(crop)
        big = row[(row > 0) & (row >= share)].sort_values(ascending=False, kind="stable")
        out[str(crop)] = [(str(k), float(v)) for k, v in big.items()]
    return out


def _reasons(
    row: pd.Series, absorbed: list[tuple[str, float]], flags: dict[str, bool], s: DiagnosisSettings
) -> list[str]:
    """Reason codes of one flagged crop, the most telling first."""
    codes = []
    if row["num_fields"] > 0 and row["n_predicted"] == 0:
        codes.append("never_predicted")
    codes += [f"absorbed_by:{crop}" for crop, _ in absorbed]
    if row["n_predicted"] > row["num_fields"] and row["n_predicted"] >= s.over_prediction_ratio * row["num_fields"]:
        codes.append("over_predicted")
    if row["precision"] < s.min_precision or (flags["low_f1"] and not flags["low_agreement"]):
        codes.append("low_precision")  # F1 low while agreement (recall) is fine: precision is what fails
    if flags["low_agreement"] and not absorbed and row["n_predicted"] > 0:
        codes.append("scattered_errors")
    if flags["low_confidence"]:
        codes.append("low_confidence")
    if row["num_fields"] < s.min_fields:
        codes.append("too_few_fields")
    return codes


def _tier(flags: dict[str, bool], score: float, few: bool, s: DiagnosisSettings) -> str:
    """Severity tier of a flagged crop (see the module docstring)."""
    wrong = flags["low_agreement"] or flags["low_f1"]
    if wrong and score < s.critical_score:
        tier = "critical"
    elif wrong:
        tier = "high" if flags["low_confidence"] else "medium"
    else:
        tier = "low"
    return TIERS[min(TIERS.index(tier) + few, len(TIERS) - 1)]


def certainly_failed(row: pd.Series, flags: dict[str, bool], s: DiagnosisSettings) -> list[str]:
    """The failed measures whose whole 95 % interval lies under the threshold."""
    out = []
    for flag, (low, high, threshold) in MEASURES.items():
        if flags[flag] and verdict(row[low], row[high], getattr(s, threshold)) == "below":
            out.append(flag)
    return out


def certainty(certain: list[str], num_fields: int, s: DiagnosisSettings) -> str:
    """certain | too_few_fields | possible (see the module docstring)."""
    if certain:
        return "certain"
    return "too_few_fields" if num_fields < s.min_fields else "possible"


def underperforming_crops(
    metrics_df: pd.DataFrame, confusion_df: pd.DataFrame, settings: DiagnosisSettings
) -> pd.DataFrame:
    """The crops that fail the rule, worst tier first, with severity, reason codes and the numbers."""
    absorbers = _absorbers(confusion_df, settings.absorbed_share)
    rows = []
    for _, m in metrics_df.iterrows():
        flags = {
            "low_agreement": bool(m["agreement_score"] < settings.min_agreement),
            "low_f1": bool(m["f1"] < settings.min_f1),
            "low_confidence": bool(m["conf_mean"] < settings.min_confidence),
        }
        if not any(flags.values()):
            continue
        absorbed = absorbers.get(m["crop"], [])
        codes = _reasons(m, absorbed, flags, settings)
        score = float(np.nanmin([m["agreement_score"], m["f1"]]))
        sure = certainly_failed(m, flags, settings)
        rows.append(
            {
                "crop": m["crop"],
                "severity": _tier(flags, score, m["num_fields"] < settings.min_fields, settings),
                "certainty": certainty(sure, int(m["num_fields"]), settings),
                "reason": codes[0],
                "reasons": ";".join(codes),
                "failed": ";".join(k for k, v in flags.items() if v),
                "certainly_failed": ";".join(sure),
                "num_fields": int(m["num_fields"]),
                "n_predicted": int(m["n_predicted"]),
                **{c: m[c] for c in ("agreement_score", "agreement_ci_low", "agreement_ci_high", "f1", "f1_ci_low",
                                     "f1_ci_high", "precision", "conf_mean", "conf_mean_ci_low", "conf_mean_ci_high")},
                "wrong_fields": int(m["num_fields"] - m["n_correct"]),
                "false_alarms": int(m["n_predicted"] - m["n_correct"]),
                "absorbed_by": absorbed[0][0] if absorbed else None,
                "absorbed_share": absorbed[0][1] if absorbed else np.nan,
            }
        )
    table = pd.DataFrame(rows, columns=list(UNDERPERFORMING_COLUMNS))
    table["_tier"] = table["severity"].map(TIERS.index)
    table["_errors"] = table["wrong_fields"] + table["false_alarms"]
    table = table.sort_values(["_tier", "_errors", "crop"], ascending=[True, False, True])
    return table.drop(columns=["_tier", "_errors"]).reset_index(drop=True)


@dataclass(frozen=True)
class Diagnosis:
    """Every number of the diagnosis of one AOI (what `cropmon.diagnose` returns, and the report words and draws).

    The tables of a run's files that need no words are properties named like the files (same columns, unrounded):
    `crop_metrics`, `confusion_matrix`, `pixel_confusion_matrix`, `evaluation_fields`, `suspect_labels`,
    `accuracy_assessment`, `error_matrix_area`, `unlabelled_to_label`, `unlabelled_quotas`; without any ground truth
    only the last two and the mapped area are more than empty (`has_labels` says which). `underperforming` holds the
    underperforming crops, `selection` the plan (its picks, its held-back evaluation fields), `overall` and `caveats`
    the headline numbers, `accuracy` the whole assessment (also the standard errors of the matrix and the design),
    `ranking` what the uncertainty ranking finds of the errors (with GT). The tables with their words (the rule, the
    derivations, the reasons) and the report are the report layer's: `cropmon.tables_of(d)`, `cropmon.report_of(d)`.
    """

    metrics: pd.DataFrame
    confusion: pd.DataFrame
    pixel_confusion: pd.DataFrame
    pairs: pd.DataFrame
    underperforming: pd.DataFrame
    selection: select.Selection
    blocks: pd.DataFrame
    overall: dict[str, float]
    caveats: Caveats
    sums: pd.DataFrame  # metrics.crop_sums: the additive per-crop statistics (for a pooled view of many AOIs)
    settings: DiagnosisSettings = field(default_factory=DiagnosisSettings)
    seed: int = 0
    catalogue: Catalogue = U0C
    accuracy: accuracy.AccuracyAssessment | None = None  # map accuracy and areas (None without a mapped area or GT)
    has_labels: bool = True  # some field carries a usable label (a class of the catalogue): a run with GT
    uncertainty: pd.DataFrame | None = None  # uncertainty.field_uncertainty of every field (the table's index)
    uncertainty_by_class: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(CLASS_COLUMNS)))
    suspects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SUSPECT_COLUMNS)))
    ranking: TopKErrors | None = None  # what the uncertainty ranking finds of the model's errors (with GT only)
    unlabelled: UnlabelledSelection | None = None  # the plan of the fields without a usable label (when any)
    mapped_area: pd.DataFrame | None = None  # the map's area per class (FieldResults.mapped_area; ~32 rows)

    @property
    def crop_metrics(self) -> pd.DataFrame:
        """Per crop in the GT or predicted: the reference columns, the 95 % intervals, the diagnostics."""
        return self.metrics

    @property
    def confusion_matrix(self) -> pd.DataFrame:
        """Field counts, GT rows x predicted columns (confusion_matrix.csv)."""
        return self.confusion

    @property
    def pixel_confusion_matrix(self) -> pd.DataFrame:
        """Pixel counts, GT rows x predicted columns (confusion_matrix_pixels.csv)."""
        return self.pixel_confusion

    @property
    def evaluation_fields(self) -> pd.DataFrame:
        """The held-back probability sample (evaluation_fields.csv)."""
        return self.selection.evaluation

    @property
    def suspect_labels(self) -> pd.DataFrame:
        """GT labels a confident, pure prediction disagrees with, ranked (suspect_labels.csv)."""
        return self.suspects

    @property
    def accuracy_assessment(self) -> pd.DataFrame:
        """Per class: mapped and error-adjusted area (ha) with its interval, user's and producer's accuracy with
        intervals, sampled fields and pixels; then the overall row (accuracy_assessment.csv). Empty when the
        results carry no mapped area."""
        return self.accuracy.table if self.accuracy is not None else pd.DataFrame(
            columns=list(accuracy.ASSESSMENT_COLUMNS))

    @property
    def error_matrix_area(self) -> pd.DataFrame:
        """The error matrix in estimated area proportions, map rows x reference columns (error_matrix_area.csv)."""
        return self.accuracy.error_matrix if self.accuracy is not None else pd.DataFrame()

    @property
    def unlabelled_to_label(self) -> pd.DataFrame:
        """The picks among the fields without a usable label (empty when every field has one)."""
        return self.unlabelled.picks if self.unlabelled is not None else pd.DataFrame(columns=list(PICK_COLUMNS))

    @property
    def unlabelled_quotas(self) -> pd.DataFrame:
        """Per predicted class: area share, weight, quota and status of the plan without labels
        (unlabelled_quotas.csv; empty when every field has a label)."""
        return self.unlabelled.quotas if self.unlabelled is not None else pd.DataFrame(columns=list(QUOTA_COLUMNS))

    def _repr_html_(self) -> str:
        """In a notebook: the headline numbers and the underperforming crops, as tables (or, without any ground
        truth, the first fields to label); the whole report is `cropmon.report_of(d)`."""
        n_fields, n_scored = self.caveats["n_fields"], self.caveats["n_scored"]
        head = "Crop diagnosis" if self.has_labels else "Crop diagnosis without ground truth"
        parts = [f"<h3>{head}</h3>", f"<p>{n_fields:,} fields, {n_scored:,} scored"
                 " (the whole report: <code>cropmon.report_of(d)</code>)</p>"]
        if self.has_labels:
            parts += [pd.DataFrame([self.overall]).to_html(index=False, float_format="{:.3f}".format),
                      "<h4>Underperforming crops</h4>",
                      self.underperforming[["crop", "severity", "certainty", "reason", "num_fields", "agreement_score",
                                    "agreement_ci_low", "agreement_ci_high", "f1"]].to_html(
                          index=False, float_format="{:.2f}".format)]
        else:
            parts += ["<h4>Fields to label first</h4>", self.unlabelled_to_label.head(10).to_html(index=False)]
        return "\n".join(parts)

    def without_candidates(self) -> Diagnosis:
        """The same diagnosis without its per-field tables (the plan's candidates, every clean field of a planned
        crop; the fields' uncertainty; the pool of unlabelled fields): what the pictures and the report read, small
        enough to send to other workers."""
        unlabelled = self.unlabelled
        if unlabelled is not None:
            unlabelled = dataclasses.replace(unlabelled, pool=unlabelled.pool.iloc[:0])
        return dataclasses.replace(
            self, selection=dataclasses.replace(self.selection, candidates=self.selection.candidates.iloc[:0]),
            uncertainty=None, unlabelled=unlabelled,
        )


def diagnose_run(
    fields: pd.DataFrame, class_counts: pd.DataFrame, *, settings: DiagnosisSettings, seed: int = 0,
    catalogue: Catalogue = U0C, mapped_area: pd.DataFrame | None = None, in_population: np.ndarray | None = None,
) -> Diagnosis:
    """Metrics, confusions, underperforming crops, the plan and the caveats of one per-field table; with the map's
    census (`mapped_area`, FieldResults.mapped_area) also the accuracy assessment (diagnosis/accuracy.py),
    restricted to the fields `in_population` when an AOI mask gave one.

    Every field's uncertainty (diagnosis/uncertainty.py); with ground truth the suspect labels (kept out of the plan
    unless `exclude_suspects` is off) and what the ranking finds (`ranking_k`); where fields carry no usable label,
    their own plan (diagnosis/unlabelled.py), its quotas from the mapped area per predicted class (without a mapped
    area: the fields' own pixels per predicted class). A table without any usable label gives empty metrics, no
    accuracy assessment (it needs labelled fields) and the unlabelled plan alone."""
    has_labels = bool(fields["gt_class"].notna().any())
    confusion = metrics.confusion_matrix(fields, catalogue)
    pixel_confusion = metrics.pixel_confusion_matrix(fields, class_counts, catalogue)
    sums = metrics.crop_sums(fields, catalogue)
    crop_table = metrics.crop_metrics(fields, class_counts, confusion=confusion, pixel_confusion=pixel_confusion,
                                      sums=sums, catalogue=catalogue)
    flagged = underperforming_crops(crop_table, confusion, settings)
    uncertainty = field_uncertainty(fields, class_counts, catalogue=catalogue)
    suspects = suspect_labels(fields, settings=settings, seed=seed, catalogue=catalogue)
    held_out = suspects.index if settings.exclude_suspects else None
    selection = select.plan_selection(fields, crop_table, flagged, confusion, settings=settings, seed=seed,
                                      catalogue=catalogue, held_out=held_out)
    scored = int(metrics.evaluable(fields).sum())
    ranking = errors_in_top_k(fields, uncertainty, k=settings.ranking_k, seed=seed, catalogue=catalogue) \
        if scored else None
    unlabelled = None
    if fields["gt_class"].isna().any():
        unlabelled = select_unlabelled(fields, class_counts, predicted_areas(class_counts, mapped_area),
                                       settings=settings, seed=seed, catalogue=catalogue, uncertainty=uncertainty)
    caveat = caveats(fields, crop_table, settings=settings)
    caveat["unlabelled_pool"] = len(unlabelled.pool) if unlabelled is not None else 0
    return Diagnosis(
        metrics=crop_table,
        confusion=confusion,
        pixel_confusion=pixel_confusion,
        pairs=metrics.confusion_pairs(confusion, mutual_share=settings.mutual_share, top=settings.max_confusion_pairs),
        underperforming=flagged,
        selection=selection,
        blocks=block_agreement(fields, selection.grid, catalogue),
        overall=metrics.overall(crop_table, pixel_confusion),
        caveats=caveat,
        sums=sums,
        settings=settings,
        seed=seed,
        catalogue=catalogue,
        accuracy=None if mapped_area is None or not has_labels else accuracy.assess(
            fields, class_counts, mapped_area, catalogue=catalogue, in_population=in_population),
        has_labels=has_labels,
        uncertainty=uncertainty,
        uncertainty_by_class=by_predicted_class(fields, uncertainty, catalogue=catalogue),
        suspects=suspects,
        ranking=ranking,
        unlabelled=unlabelled,
        mapped_area=mapped_area,
    )


def predicted_areas(class_counts: pd.DataFrame, mapped_area: pd.DataFrame | None) -> pd.Series:
    """The area per predicted class the plan without labels apportions by: the map's (`mapped_area`, ha), else the
    fields' own pixels per predicted class (a stand-in in pixels: only the shares count)."""
    if mapped_area is not None:
        return mapped_area.set_index("crop")["area_ha"].astype(float)
    return class_counts.sum().astype(float)


def ties_by_crop(fields: pd.DataFrame) -> dict[str, int]:
    """Fields with a tied majority per ground-truth crop (most first; "" for fields without a known crop)."""
    tied = fields.loc[fields["tie"].astype(bool), "gt_label"].astype(str).value_counts()
    return {str(crop): int(n) for crop, n in tied.items() if n > 0}


class Caveats(TypedDict):
    """What limits the numbers (`caveats`): counts of fields, by the reason they are left out or odd, and the
    crops seen on one side only. A dict (it is written to run.json as it is), with its keys checked."""

    n_fields: int
    n_scored: int  # fields the metrics score (metrics.evaluable)
    no_pixel: int
    no_pixel_by_geometry: dict[str, int]  # geometry status -> fields with no pixel
    unknown_label: int  # fields whose label is no alias of the catalogue
    unknown_label_examples: dict[str, int]  # the five most frequent such labels -> fields
    null_label: int
    variant_label: int  # labels matched only case- or whitespace-insensitively
    all_touched: int  # fields scored on GDAL's all-touched pixels (no pixel centre inside)
    tiny: int  # fields with pixels, fewer than settings.min_pixels
    ties: int
    ties_by_crop: dict[str, int]
    duplicate_id: int
    null_id: int
    repaired_geometry: int
    invalid_class_pixels: int
    invalid_confidence_pixels: int
    never_predicted: list[str]  # crops in the ground truth never predicted
    never_right: list[str]
    predicted_not_in_gt: dict[str, int]  # crop -> fields predicted so
    too_few_fields: list[str]  # crops with fewer ground-truth fields than settings.min_fields
    unlabelled_pool: NotRequired[int]  # fields without a label the plan may pick (set by `diagnose`)


def caveats(fields: pd.DataFrame, crop_table: pd.DataFrame, *, settings: DiagnosisSettings) -> Caveats:
    """What limits the numbers: fields left out of the metrics or of the plan, odd labels, crops seen on one side."""
    n_pixels = fields["n_pixels"]
    unknown = fields.loc[fields["label_status"] == "unknown", "normalized_label"].astype(str).value_counts()
    no_pixel = fields.loc[n_pixels == 0, "geometry_status"].value_counts()
    in_gt = crop_table["num_fields"] > 0
    return {
        "n_fields": len(fields),
        "n_scored": int(metrics.evaluable(fields).sum()),
        "no_pixel": int((n_pixels == 0).sum()),
        "no_pixel_by_geometry": {str(k): int(v) for k, v in no_pixel.items()},
        "unknown_label": int(unknown.sum()),
        "unknown_label_examples": {str(k): int(v) for k, v in unknown.head(5).items()},
        "null_label": int((fields["label_status"] == "null").sum()),
        "variant_label": int((fields["label_status"] == "variant").sum()),
        "all_touched": int((fields["pixel_rule"] == "all_touched").sum()),
        "tiny": int(((n_pixels > 0) & (n_pixels < settings.min_pixels)).sum()),
        "ties": int(fields["tie"].astype(bool).sum()),
        "ties_by_crop": ties_by_crop(fields),
        "duplicate_id": int(fields["duplicate_id"].astype(bool).sum()),
        "null_id": int((~has_field_id(fields["field_id"])).sum()),
        "repaired_geometry": int((fields["geometry_status"] == "repaired").sum()),
        "invalid_class_pixels": int(fields["n_invalid"].sum()),
        "invalid_confidence_pixels": int(fields["n_conf_invalid"].sum()),
        "never_predicted": list(crop_table.loc[in_gt & (crop_table["n_predicted"] == 0), "crop"]),
        "never_right": list(crop_table.loc[in_gt & (crop_table["n_correct"] == 0), "crop"]),
        "predicted_not_in_gt": dict(
            zip(crop_table.loc[~in_gt, "crop"], crop_table.loc[~in_gt, "n_predicted"], strict=True)
        ),
        "too_few_fields": list(crop_table.loc[in_gt & (crop_table["num_fields"] < settings.min_fields), "crop"]),
    }

