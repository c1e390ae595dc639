"""The engine as calls: `submit_fields` puts one AOI's analysis on the cluster and returns at once with a future of
its `FieldResults`; `analyse_fields(raster, fields)` waits for it and brings the per-field table back.

On the client: the raster's and the fields' headers (checked up front), the lazy band array and the graph. On the
workers: reading the fields' attributes and bounding boxes and laying them out over the chunks
(`prepare_fields_task`), every chunk's rasterization and flox reduction, and assembling the per-field table
(`assemble.assemble_results`), which stays there for the tail of the run. The client holds nothing per field.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cropmon import errors
from cropmon.catalogue import U0C, Catalogue
from cropmon.cluster import ClusterSettings, connect
from cropmon.engine import fields as fields_mod
from cropmon.engine.assemble import FieldResults, assemble_results
from cropmon.engine.graph import FieldIndex, FieldInputs, field_graph
from cropmon.engine.mapped import aoi_mask
from cropmon.engine.rasterize import RowChunks, layout_fields
from cropmon.engine.settings import EngineSettings
from cropmon.engine.zonal import warm_up
from cropmon.io import raster as raster_io
from cropmon.io import vector
from cropmon.progress import StageTimer, result_bar
from cropmon.tasks import ClusterHandle

log = logging.getLogger(__name__)

__all__ = ["EngineSettings", "FieldInputs", "FieldJob", "FieldResults", "analyse_fields", "field_inputs",
           "submit_fields"]


@dataclass
class FieldJob:
    """One AOI's analysis, submitted: a future of its FieldResults (on a worker) and what the client knows."""

    raster: raster_io.RasterInfo
    source: vector.FieldSource
    results: Any  # future of FieldResults
    summaries: list = field(default_factory=list)  # futures of the chunk summaries (released once results exist)
    timings: dict[str, float] = field(default_factory=dict)
    n_fields: int = 0
    submitted: float = field(default_factory=time.perf_counter)  # when the graph went to the scheduler
    fields_read: dict[str, Any] = field(default_factory=dict)  # the fields file as read (path, format, read_from)
    first_summary: float | None = None  # when the first chunk summary was seen done (perf_counter)

    def wait(self, handle: ClusterHandle, *, progress: bool = False) -> None:
        """Block until the per-field table is assembled (a bar of the chunks on a terminal); raise its error.

        `timings["compute"]` is the time from submitting the graph to the table being seen ready."""
        bar = result_bar(len(self.summaries)) if progress else None
        log.info("compute ...")
        try:
            with handle.failures(), _pixel_read_errors(self.raster):
                for future in handle.as_completed(self.summaries):
                    if future.status == "error":
                        future.result()
                    self.first_summary = self.first_summary or time.perf_counter()
                    if bar is not None:
                        bar.update(1)
                handle.wait([self.results])
                if self.results.status == "error":
                    self.results.result()
        finally:
            if bar is not None:
                bar.close()
        self.summaries = []
        self.timings["compute"] = round(time.perf_counter() - self.submitted, 3)
        log.info("compute done in %.2f s (from submitting the graph)", self.timings["compute"])


def prepare_fields_task(fields: str, *, layer: str | None, label_column: str | None, raster_crs: str,
                        chunks: RowChunks, scratch_dir: str | None,
                        catalogue: Catalogue = U0C) -> tuple[fields_mod.PreparedFields, FieldIndex]:
    """On a worker: read the fields' attributes and bounding boxes (through a GeoPackage copy in `scratch_dir` for
    a format that cannot be read by feature id: io/convert), match labels (none when `label_column` is None: a run
    without ground truth), and lay the fields out over the raster's chunks (numbered by first row, so each chunk's
    fields are a short local list)."""
    table = vector.read_field_table(fields, layer=layer, label_column=label_column, scratch_dir=scratch_dir)
    prepared = fields_mod.prepare_fields(table, raster_crs=raster_crs, label_column=label_column,
                                         catalogue=catalogue)
    prepared.table.attrs["source"] = table.table.attrs.get("source", {})
    layout = layout_fields(prepared.raster_bounds, chunks)
    return prepared, FieldIndex(prepared.fids[layout.row_of_zone], layout)


@dataclass(frozen=True)
class LayoutFacts:
    """What the client needs of the worker's reading to wire the graph (small: no field in it)."""

    n_fields: int
    n_zones: int  # fields laid out on the raster
    spans: list[tuple[int, int]]  # FieldIndex.owner_spans
    source: vector.FieldSource  # where the polygons are read from (the input, or its GeoPackage copy)
    attrs: dict[str, Any]  # the fields file as read (path, layer, format, size, read_from)


def layout_facts(prepared_and_index: tuple[fields_mod.PreparedFields, FieldIndex]) -> LayoutFacts:
    prepared, index = prepared_and_index
    return LayoutFacts(len(index.layout.zone_of_row), index.layout.n_zones, index.owner_spans(), prepared.source,
                       dict(prepared.table.attrs.get("source", {})))


def field_inputs(raster: str | Path, fields: str | Path, settings: EngineSettings, *,
                 timer: StageTimer | None = None) -> FieldInputs:
    """The client's side of one AOI (headers only, nothing on the cluster): can run while the cluster starts.
    The AOI mask (`settings.aoi_mask`, engine/mapped.aoi_mask) is read here whole: a few polygons. `no_labels`, or
    a file without the label column: no label is read (vector.label_column_to_read)."""
    timer = timer or StageTimer()
    with timer.stage("inspect raster"):
        info = raster_io.inspect_raster(raster, class_band=settings.class_band,
                                        confidence_band=settings.confidence_band)
        chunk_rows = raster_io.chunk_rows_for(info, settings.chunk_rows)
        bands = raster_io.open_prediction_bands(info, chunk_rows=chunk_rows)  # lazy: reads the header only
        chunks = RowChunks(height=info.height, width=info.width, transform=_affine(info), chunk_rows=chunk_rows)
    with timer.stage("inspect fields"):
        header = vector.inspect_fields(fields, layer=settings.layer, label_column=None)
        column_read = vector.label_column_to_read(header, settings.label_column, no_labels=settings.no_labels,
                                                  catalogue=settings.catalogue)
    population = None
    if settings.aoi_mask is not None:
        with timer.stage("read AOI mask"):
            population = aoi_mask(str(settings.aoi_mask), raster_crs=info.crs, transform=chunks.transform,
                                  height=info.height, width=info.width)
    scratch_dir = settings.scratch_dir
    return FieldInputs(raster=info, chunks=chunks, bands=bands, fields=header, label_column=column_read,
                       tie_break=settings.tie_break, scratch_dir=None if scratch_dir is None else str(scratch_dir),
                       catalogue=settings.catalogue, aoi_mask=population)


def submit_fields(handle: ClusterHandle, inputs: FieldInputs, *, timer: StageTimer | None = None,
                  home: str | None = None) -> FieldJob:
    """Put the analysis of one AOI on the cluster; returns once the graph is submitted. `home`: the worker that
    assembles the per-field table (and keeps it for the tail: ClusterHandle.places); any when None."""
    timer = timer or StageTimer()
    info, header = inputs.raster, inputs.fields
    with timer.stage("read fields"):
        prepared_and_index = handle.submit(prepare_fields_task, str(header.path), layer=header.layer,
                                           label_column=inputs.label_column, raster_crs=info.crs,
                                           chunks=inputs.chunks, scratch_dir=inputs.scratch_dir,
                                           catalogue=inputs.catalogue, stage="read-fields", on=home)
        prepared = handle.submit(operator.itemgetter(0), prepared_and_index, stage="prepared-fields")
        index = handle.submit(operator.itemgetter(1), prepared_and_index, stage="field-index")
        facts = handle.result(handle.submit(layout_facts, prepared_and_index, stage="field-layout"))
        del prepared_and_index
    if facts.n_zones == 0:
        raise errors.NoOverlap(
            f"none of the {facts.n_fields} fields overlaps the raster (raster bounds in {info.crs}:"
            f" {_raster_bounds(info)})",
            path=header.path,
            fix="check that the fields and the raster cover the same area (and that their CRS are right)",
        )
    _require_copy_on_workers(handle, facts.source, header.path)
    with timer.stage("build graph"):
        graph = field_graph(inputs, facts.source, index, facts.spans)
        submitted = time.perf_counter()
        summaries = handle.compute(graph)
        results = handle.submit(assemble_results, prepared, index, info, inputs.catalogue, *summaries,
                                aoi_mask=inputs.aoi_mask, stage="assemble-table", on=home)
    return FieldJob(raster=info, source=facts.source, results=results, summaries=summaries, timings=timer.seconds,
                    n_fields=facts.n_fields, submitted=submitted, fields_read=facts.attrs)


def analyse_fields(
    raster: str | Path,
    fields: str | Path,
    *,
    settings: EngineSettings | None = None,
    cluster: ClusterHandle | ClusterSettings | None = None,
    progress: bool = False,
) -> FieldResults:
    """Per-field majority class, purity, runner-up and confidence of `fields` on `raster` (one Dask compute),
    with the per-field table brought back to the caller.

    `settings`: what to read and how to score it (default: `EngineSettings()`, RunConfig's defaults). Its
    `scratch_dir` holds the GeoPackage copy of a fields file that cannot be read by feature id (GeoJSON,
    GeoParquet ...; io.convert); on a remote cluster every worker must see it at the same path. Raises
    CatalogueMismatch when most field pixels hold values that are no class of `settings.catalogue` (the class list
    is not the raster's). `cluster`: a connected ClusterHandle (used as it is), or the settings to connect with
    (default: an in-process cluster, `ClusterSettings(scheduler="threads")`).
    """
    settings = settings or EngineSettings()
    timer = StageTimer(show=progress)
    handle_cm = (contextlib.nullcontext(cluster) if isinstance(cluster, ClusterHandle)
                 else connect(cluster or ClusterSettings(scheduler="threads"), warm_up=warm_up))
    inputs = field_inputs(raster, fields, settings, timer=timer)
    with handle_cm as handle:
        job = submit_fields(handle, inputs, timer=timer)
        with timer.stage("compute", has_own_bar=True):
            job.wait(handle, progress=progress)
        with timer.stage("gather table"):
            results = handle.result(job.results)
    fields_mod.log_report(results.report)
    results.timings = timer.seconds
    return results


def _affine(info: raster_io.RasterInfo):
    from affine import Affine

    return Affine(*info.transform)


def _require_copy_on_workers(handle: ClusterHandle, source: vector.FieldSource, fields: str | Path) -> None:
    """A fields file read through a local copy (io.convert) needs that copy on every worker's file system."""
    if source.path == str(fields):
        return
    missing = handle.workers_that_cannot_read(source.path)
    if missing:
        raise errors.MissingFile(
            f"its GeoPackage copy {source.path} (made because the format cannot be read by feature id) cannot be "
            f"opened on {len(missing)} worker(s), e.g. {missing[0]}",
            path=fields,
            fix="pass --scratch-dir DIR on storage every worker mounts at the same path, or hand over a GeoPackage",
        )


@contextlib.contextmanager
def _pixel_read_errors(info: raster_io.RasterInfo) -> Iterator[None]:
    """A raster whose header reads but whose pixels do not (corrupted strips, or a worker that cannot open the
    path) is a bad input, not a crash: name the file and the two likely fixes.

    Raised on a worker, rasterio's error arrives as a plain Exception naming it: its chain of CPLE errors does not
    unpickle (tblib cannot set their read-only `args`), so distributed sends its text instead.
    """
    from rasterio.errors import RasterioIOError

    try:
        yield
    except Exception as exc:
        if not (isinstance(exc, RasterioIOError) or (type(exc) is Exception and "RasterioIOError" in str(exc))):
            raise
        raise errors.NotARaster(
            f"its pixels cannot be read ({errors.first_line(exc.__cause__ or exc.__context__ or exc)})",
            path=info.path,
            fix="re-export the file if it is corrupted (e.g. gdal_translate); on a cluster, every Dask worker must "
            "open the raster at the same path as the client (shared storage, or a /vsi path)",
        ) from exc


def _raster_bounds(info: raster_io.RasterInfo) -> list[float]:
    a, _, c, _, e, f = info.transform
    return [round(c, 6), round(f + e * info.height, 6), round(c + a * info.width, 6), round(f, 6)]
