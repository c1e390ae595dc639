"""The report of one AOI and its files: tables (CSV), the field lists (CSV + GeoPackage), the pictures (PNG) and the
report (report.md, self-contained report.html).

`build_report` assembles the sections (report/sections.py: every sentence is built from the run's numbers) with the
figures; `report_document` gives the same page as a Document, for a notebook cell. Each writer takes what it needs
and writes into `out_dir`, so a run gives each its own task on the cluster (cropmon/tail.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from cropmon.diagnosis.diagnose import Diagnosis
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.io.outputs import write_csv
from cropmon.report import active, plots, sections
from cropmon.report.accuracy import accuracy_blocks, write_accuracy
from cropmon.report.caveats import caveats_section
from cropmon.report.document import Block, Document, Image, render_html, render_markdown
from cropmon.report.images import render_images
from cropmon.report.run_facts import RunFacts
from cropmon.report.wording import plan_table, with_reasons, with_rule


@dataclass
class Written:
    """Files written so far, by file name."""

    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        self.paths[name] = self.out_dir / name
        return self.paths[name]


def build_report(
    d: Diagnosis, images: dict[str, Image], *, settings: DiagnosisSettings, run_info: Mapping[str, Any], seed: int
) -> tuple[str, list[Block]]:
    """The report's title and blocks, in reading order."""
    facts = RunFacts.of(run_info)
    source = facts.raster_path or facts.fields_path
    twin = " (digital twin)" if facts.digital_twin else ""
    title = f"Crop diagnosis: {Path(source).name}{twin}" if source else "Crop diagnosis"
    if not d.has_labels:
        return f"{title}, without ground truth", [
            *active.headline_without_labels(d, settings, run_info),
            *active.predicted_blocks(d, settings),
            *([images["map_window.png"]] if "map_window.png" in images else []),
            *active.plan_without_labels(d, settings),
            *active.cannot_tell_blocks(d),
            *caveats_section(d, run_info, settings),
            *sections.settings_blocks(run_info, settings, seed),
        ]
    return title, [
        *sections.headline(d, settings),
        *sections.underperforming(d, settings),
        *sections.confusions(d, images),
        *sections.figures(d, images),
        *accuracy_blocks(d.accuracy, images.get("area_adjusted.png")),
        *sections.plan(d, settings),
        *active.active_section(d, settings),
        *caveats_section(d, run_info, settings),
        *sections.settings_blocks(run_info, settings, seed),
    ]


def report_document(d: Diagnosis, *, run_info: Mapping[str, Any] | None = None,
                    map_window: plots.MapWindow | None = None) -> Document:
    """The report of a diagnosis as a Document (for a notebook cell, or to save), with its figures."""
    images = render_images(d, d.settings, map_window)
    title, blocks = build_report(d, images, settings=d.settings, run_info=run_info or {}, seed=d.seed)
    return Document(title, blocks)


def write_tables(d: Diagnosis, settings: DiagnosisSettings, out_dir: Path) -> list[str]:
    """The per-crop tables (crop metrics, confusions, underperforming crops, the label plan, the accuracy
    assessment's) and suspect_labels.csv; with fields without a label also their plan's
    quotas (unlabelled_quotas.csv). A run without ground truth writes the quotas only: every other table needs
    labelled fields."""
    out = Written(Path(out_dir))
    if d.unlabelled is not None:
        write_csv(d.unlabelled.quotas, out.path(active.QUOTAS_FILE), decimals=6)
    if not d.has_labels:
        return list(out.paths)
    write_csv(d.suspects, out.path(active.SUSPECTS_FILE), decimals={"x": 7, "y": 7, "confidence_score": 2,
                                                                       "purity": 4, "suspect_score": 4})
    write_csv(d.metrics, out.path("crop_metrics.csv"))
    write_csv(d.confusion, out.path("confusion_matrix.csv"), index=True)
    write_csv(d.pixel_confusion, out.path("confusion_matrix_pixels.csv"), index=True)
    write_csv(d.pairs, out.path("confusion_pairs.csv"), decimals=3)
    write_csv(with_rule(d.underperforming, settings), out.path("underperforming_crops.csv"), decimals=3)
    write_csv(plan_table(d.selection.plan, settings), out.path("label_plan.csv"), decimals=3)
    return [*out.paths, *write_accuracy(d.accuracy, out.out_dir)]


def write_field_lists(d: Diagnosis, settings: DiagnosisSettings, out_dir: Path, *, crs: Any,
                      geometries: Callable[[pd.Index], gpd.GeoSeries] | None = None) -> list[str]:
    """The fields to label and the held-back evaluation fields (CSV and GeoPackage; with fields without a label
    also unlabelled_to_label), with their polygons read by `geometries` (the tail's Polygons), else as points."""
    out = Written(Path(out_dir))
    sel = d.selection
    lists = [("fields_to_label", with_reasons(sel.picks, settings)), ("evaluation_fields", sel.evaluation)] \
        if d.has_labels else []
    if d.unlabelled is not None:
        lists.append((active.unlabelled_picks_file(d), d.unlabelled.picks))
    for name, table in lists:
        write_csv(table, out.path(f"{name}.csv"), decimals=_field_decimals(table))
        _write_layer(table, out.path(f"{name}.gpkg"), layer=name, crs=crs, geometries=geometries)
    return list(out.paths)


def write_images(images: Mapping[str, Image | None], out_dir: Path) -> list[str]:
    """The report's pictures as PNG files (None: a picture this run has not got)."""
    out = Written(Path(out_dir))
    for name, image in images.items():
        if image is not None:
            out.path(name).write_bytes(image.png)
    return list(out.paths)


def write_report(d: Diagnosis, images: Mapping[str, Image | None], out_dir: Path, *, settings: DiagnosisSettings,
                 run_info: Mapping[str, Any], seed: int) -> list[str]:
    """report.md (pictures beside it) and report.html (pictures inside; None: a picture this run has not got)."""
    out = Written(Path(out_dir))
    pictures = {name: image for name, image in images.items() if image is not None}
    title, blocks = build_report(d, pictures, settings=settings, run_info=run_info or {}, seed=seed)
    out.path("report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
    out.path("report.html").write_text(render_html(title, blocks), encoding="utf-8")
    return list(out.paths)


def _field_decimals(frame: pd.DataFrame) -> dict[str, int]:
    """Coordinates keep 7 decimals (~1 cm in degrees); other floats 3."""
    return {c: 7 if c in ("x", "y") else 3 for c in frame.select_dtypes("float").columns}


def _write_layer(table: pd.DataFrame, path: Path, *, layer: str, crs: Any,
                 geometries: Callable[[pd.Index], gpd.GeoSeries] | None = None) -> None:
    """The listed fields as a GeoPackage layer: their polygons read by `geometries`, or their points without it."""
    if geometries is not None:
        polygons = geometries(table.index)
        geometry, crs = polygons.to_numpy(), polygons.crs
    else:
        geometry = gpd.points_from_xy(table["x"].astype(float), table["y"].astype(float))
    typed = table.astype({"correct": bool}) if "correct" in table else table
    frame = gpd.GeoDataFrame(typed, geometry=geometry, crs=crs)
    with warnings.catch_warnings():
        # A plain table without any CRS is written as such, on purpose; pyogrio warns about it.
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        frame.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")
