"""The per-field table from the chunk summaries: results gathered as they arrive (`FieldColumns`), then one
immutable `FieldColumnResults` (`finish`), then the table in input order with the reference columns first.

Also where overlaps and the geometry cases of fields no chunk read (outside the raster) are reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from cropmon.catalogue import Catalogue
from cropmon.engine import fields as fields_mod
from cropmon.engine.rasterize import FieldLayout
from cropmon.io.vector import FIELD_BATCH_ROWS
from cropmon.schema import FIELD_TABLE_COLUMNS, text_column

log = logging.getLogger(__name__)

GEOMETRY_CASES = ("repaired", "multipolygon", "empty", "not_polygon")


@dataclass(frozen=True)
class FieldColumnResults:
    """Every chunk's summary gathered: per-field result columns (input order, read-only), the sparse class
    histograms, the overlapping label pairs and the raster values that are no class. Reading it changes nothing."""

    columns: MappingProxyType  # name -> read-only np.ndarray, one value per input row
    class_counts: pd.DataFrame  # sparse (fields x catalogue's crops), index = input row
    overlap_pairs: np.ndarray  # (k, 2) unique label pairs (low, high) that share pixel centres
    invalid_values: MappingProxyType  # raster value that is no class -> pixels in fields holding it


class FieldColumns:
    """The per-field result columns (input order), filled chunk summary by chunk summary as they arrive.

    `add` takes each summary; `finish` hands the columns over as an immutable `FieldColumnResults`, once.
    """

    FLOATS = ("majority_crop", "purity", "runner_up_crop", "runner_up_share", "vote_margin", "confidence_score",
              "confidence_std", "confidence_majority", "x", "y")

    def __init__(self, n: int, layout: FieldLayout, catalogue: Catalogue) -> None:
        self.n = n
        self.layout = layout
        self.catalogue = catalogue
        self._invalid_values: dict[int, int] = {}
        self._histogram_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, classes, pixels)
        self._columns: dict[str, np.ndarray] | None = {
            "n_pixels": np.zeros(n, np.int64),
            "n_invalid": np.zeros(n, np.int64),
            "n_nodata": np.zeros(n, np.int64),
            "n_conf_invalid": np.zeros(n, np.int64),
            "tie": np.zeros(n, bool),
            "pixel_rule": text_column(n, "none"),
            "geometry_status": text_column(n, "empty"),  # null geometries get no label: never read
            **{name: np.full(n, np.nan) for name in self.FLOATS},
        }
        self._overlap_pairs: list[np.ndarray] = []

    def add(self, index: int, summary: dict[str, np.ndarray]) -> None:
        """Take one chunk's summary (zonal.finish_owned_fields) into the columns; `index` is its graph position."""
        if self._columns is None:
            raise RuntimeError("FieldColumns.add after finish()")
        rows = self.layout.row_of_label[summary["label"] - 1]
        field, crop = np.nonzero(summary["class_counts"])  # a field covers ~2 of the classes
        self._histogram_parts.append((rows[field].astype(np.int32), crop.astype(np.int32),
                                      summary["class_counts"][field, crop]))
        for value, pixels in summary["invalid_values"].T.tolist():
            self._invalid_values[value] = self._invalid_values.get(value, 0) + pixels
        for name, values in self._columns.items():
            values[rows] = summary[name]
        self._overlap_pairs.append(summary["overlap_pairs"])

    def finish(self) -> FieldColumnResults:
        """The gathered results, immutable; the accumulator takes no more summaries afterwards."""
        if self._columns is None:
            raise RuntimeError("FieldColumns.finish() called twice")
        columns, self._columns = self._columns, None
        for values in columns.values():
            values.flags.writeable = False
        counts = _sparse_class_counts(self._histogram_parts, self.n, self.catalogue.names)
        self._histogram_parts = []
        invalid = MappingProxyType(dict(sorted(self._invalid_values.items())))
        return FieldColumnResults(MappingProxyType(columns), counts, unique_pairs(self._overlap_pairs), invalid)


def _sparse_class_counts(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int,
                         names: tuple[str, ...]) -> pd.DataFrame:
    """The (fields x crops) pixel histograms as a sparse DataFrame (zeros not stored: ~20 bytes a field
    instead of 128 for 32 classes), for metrics.pixel_confusion_matrix and the field_class_counts output."""
    import scipy.sparse

    parts = parts or [(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))]
    rows, crops, pixels = (np.concatenate(p) for p in zip(*parts, strict=True))
    matrix = scipy.sparse.csc_matrix((pixels, (rows, crops)), shape=(n, len(names)), dtype=np.int32)
    return pd.DataFrame.sparse.from_spmatrix(matrix, index=pd.RangeIndex(n), columns=list(names))


def unique_pairs(pairs: list[np.ndarray]) -> np.ndarray:
    """Unique label pairs (low, high) from every chunk's overlapping pairs."""
    pairs = [p for p in pairs if len(p)]
    if not pairs:
        return np.empty((0, 2), dtype=np.int32)
    stacked = np.sort(np.concatenate(pairs), axis=1)
    return np.unique(stacked, axis=0)


def report_overlaps(prepared: fields_mod.PreparedFields, layout: FieldLayout, pairs: np.ndarray) -> None:
    """Count the pairs of fields that share pixel centres and name a few of them."""
    prepared.report.overlapping_pairs = len(pairs)
    if len(pairs):
        rows = layout.row_of_label[np.unique(pairs.ravel()) - 1]
        prepared.report.add("overlapping_fields", prepared.table["field_id"].iloc[rows])
        log.warning("%d pairs of fields overlap (share pixel centres); shared pixels count once", len(pairs))


def classify_unread_geometries(prepared: fields_mod.PreparedFields, rows: np.ndarray, raster_crs: str,
                               *, batch_rows: int = FIELD_BATCH_ROWS) -> np.ndarray:
    """Geometry status of fields no chunk read (outside the raster), read here in batches: outside | empty |
    not_polygon (a point or line, or an empty polygon, is reported as such wherever it lies)."""
    status = text_column(len(rows), "outside")
    for start in range(0, len(rows), batch_rows):
        part = rows[start : start + batch_rows]
        geometry = prepared.source.read_geometries(prepared.fids[part])
        _, found = fields_mod.prepare_geometries(geometry, fields_crs=prepared.source.crs, raster_crs=raster_crs)
        status[start : start + batch_rows] = np.where(np.isin(found, ["empty", "not_polygon"]), found, "outside")
    return status


def assemble_table(prepared: fields_mod.PreparedFields, layout: FieldLayout, results: FieldColumnResults,
                   raster_crs: str, catalogue: Catalogue) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-field table in input order (the reference columns first, then the extras) and its class histograms."""
    table = prepared.table
    n = len(table)
    unread = np.flatnonzero((layout.label_of_row == 0) & np.isfinite(prepared.raster_bounds).all(axis=1))
    geometry_status = results.columns["geometry_status"].copy()
    geometry_status[unread] = classify_unread_geometries(prepared, unread, raster_crs)
    for name, values in results.columns.items():
        table[name] = geometry_status if name == "geometry_status" else values

    report = prepared.report
    status = table["geometry_status"]
    for case in GEOMETRY_CASES:
        report.add(f"geometry_{case}", table.loc[status == case, "field_id"])
    report.add("outside_raster", table.loc[status == "outside", "field_id"])
    no_pixel = (table["n_pixels"] == 0) & (status != "outside")
    report.add("no_pixel", table.loc[no_pixel & (layout.label_of_row > 0), "field_id"])
    report.add("all_touched_fallback", table.loc[table["pixel_rule"] == "all_touched", "field_id"])
    report.add("majority_tie", table.loc[table["tie"], "field_id"])
    fields_mod.log_report(report)

    has_pixels = table["n_pixels"].to_numpy() > 0
    majority = table["majority_crop"].to_numpy()
    names = np.array([*catalogue.names, ""], dtype=object)
    position = catalogue.positions(np.nan_to_num(majority, nan=-1))
    table["majority_crop_label"] = names[np.where(has_pixels, position, -1)]
    gt = table["gt_class"]
    decidable = has_pixels & gt.notna().to_numpy()
    match = pd.array(np.full(n, pd.NA), dtype="Int8")
    match[decidable] = (majority[decidable] == gt.to_numpy(dtype=float, na_value=np.nan)[decidable]).astype(int)
    table["gt_ml_match"] = match

    ordered = [c for c in FIELD_TABLE_COLUMNS if c in table.columns]
    rest = [c for c in table.columns if c not in ordered]
    out = table[ordered + rest]
    return out, results.class_counts.set_axis(out.index)
