"""Every picture of one AOI's report, by file name: rendered once per run (a task each on a cluster), the same PNG
bytes go to the file and into the HTML.

The run's client imports this module for IMAGE_NAMES (the tail submits one task per picture) and must not import
matplotlib or scikit-learn: `render_image`, which runs on a worker, imports the figures when it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.report.document import Image, png

if TYPE_CHECKING:
    from cropmon.diagnosis.diagnose import Diagnosis
    from cropmon.report.plots import MapWindow

IMAGE_NAMES: tuple[str, ...] = (
    "confusion_heatmap.png", "agreement_by_crop.png", "f1_vs_confidence.png", "block_error_map.png", "map_window.png",
    "area_adjusted.png",
)
GROUND_TRUTH_IMAGES = frozenset(IMAGE_NAMES) - {"map_window.png"}  # each shows numbers only labelled fields give


def render_image(name: str, d: Diagnosis, s: DiagnosisSettings, window: MapWindow | None) -> Image | None:
    """One picture of the report, by file name; None for the map window of a run without one, and for the pictures
    of the ground truth's numbers in a run without any (only the map window is left)."""
    from cropmon.diagnosis import metrics
    from cropmon.report import plots

    if name == "map_window.png" and window is None:
        return None
    if name in GROUND_TRUTH_IMAGES and not d.has_labels:
        return None
    if name == "area_adjusted.png" and (d.accuracy is None or d.accuracy.design["n_fields"] == 0):
        return None
    flagged = set(d.underperforming["crop"])
    grid = d.selection.grid
    aspect = grid.unit_x / grid.unit_y
    if name == "confusion_heatmap.png":
        listed = [c for c in d.confusion.index if c in set(d.metrics["crop"])]
        shares = metrics.row_shares(d.confusion).loc[listed, listed]
        figure = plots.confusion_heatmap(shares)
        caption = "Field-level confusion, each GT row divided by its total (percent in the cells)."
    elif name == "agreement_by_crop.png":
        figure = plots.agreement_bars(d.metrics, flagged=flagged, min_agreement=s.min_agreement)
        caption = "Agreement per crop with its 95 % Wilson interval; red: underperforming."
    elif name == "f1_vs_confidence.png":
        figure = plots.f1_vs_confidence(d.metrics, flagged=flagged, min_f1=s.min_f1, min_confidence=s.min_confidence,
                                        certainty=dict(zip(d.underperforming["crop"], d.underperforming["certainty"],
                                                           strict=True)))
        caption = ("F1 against mean confidence per crop with 95 % intervals; bubble area ~ GT fields; filled red:"
                   " certainly underperforming, hollow: possibly, grey: too few fields to tell; shaded: the"
                   " underperforming region.")
    elif name == "block_error_map.png":
        crs = str(window.crs) if window is not None else ""
        figure = plots.block_map(d.blocks, picks=d.selection.picks, evaluation=d.selection.evaluation, aspect=aspect,
                                 crs=crs)
        caption = f"Error rate per {s.block_km:g} km block; crosses: fields to label, circles: held back."
    elif name == "map_window.png" and window is not None:
        figure = plots.map_window(window, aspect=aspect)
        caption = f"A window of the AOI ({window.crs}): ground truth | prediction | confidence."
        if not d.has_labels:
            caption = (f"A window of the AOI ({window.crs}) where the fields are densest: prediction | confidence"
                       " (no ground truth: the first panel is empty).")
    elif name == "area_adjusted.png" and d.accuracy is not None:
        figure = plots.area_plot(d.accuracy.table, level=d.accuracy.level)
        caption = ("Mapped area (the map's pixel count) and error-adjusted area with its 95 % interval per crop,"
                   " largest first: where the interval misses the grey bar, the pixel count is biased by the map's"
                   " errors (it assumes the GT fields are representative of their map class; see the text).")
    else:
        raise ValueError(f"no picture {name!r} (known: {', '.join(IMAGE_NAMES)})")
    return Image(name, png(figure), caption)


def render_images(d: Diagnosis, s: DiagnosisSettings, window: MapWindow | None) -> dict[str, Image]:
    """Every picture of the report, in reading order."""
    images = (render_image(name, d, s, window) for name in IMAGE_NAMES)
    return {image.name: image for image in images if image is not None}
