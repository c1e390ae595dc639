"""The per-field table from the chunk summaries, on the worker that runs `assemble_results`: the summaries are
gathered (`FieldColumns`), then frozen into one immutable `FieldColumnResults` (`finish`), then the table in input
order with the reference columns first, in a `FieldResults` that stays on the cluster for the tail of the run.

Also where overlaps and the geometry cases of fields no chunk read (outside the raster) are reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from cropmon import errors, runtime
from cropmon.catalogue import U0C, Catalogue
from cropmon.engine import fields as fields_mod
from cropmon.engine.graph import GEOMETRY_STATUSES, ChunkSummary, FieldIndex
from cropmon.engine.mapped import AOIMask, MappedPixels, mapped_area_table
from cropmon.engine.rasterize import FieldLayout, Overlaps
from cropmon.engine.zonal import PIXEL_RULES
from cropmon.io.raster import RasterInfo
from cropmon.io.vector import FIELD_BATCH_ROWS, FieldSource
from cropmon.schema import FIELD_TABLE_COLUMNS, text_column

log = logging.getLogger(__name__)

MISMATCH_SHARE = 0.5  # more field pixels than this outside the catalogue: the class list is not the raster's

GEOMETRY_CASES = ("repaired", "multipolygon", "empty", "not_polygon")


@dataclass(frozen=True)
class FieldColumnResults:
    """Every chunk's summary gathered: per-field result columns (input order, read-only), the sparse class
    histograms, the overlapping pairs and the raster values that are no class. Reading it changes nothing."""

    columns: MappingProxyType  # name -> read-only np.ndarray, one value per input row
    class_counts: pd.DataFrame  # sparse (fields x catalogue's crops), index = input row
    overlaps: Overlaps  # unique zone pairs (low, high) that share pixel centres, their shared pixels over all chunks
    shared_pixels: int  # distinct pixels inside more than one field
    invalid_values: MappingProxyType  # raster value that is no class -> pixels in fields holding it
    mapped: MappedPixels | None = None  # every chunk's mapped area added (None: the summaries carried none)


class FieldColumns:
    """The per-field result columns (input order), filled chunk summary by chunk summary as they arrive.

    `add` takes each summary; `finish` hands the columns over as an immutable `FieldColumnResults`, once.
    """

    FLOATS = ("majority_crop", "purity", "runner_up_crop", "runner_up_share", "vote_margin", "confidence_score",
              "confidence_std", "confidence_majority", "x", "y")
    DECODE: ClassVar[dict[str, np.ndarray]] = {"pixel_rule": np.array(PIXEL_RULES, dtype=object),
              "geometry_status": np.array(GEOMETRY_STATUSES, dtype=object)}

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
            "n_pixels_shared": np.zeros(n, np.int64),
            "tie": np.zeros(n, bool),
            "pixel_rule": text_column(n, "none"),
            "geometry_status": text_column(n, "empty"),  # null geometries get no zone: never read
            **{name: np.full(n, np.nan) for name in self.FLOATS},
        }
        self._overlaps: list[Overlaps] = []
        self._shared_pixels = 0
        self._mapped: MappedPixels | None = None

    def add(self, summary: ChunkSummary) -> None:
        """Take one chunk's summary (engine/graph.finish_chunk) into the columns."""
        if self._columns is None:
            raise RuntimeError("FieldColumns.add after finish()")
        rows = self.layout.row_of_zone[summary.zone - 1]
        self._histogram_parts.append((rows[summary.counts_field].astype(np.int32),
                                      summary.counts_class.astype(np.int32), summary.counts_pixels))
        for value, pixels in summary.invalid_values.T.tolist():
            self._invalid_values[value] = self._invalid_values.get(value, 0) + pixels
        for name, values in self._columns.items():
            if name in self.DECODE:
                values[rows] = self.DECODE[name][summary.columns[name]]  # shared string references, not copies
            elif name in summary.columns:
                values[rows] = summary.columns[name]
        if len(summary.overlaps.pairs):
            self._overlaps.append(summary.overlaps)
        self._shared_pixels += int(summary.n_shared_pixels_in_chunk)
        mapped = summary.mapped
        if mapped is not None:
            self._mapped = mapped if self._mapped is None else self._mapped + mapped

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
        return FieldColumnResults(MappingProxyType(columns), counts, merge_overlaps(self._overlaps),
                                  self._shared_pixels, invalid, self._mapped)


def _sparse_class_counts(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int,
                         names: tuple[str, ...]) -> pd.DataFrame:
    """The (fields x crops) pixel histograms as a sparse DataFrame (zeros not stored: ~20 bytes a field
    instead of 128 for 32 classes), for metrics.pixel_confusion_matrix and the field_class_counts output."""
    import scipy.sparse

    parts = parts or [(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))]
    rows, crops, pixels = (np.concatenate(p) for p in zip(*parts, strict=True))
    matrix = scipy.sparse.csc_matrix((pixels, (rows, crops)), shape=(n, len(names)), dtype=np.int32)
    return pd.DataFrame.sparse.from_spmatrix(matrix, index=pd.RangeIndex(n), columns=list(names))


def merge_overlaps(parts: list[Overlaps]) -> Overlaps:
    """One row per pair of fields over all chunks: pixels summed (each pixel lies in one chunk), and the pair is
    the same polygon when any chunk found it so (every chunk compares the same two polygons)."""
    if not parts:
        return Overlaps.empty()
    pairs = np.concatenate([p.pairs for p in parts])
    unique, which = np.unique(pairs, axis=0, return_inverse=True)
    which = which.ravel()
    pixels = np.bincount(which, weights=np.concatenate([p.pixels for p in parts]), minlength=len(unique))
    same = np.bincount(which, weights=np.concatenate([p.same_geometry for p in parts]), minlength=len(unique)) > 0
    return Overlaps(unique.astype(np.int32), pixels.astype(np.int64), same)


def report_overlaps(prepared: fields_mod.PreparedFields, layout: FieldLayout, results: FieldColumnResults) -> None:
    """Count the pairs of fields that share pixel centres, the duplicated polygons among them, the shared pixels
    and the fields all of whose pixels another field also holds; name a few. Every field keeps all its pixels."""
    overlaps, report = results.overlaps, prepared.report
    columns = results.columns
    report.overlapping_pairs = len(overlaps.pairs)
    report.duplicate_geometry_pairs = int(overlaps.same_geometry.sum())
    report.shared_pixels = results.shared_pixels
    if not len(overlaps.pairs):
        return
    field_id = prepared.table["field_id"]
    rows = layout.row_of_zone[overlaps.pairs - 1]  # (k, 2) input rows
    report.add("overlapping_fields", field_id.iloc[np.unique(rows.ravel())])
    report.add("duplicate_geometry", field_id.iloc[np.unique(rows[overlaps.same_geometry].ravel())])
    centre_pixels = columns["n_pixels"] + columns["n_invalid"] + columns["n_nodata"]
    covered = (columns["n_pixels_shared"] > 0) & (columns["n_pixels_shared"] == centre_pixels)
    report.add("fully_inside_other_fields", field_id.to_numpy()[covered])
    largest = np.argsort(-overlaps.pixels, kind="stable")[: fields_mod.EXAMPLES]
    report.overlap_examples = [
        {"fields": [str(field_id.iloc[a]), str(field_id.iloc[b])], "shared_pixels": int(overlaps.pixels[i]),
         "same_geometry": bool(overlaps.same_geometry[i])}
        for i, (a, b) in zip(largest, rows[largest], strict=True)
    ]
    log.warning(
        "%d pairs of fields overlap (%d pixels lie in more than one field; %d pairs are the same polygon twice; "
        "%d fields lie wholly inside others): every field is measured on all its pixels, shared ones included",
        len(overlaps.pairs), results.shared_pixels, report.duplicate_geometry_pairs, int(covered.sum()),
    )


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
    unread = np.flatnonzero((layout.zone_of_row == 0) & np.isfinite(prepared.raster_bounds).all(axis=1))
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
    report.add("no_pixel", table.loc[no_pixel & (layout.zone_of_row > 0), "field_id"])
    report.add("all_touched_fallback", table.loc[table["pixel_rule"] == "all_touched", "field_id"])
    report.add("majority_tie", table.loc[table["tie"], "field_id"])


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


@dataclass
class FieldResults:
    """The engine's output: the per-field table (no polygons), class histograms, what was seen, where polygons are.

    The polygons stay in the fields file (`source`, read by feature id `fids`): the outputs stream them through,
    so memory does not grow with the AOI's polygons.
    """

    table: pd.DataFrame  # input order: attributes, results, geometry_status, x, y (a point inside, raster CRS)
    class_counts: pd.DataFrame
    report: fields_mod.FieldReport
    raster: RasterInfo
    layout: FieldLayout
    source: FieldSource
    fids: np.ndarray  # feature id of each row in the fields file
    raster_bounds: np.ndarray  # (n, 4) bounding boxes in the raster's CRS
    timings: dict[str, float] | None = None  # the client's stage timings, when it asked for the table
    catalogue: Catalogue = U0C  # the model's classes the histograms and labels follow
    invalid_values: dict[int, int] = field(default_factory=dict)  # raster value that is no class -> field pixels
    keep_alive: Any = None  # what must outlive the results (the API's temporary fields file)
    mapped: MappedPixels | None = None  # the map's own census: valid pixels and area per class (engine/mapped.py)
    aoi_mask: AOIMask | None = None  # the population's boundary, when one was given
    in_population: np.ndarray | None = None  # per row: the field's point lies inside the AOI mask (None: no mask)

    @property
    def mapped_area(self) -> pd.DataFrame:
        """Per class: class_id, crop, pixels, area_ha, share of the population's mapped area (engine/mapped.py);
        counted over every valid pixel of the raster (inside the AOI mask), with or without ground truth."""
        mapped = self.mapped if self.mapped is not None else MappedPixels.zeros(self.catalogue.n)
        return mapped_area_table(mapped, self.catalogue)

    def geometries(self, rows: np.ndarray | pd.Index):
        """The input polygons of table rows `rows` (positions), in the fields' CRS, as a GeoSeries."""
        import geopandas as gpd

        rows = np.asarray(rows, dtype=np.int64)
        return gpd.GeoSeries(self.source.read_geometries(self.fids[rows]), index=rows, crs=self.source.crs)


def assemble_results(prepared: fields_mod.PreparedFields, index: FieldIndex, raster: RasterInfo, catalogue: Catalogue,
                     *summaries: ChunkSummary, aoi_mask: AOIMask | None = None) -> FieldResults:
    """The chunk summaries of one AOI into its FieldResults (runs on a worker; the table stays there).
    `aoi_mask`: the population's boundary; each field is in it when its point (x, y) lies inside."""
    columns = FieldColumns(len(prepared.table), index.layout, catalogue)
    for summary in summaries:
        columns.add(summary)
    results = columns.finish()
    invalid_values = dict(results.invalid_values)
    check_catalogue_fits(invalid_values, results.columns["n_pixels"], raster, catalogue)
    report_overlaps(prepared, index.layout, results)
    table, class_counts = assemble_table(prepared, index.layout, results, raster.crs, catalogue)
    mapped = results.mapped
    del results, columns
    runtime.trim_freed_memory()
    in_population = None if aoi_mask is None else aoi_mask.contains(table["x"].to_numpy(), table["y"].to_numpy())
    return FieldResults(table=table, class_counts=class_counts, report=prepared.report, raster=raster,
                        layout=index.layout, source=prepared.source, fids=prepared.fids,
                        raster_bounds=prepared.raster_bounds, catalogue=catalogue, invalid_values=invalid_values,
                        mapped=mapped, aoi_mask=aoi_mask, in_population=in_population)


def check_catalogue_fits(invalid_values: dict[int, int], n_pixels: np.ndarray, info: RasterInfo,
                         catalogue: Catalogue) -> None:
    """Warn about raster values that are no class of the catalogue (counted, not used); refuse the run when they
    are most of the fields' pixels: then the class list is not the raster's model."""
    if not invalid_values:
        return
    outside = sum(invalid_values.values())
    share = outside / max(outside + int(np.sum(n_pixels)), 1)
    values = ", ".join(f"{v} ({n:,} px)" for v, n in sorted(invalid_values.items(), key=lambda kv: -kv[1])[:8])
    more = f" and {len(invalid_values) - 8} more" if len(invalid_values) > 8 else ""
    text = (f"{100 * share:.1f} % of the fields' pixels ({outside:,}) hold class values that are no class of the"
            f" {catalogue.describe()}: {values}{more}")
    if share > MISMATCH_SHARE:
        raise errors.CatalogueMismatch(
            text, path=info.path,
            fix="pass this raster's own class list with --classes FILE (JSON {crop: [aliases]} or CSV"
            " class_id,crop,aliases); or check --class-band",
        )
    log.warning("%s: %s; they are counted (n_invalid), not scored", info.path, text)

