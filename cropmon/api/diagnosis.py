"""The diagnosis of one AOI for a notebook or a script: `diagnose(results)` gives the `Diagnosis` (its numbers as
DataFrames), `tables_of(d)` every table of a run's files with their words, `report_of(d)` the report.
Loaded on first use of `cropmon.diagnose`: it imports scikit-learn and matplotlib, which `cropmon.run` does not
need on the client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from cropmon import errors, manifest
from cropmon.diagnosis.diagnose import Diagnosis, diagnose_run
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.engine.job import FieldResults
from cropmon.report import active
from cropmon.report.document import Document
from cropmon.report.map_window import map_window
from cropmon.report.single import report_document
from cropmon.report.wording import plan_table, with_reasons, with_rule

__all__ = ["Diagnosis", "diagnose", "report_of", "tables_of"]


def diagnose(results: FieldResults, *, settings: DiagnosisSettings | Mapping[str, Any] | None = None,
             seed: int = 0) -> Diagnosis:
    """Per-crop metrics with 95 % intervals, confusions, underperforming crops, the active-learning plan.

    `settings`: the thresholds (`DiagnosisSettings`, or a mapping like the config file's [diagnosis] table);
    `seed`: the plan's tie-breaks. The classes are the results' own catalogue.

    >>> d = cropmon.diagnose(results, settings={"min_agreement": 0.8})  # doctest: +SKIP
    >>> d.underperforming[["crop", "severity", "certainty", "agreement_score", "agreement_ci_high"]]  # doctest: +SKIP
    >>> cropmon.report_of(d, results)  # in a notebook: the HTML report  # doctest: +SKIP
    """
    if not isinstance(results, FieldResults):
        raise errors.ConfigError(f"diagnose() takes cropmon.analyse's FieldResults, not a {type(results).__name__}",
                                 fix="results = cropmon.analyse(raster, fields); cropmon.diagnose(results)")
    if not isinstance(settings, DiagnosisSettings):
        settings = DiagnosisSettings.from_mapping(settings or {})
    return diagnose_run(results.table, results.class_counts, settings=settings, seed=seed,
                        catalogue=results.catalogue, mapped_area=results.mapped_area,
                        in_population=results.in_population)


def tables_of(d: Diagnosis, results: FieldResults | None = None) -> dict[str, pd.DataFrame]:
    """Every table of a run's files as the files have them (same columns, unrounded), by file name without its
    suffix: the Diagnosis' own tables and those with words (`underperforming_crops` with the rule,
    `label_plan` with each target's derivation, `fields_to_label` with each pick's reason). Without any ground
    truth `fields_to_label` holds the unlabelled fields' picks (as the run's file does). `field_uncertainty` has
    the fields' ids and labels from `results` (the analysed FieldResults); without it, the scores alone."""
    s = d.settings
    uncertainty = active.field_uncertainty_table(d, results.table) if results is not None else d.uncertainty
    return {
        "crop_metrics": d.crop_metrics,
        "underperforming_crops": with_rule(d.underperforming, s),
        "label_plan": plan_table(d.selection.plan, s),
        "fields_to_label": with_reasons(d.selection.picks, s) if d.has_labels else d.unlabelled_to_label,
        "evaluation_fields": d.evaluation_fields,
        "confusion_matrix": d.confusion_matrix,
        "confusion_matrix_pixels": d.pixel_confusion_matrix,
        "confusion_pairs": d.pairs,
        "accuracy_assessment": d.accuracy_assessment,
        "error_matrix_area": d.error_matrix_area,
        "suspect_labels": d.suspect_labels,
        "unlabelled_to_label": d.unlabelled_to_label,
        "unlabelled_quotas": d.unlabelled_quotas,
        "field_uncertainty": uncertainty if uncertainty is not None else pd.DataFrame(),
    }


def report_of(d: Diagnosis, results: FieldResults | None = None) -> Document:
    """The report (headline, underperforming crops, confusions, figures, plan, caveats), as in report.html; a
    notebook cell shows it. With `results` (the analysed FieldResults) it also tells the inputs and draws a
    window of the map."""
    info: dict[str, Any] = {}
    window = None
    if results is not None:
        info = {"inputs": {"raster": results.raster.as_manifest(),
                           "fields": results.table.attrs.get("source", {}),
                           "classes": d.catalogue.as_manifest()},
                "fields": manifest.field_counts(results)}  # fmt: skip
        window = map_window(results)
    return report_document(d, run_info=info, map_window=window)
