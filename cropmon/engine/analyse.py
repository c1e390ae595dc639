"""The engine as one library call: `analyse_fields(raster, fields)` -> `FieldResults` (per-field table, histograms).

Inspect the raster and read the fields' attributes, build the lazy graph (`build_field_graph`: label grid, flox
per chunk, one summary per chunk; nothing is computed while building), compute it once on the chosen cluster, and
assemble the per-field table.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropmon import errors
from cropmon.catalogue import U0C, Catalogue
from cropmon.cluster import ClusterHandle, connect
from cropmon.engine import fields as fields_mod
from cropmon.engine.assemble import FieldColumns, assemble_table, report_overlaps
from cropmon.engine.rasterize import FieldLayout, RowChunks, label_grid, layout_fields
from cropmon.engine.zonal import field_statistics
from cropmon.io import raster as raster_io
from cropmon.io import vector
from cropmon.progress import StageTimer

log = logging.getLogger(__name__)

MISMATCH_SHARE = 0.5  # more field pixels than this outside the catalogue: the class list is not the raster's


@dataclass
class FieldResults:
    """The engine's output: the per-field table (no polygons), class histograms, what was seen, where polygons are.

    The polygons stay in the fields file (`source`, read by feature id `fids`): the outputs stream them through,
    so memory does not grow with the AOI's polygons.
    """

    table: pd.DataFrame  # input order: attributes, results, geometry_status, x, y (a point inside, raster CRS)
    class_counts: pd.DataFrame
    report: fields_mod.FieldReport
    raster: raster_io.RasterInfo
    layout: FieldLayout
    timings: dict[str, float]
    source: vector.FieldSource
    fids: np.ndarray  # feature id of each row in the fields file
    raster_bounds: np.ndarray  # (n, 4) bounding boxes in the raster's CRS
    catalogue: Catalogue = U0C  # the model's classes the histograms and labels follow
    invalid_values: dict[int, int] = field(default_factory=dict)  # raster value that is no class -> field pixels
    keep_alive: Any = None  # what must outlive the results (the API's temporary fields file)

    def geometries(self, rows: np.ndarray | pd.Index):
        """The input polygons of table rows `rows` (positions), in the fields' CRS, as a GeoSeries."""
        import geopandas as gpd

        rows = np.asarray(rows, dtype=np.int64)
        return gpd.GeoSeries(self.source.read_geometries(self.fids[rows]), index=rows, crs=self.source.crs)


def build_field_graph(info: raster_io.RasterInfo, prepared: fields_mod.PreparedFields, *, bands,
                      catalogue: Catalogue = U0C):
    """The lazy computation (nothing is computed here) and the layout, over `bands` (raster.open_prediction_bands).

    The graph is a list: one delayed summary per chunk (zonal.finish_owned_fields).
    """
    from affine import Affine

    chunk_rows = bands.chunks[1][0]
    chunks = RowChunks(
        height=info.height, width=info.width, transform=Affine(*info.transform), chunk_rows=chunk_rows
    )
    layout = layout_fields(prepared.raster_bounds, chunks)
    if layout.n_labels == 0:
        raise errors.NoOverlap(
            f"none of the {len(prepared.table)} fields overlaps the raster (raster bounds in {info.crs}: "
            f"{_raster_bounds(info)})",
            path=prepared.table.attrs.get("source", {}).get("path"),
            fix="check that the fields and the raster cover the same area (and that their CRS are right)",
        )
    grid, extras = label_grid(prepared.source, prepared.fids, layout, raster_crs=info.crs)
    graph = field_statistics(bands, grid, extras, layout, nodata=info.nodata, class_ids=catalogue.id_array)
    return graph, layout


def analyse_fields(
    raster: str | Path,
    fields: str | Path,
    *,
    scheduler: str | None = "threads",
    cluster: ClusterHandle | None = None,
    chunk_rows: int | None = None,
    layer: str | None = None,
    label_column: str = "normalized_label",
    class_band: int = 3,
    confidence_band: int = 4,
    progress: bool = False,
    no_worker_timeout: float = 60.0,
    catalogue: Catalogue | None = None,
) -> FieldResults:
    """Per-field majority class, purity, runner-up and confidence of `fields` on `raster` (one Dask compute).

    `catalogue`: the model's classes (default: the u0c catalogue). Raises CatalogueMismatch when most field pixels
    hold values that are no class of it (the class list is not the raster's).
    """
    catalogue = catalogue or U0C
    timer = StageTimer(show=progress)
    with timer.stage("inspect raster"):
        info = raster_io.inspect_raster(raster, class_band=class_band, confidence_band=confidence_band)
        chunk_rows = raster_io.chunk_rows_for(info, chunk_rows)
        bands = raster_io.open_prediction_bands(info, chunk_rows=chunk_rows)  # lazy: reads the header only
    with timer.stage("read fields"):
        source = vector.read_field_table(fields, layer=layer, label_column=label_column)
    with timer.stage("prepare fields"):
        prepared = fields_mod.prepare_fields(source, raster_crs=info.crs, label_column=label_column,
                                             catalogue=catalogue)
        prepared.table.attrs["source"] = source.table.attrs.get("source", {})
        del source
    handle_cm = contextlib.nullcontext(cluster) if cluster is not None else connect(scheduler)
    with handle_cm as handle:
        with timer.stage("build graph"):
            graph, layout = build_field_graph(info, prepared, bands=bands, catalogue=catalogue)
            columns = FieldColumns(len(prepared.table), layout, catalogue)
        with timer.stage("compute", has_own_bar=True), _pixel_read_errors(info):
            handle.compute(graph, columns.add, progress=progress, no_worker_timeout=no_worker_timeout)
        del graph
    with timer.stage("assemble table"):
        results = columns.finish()
        invalid_values = dict(results.invalid_values)
        check_catalogue_fits(invalid_values, results.columns["n_pixels"], info, catalogue)
        report_overlaps(prepared, layout, results.overlap_pairs)
        table, class_counts = assemble_table(prepared, layout, results, info.crs, catalogue)
        del results
    return FieldResults(
        table=table,
        class_counts=class_counts,
        report=prepared.report,
        raster=info,
        layout=layout,
        timings=timer.seconds,
        source=prepared.source,
        fids=prepared.fids,
        raster_bounds=prepared.raster_bounds,
        catalogue=catalogue,
        invalid_values=invalid_values,
    )


def check_catalogue_fits(invalid_values: dict[int, int], n_pixels: np.ndarray, info: raster_io.RasterInfo,
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

@contextlib.contextmanager
def _pixel_read_errors(info: raster_io.RasterInfo) -> Iterator[None]:
    """A raster whose header reads but whose pixels do not (corrupted strips, or a worker that cannot open the
    path) is a bad input, not a crash: name the file and the two likely fixes."""
    from rasterio.errors import RasterioIOError

    try:
        yield
    except RasterioIOError as exc:
        raise errors.NotARaster(
            f"its pixels cannot be read ({errors.first_line(exc.__cause__ or exc.__context__ or exc)})",
            path=info.path,
            fix="re-export the file if it is corrupted (e.g. gdal_translate); on a cluster, every Dask worker must "
            "open the raster at the same path as the client (shared storage, or a /vsi path)",
        ) from exc


def _raster_bounds(info: raster_io.RasterInfo) -> list[float]:
    a, _, c, _, e, f = info.transform
    return [round(c, 6), round(f + e * info.height, 6), round(c + a * info.width, 6), round(f, 6)]
