"""The report of one AOI: every table, picture and sentence of the diagnosis, written into the run's outputs.

`write_diagnosis` is what the pipeline calls; `build_report` assembles the sections (report/sections.py: every
sentence is built from the run's numbers) with the figures; `render_report` gives the same page as HTML text, for a
notebook cell.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from cropmon.analysis import metrics
from cropmon.analysis.diagnose import Diagnosis, diagnose_run
from cropmon.analysis.settings import DiagnosisSettings
from cropmon.catalogue import U0C, Catalogue
from cropmon.io.outputs import write_csv
from cropmon.report import plots, sections
from cropmon.report.document import Block, Document, Image, lookup, png, render_html, render_markdown
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
    source = sections.input_path(run_info, "raster") or sections.input_path(run_info, "fields")
    twin = " (digital twin)" if lookup(run_info, "inputs", "digital_twin") is True else ""
    title = f"Crop diagnosis: {Path(source).name}{twin}" if source else "Crop diagnosis"
    return title, [
        *sections.headline(d, settings),
        *sections.underperforming(d, settings),
        *sections.confusions(d, images),
        *sections.figures(d, images),
        *sections.plan(d, settings),
        *sections.caveats(d, run_info, settings),
        *sections.settings_blocks(run_info, settings, seed),
    ]


def report_document(d: Diagnosis, *, run_info: Mapping[str, Any] | None = None,
                    map_window: plots.MapWindow | None = None) -> Document:
    """The report of a diagnosis as a Document (for a notebook cell, or to save), with its figures."""
    images = _images(d, d.settings, map_window)
    title, blocks = build_report(d, images, settings=d.settings, run_info=run_info or {}, seed=d.seed)
    return Document(title, blocks)


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
            "Agreement per crop with its 95 % Wilson interval; red: underperforming.",
        ),
        "f1_vs_confidence.png": (
            plots.f1_vs_confidence(d.metrics, flagged=flagged, min_f1=s.min_f1, min_confidence=s.min_confidence,
                                   certainty=dict(zip(d.flagged["crop"], d.flagged["certainty"], strict=True))),
            "F1 against mean confidence per crop with 95 % intervals; bubble area ~ GT fields; filled red:"
            " certainly underperforming, hollow: possibly, grey: too few fields to tell; shaded: the"
            " underperforming region.",
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
