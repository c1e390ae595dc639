"""The diagnosis of one AOI for a notebook or a script: `diagnose(results)` and the `Diagnosis` it returns (every
table of a run's CSV files as DataFrames, and the HTML report). Loaded on first use of `cropmon.diagnose`: it
imports scikit-learn and matplotlib, which `cropmon.run` does not need on the client."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cropmon import errors, manifest
from cropmon.analysis import diagnose as diagnose_mod
from cropmon.analysis.accuracy import ASSESSMENT_COLUMNS
from cropmon.analysis.settings import DiagnosisSettings
from cropmon.analysis.unlabelled import QUOTA_COLUMNS
from cropmon.engine.job import FieldResults
from cropmon.report import active, sections
from cropmon.report.document import Document
from cropmon.report.map_window import map_window
from cropmon.report.single import report_document
from cropmon.report.wording import plan_table, with_reasons, with_rule

__all__ = ["Diagnosis", "diagnose"]


@dataclass(frozen=True)
class Diagnosis(diagnose_mod.Diagnosis):
    """The diagnosis of one AOI (every number of the run's report), as DataFrames, and its report.

    `crop_metrics`, `underperforming`, `label_plan`, `fields_to_label`, `evaluation_fields`, `confusion_matrix`,
    `pixel_confusion_matrix`, `accuracy_assessment`, `error_matrix_area`, `suspect_labels`, `unlabelled_to_label`,
    `unlabelled_quotas` and `field_uncertainty` are the tables of the files of a run (same columns, unrounded;
    without any ground truth only the last three, `fields_to_label` and the mapped area are more than empty);
    `has_labels` says which; `ranking` holds what the uncertainty ranking finds of the errors (with GT).
    `report()` is the HTML report, which a notebook cell displays; `overall` and `caveats` hold the headline
    numbers; `accuracy` the whole assessment (analysis/accuracy.AccuracyAssessment: also the standard errors of the
    matrix and the design).
    """

    results: FieldResults | None = None

    @property
    def crop_metrics(self) -> pd.DataFrame:
        return self.metrics

    @property
    def underperforming(self) -> pd.DataFrame:
        return with_rule(self.flagged, self.settings)

    @property
    def label_plan(self) -> pd.DataFrame:
        return plan_table(self.selection.plan, self.settings)

    @property
    def fields_to_label(self) -> pd.DataFrame:
        """The fields to label next (fields_to_label.csv): the GT plan's picks; without any ground truth the
        picks among the unlabelled fields, ranked by the acquisition score (`unlabelled_to_label`)."""
        if not self.has_labels:
            return self.unlabelled_to_label
        return with_reasons(self.selection.picks, self.settings)

    @property
    def unlabelled_to_label(self) -> pd.DataFrame:
        """The picks among the fields without a usable label (empty when every field has one)."""
        return active.unlabelled_picks(self)

    @property
    def unlabelled_quotas(self) -> pd.DataFrame:
        """Per predicted class: area share, weight, quota and status of the plan without labels
        (unlabelled_quotas.csv; empty when every field has a label)."""
        return self.unlabelled.quotas if self.unlabelled is not None else pd.DataFrame(columns=list(QUOTA_COLUMNS))

    @property
    def field_uncertainty(self) -> pd.DataFrame:
        """Every field's uncertainty scores (field_uncertainty.parquet; analysis/uncertainty.py)."""
        if self.results is None:
            return self.uncertainty
        return active.field_uncertainty_table(self, self.results.table)

    @property
    def suspect_labels(self) -> pd.DataFrame:
        """GT labels a confident, pure prediction disagrees with, ranked (suspect_labels.csv)."""
        return self.suspects

    @property
    def evaluation_fields(self) -> pd.DataFrame:
        return self.selection.evaluation

    @property
    def confusion_matrix(self) -> pd.DataFrame:
        return self.confusion

    @property
    def pixel_confusion_matrix(self) -> pd.DataFrame:
        return self.pixel_confusion

    @property
    def accuracy_assessment(self) -> pd.DataFrame:
        """Per class: mapped and error-adjusted area (ha) with its interval, user's and producer's accuracy with
        intervals, sampled fields and pixels; then the overall row (accuracy_assessment.csv). Empty when the
        results carry no mapped area."""
        return self.accuracy.table if self.accuracy is not None else pd.DataFrame(columns=list(ASSESSMENT_COLUMNS))

    @property
    def error_matrix_area(self) -> pd.DataFrame:
        """The error matrix in estimated area proportions, map rows x reference columns (error_matrix_area.csv)."""
        return self.accuracy.error_matrix if self.accuracy is not None else pd.DataFrame()

    def report(self) -> Document:
        """The report (headline, underperforming crops, confusions, figures, plan, caveats), as in report.html."""
        info: dict[str, Any] = {}
        window = None
        if self.results is not None:
            info = {"inputs": {"raster": self.results.raster.as_manifest(),
                               "fields": self.results.table.attrs.get("source", {}),
                               "classes": self.catalogue.as_manifest()},
                    "fields": manifest.field_counts(self.results)}  # fmt: skip
            window = map_window(self.results)
        return report_document(self, run_info=info, map_window=window)

    def _repr_html_(self) -> str:
        """In a notebook: the headline and the underperforming crops (the whole report: `.report()`)."""
        if not self.has_labels:
            blocks = active.headline_without_labels(self, self.settings, {})
            return Document("Crop diagnosis without ground truth (summary; .report() for the whole report)",
                            blocks).html
        blocks = [*sections.headline(self, self.settings), *sections.underperforming(self, self.settings)]
        return Document("Crop diagnosis (summary; .report() for the whole report)", blocks).html


def diagnose(results: FieldResults, *, settings: DiagnosisSettings | Mapping[str, Any] | None = None,
             seed: int = 0) -> Diagnosis:
    """Per-crop metrics with 95 % intervals, confusions, underperforming crops, the active-learning plan.

    `settings`: the thresholds (`DiagnosisSettings`, or a mapping like the config file's [diagnosis] table);
    `seed`: the plan's tie-breaks. The classes are the results' own catalogue.

    >>> d = cropmon.diagnose(results, settings={"min_agreement": 0.8})  # doctest: +SKIP
    >>> d.underperforming[["crop", "severity", "certainty", "agreement_score", "agreement_ci_high"]]  # doctest: +SKIP
    >>> d.report()  # in a notebook: the HTML report  # doctest: +SKIP
    """
    if not isinstance(results, FieldResults):
        raise errors.ConfigError(f"diagnose() takes cropmon.analyse's FieldResults, not a {type(results).__name__}",
                                 fix="results = cropmon.analyse(raster, fields); cropmon.diagnose(results)")
    if not isinstance(settings, DiagnosisSettings):
        settings = DiagnosisSettings.from_mapping(settings or {})
    base = diagnose_mod.diagnose_run(results.table, results.class_counts, settings=settings, seed=seed,
                                     catalogue=results.catalogue, mapped_area=results.mapped_area,
                                     in_population=results.in_population)
    return Diagnosis(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, results=results)
