"""The tail of a run: everything after the engine's per-field table, as tasks on the cluster.

For one AOI, `submit_tail` submits, without waiting for anything (each task starts as soon as what it needs
exists; independent ones run side by side on the workers):

  diagnosis      diagnosis.diagnose_run on the per-field table           stays on the cluster
  field-gpkg     fields.gpkg (the per-field table with the input polygons, streamed)
  field-parquet  fields.parquet, field_class_counts.parquet (side by side with the GeoPackage)
  field-counts   manifest.field_counts                                  small: for run.json and the report
  mapped-area    mapped_area.csv (the map's census; no ground truth needed) and run.json `mapped_area`
  field-uncertainty  field_uncertainty.parquet (every field's scores, from the diagnosis; no ground truth needed)
  map-window     report.map_window (reads a window of the raster)        a few small arrays
  image          one task per picture of the report                      PNG bytes
  tables, field-lists, images, report                                    files
  aoi-summary    diagnosis.pooled.summarise_diagnosis (multi-AOI runs)     compact, stays on the cluster

Every file goes to the run's staging directory through io/products.produce: renamed into place by the worker when
it shares the directory with the client, uploaded by the worker when the outputs go to a bucket, else pulled by
the client in pieces. `collect_tail` waits for the files and returns what run.json says about them. The client
never holds the per-field table.

A task is a function of the layers below named by a `Lazy` ("module:function", imported on the worker that runs
it), or one of the tail's own steps below, which take the FieldResults apart for such a function.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import methodcaller
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropmon import runtime
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.engine.mapped import MappedPixels
from cropmon.io import outputs, products
from cropmon.io.products import Destination
from cropmon.report.images import IMAGE_NAMES
from cropmon.tasks import ClusterHandle

if TYPE_CHECKING:
    from cropmon.diagnosis.diagnose import Diagnosis
    from cropmon.engine.assemble import FieldResults
    from cropmon.engine.job import FieldJob

log = logging.getLogger(__name__)


@dataclass
class Tail:
    """One AOI's tail, submitted: futures of its products (files), its field counts and its summary."""

    products: dict[str, Any]  # stage -> future of io.products.Product
    counts: Any  # future of manifest.field_counts
    summary: Any | None = None  # future of an AOISummary (multi-AOI runs)
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes, once collected
    manifest: dict[str, Any] = field(default_factory=dict)  # run.json key -> future of a small dict


# -- what runs on the workers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lazy:
    """A function of the diagnosis or report layer, named "module:function" and imported where it runs: a task
    travels to the workers as this name, so the client, which only submits it, never imports matplotlib or
    scikit-learn."""

    target: str

    def load(self) -> Callable[..., Any]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)


DIAGNOSE_RUN = Lazy("cropmon.diagnosis.diagnose:diagnose_run")
RENDER_IMAGE = Lazy("cropmon.report.images:render_image")
MAP_WINDOW = Lazy("cropmon.report.map_window:map_window")
FIELD_COUNTS = Lazy("cropmon.manifest:field_counts")
WRITE_MAPPED_AREA = Lazy("cropmon.report.accuracy:write_mapped_area")
WRITE_FIELD_UNCERTAINTY = Lazy("cropmon.report.active:write_field_uncertainty")
WRITE_TABLES = Lazy("cropmon.report.single:write_tables")
WRITE_FIELD_LISTS = Lazy("cropmon.report.single:write_field_lists")
WRITE_IMAGES = Lazy("cropmon.report.single:write_images")
WRITE_REPORT = Lazy("cropmon.report.single:write_report")
SUMMARISE = Lazy("cropmon.diagnosis.pooled:summarise_diagnosis")
WRITE_POOLED = Lazy("cropmon.report.pooled:write_pooled")
# run.json key -> (stage, the function that gives it from the slim diagnosis)
DIAGNOSIS_MANIFESTS: dict[str, tuple[str, Lazy]] = {
    "accuracy_assessment": ("accuracy-manifest", Lazy("cropmon.report.active:accuracy_assessment_manifest")),
    "evaluation_design": ("evaluation-design", Lazy("cropmon.report.active:evaluation_design_manifest")),
    "ground_truth": ("active-manifest", Lazy("cropmon.report.active:ground_truth_manifest")),
    "ranking": ("active-manifest", Lazy("cropmon.report.active:ranking_manifest")),
    "suspect_labels": ("active-manifest", Lazy("cropmon.report.active:suspects_manifest")),
    "unlabelled_plan": ("active-manifest", Lazy("cropmon.report.active:unlabelled_manifest")),
}


TASKS: tuple[Lazy, ...] = (DIAGNOSE_RUN, RENDER_IMAGE, MAP_WINDOW, FIELD_COUNTS, WRITE_MAPPED_AREA,
                            WRITE_FIELD_UNCERTAINTY, WRITE_TABLES, WRITE_FIELD_LISTS, WRITE_IMAGES, WRITE_REPORT,
                            SUMMARISE, WRITE_POOLED, *(lazy for _, lazy in DIAGNOSIS_MANIFESTS.values()))


def warm_up() -> None:
    """Import what the tail's tasks run (matplotlib, scikit-learn, geopandas ...), on a worker that has nothing
    better to do yet (pipeline submits it at a low priority)."""
    for lazy in TASKS:
        lazy.load()


# The tail's own steps: each takes the FieldResults (a future on the client) apart for a function of the layers below.


def diagnose_results(results: FieldResults, *, settings: DiagnosisSettings, seed: int) -> Diagnosis:
    diagnosis = DIAGNOSE_RUN(results.table, results.class_counts, settings=settings, seed=seed,
                             catalogue=results.catalogue, mapped_area=results.mapped_area,
                             in_population=results.in_population)
    runtime.trim_freed_memory()
    return diagnosis


def write_fields_gpkg_task(results: FieldResults, *, out_dir: Path) -> None:
    outputs.write_fields_gpkg(results.table, results.source, results.fids, out_dir / "fields.gpkg")


def write_fields_parquet_task(results: FieldResults, *, out_dir: Path) -> None:
    outputs.write_fields_parquet(results.table, results.class_counts, results.source, results.fids,
                                 out_dir / "fields.parquet", out_dir / "field_class_counts.parquet")


def write_mapped_area_task(results: FieldResults, *, out_dir: Path) -> None:
    WRITE_MAPPED_AREA(results.mapped_area, out_dir)


def write_field_uncertainty_task(d: Diagnosis, results: FieldResults, *, out_dir: Path) -> None:
    WRITE_FIELD_UNCERTAINTY(d, results.table, out_dir)


@dataclass(frozen=True)
class Polygons:
    """Reads the polygons of table rows by feature id (what the field lists need of the FieldResults)."""

    source: Any
    fids: Any

    def __call__(self, rows):
        import geopandas as gpd  # on the worker: the client never imports geopandas

        rows = np.asarray(rows, dtype=np.int64)
        return gpd.GeoSeries(self.source.read_geometries(self.fids[rows]), index=rows, crs=self.source.crs)


def polygons_of(results: FieldResults) -> Polygons:
    return Polygons(results.source, results.fids)


def mapped_area_manifest_task(results: FieldResults) -> dict[str, Any]:
    """run.json `mapped_area`: the map's census (valid, invalid, nodata, outside-mask pixels, ha) and the mask."""
    mapped = results.mapped if results.mapped is not None else MappedPixels.zeros(results.catalogue.n)
    table = results.mapped_area
    return {**mapped.as_manifest(),
            "aoi_mask": results.aoi_mask.as_manifest() if results.aoi_mask is not None else None,
            "area_ha": {crop: round(float(ha), 2) for crop, ha in zip(table["crop"], table["area_ha"], strict=True)
                        if ha > 0}}


# -- the client's side ---------------------------------------------------------------------------------------------


def submit_tail(handle: ClusterHandle, job: FieldJob, *, settings: DiagnosisSettings, seed: int,
                destination: Destination, header: dict[str, Any], summarise: bool = False,
                places: list[str] | None = None) -> Tail:
    """Submit every task of one AOI's tail (see the module docstring); returns at once.

    `places` (ClusterHandle.places; the first is the worker that assembles the table): the diagnosis, first in
    line, runs on the table's worker; the two per-field files on the others, side by side with it. Futures inside
    a task's arguments (a dict of pictures, the report's run facts) reach it as their values."""
    results = job.results
    home = places[0] if places else None  # None: no placement (any worker)
    files_on: list[str | None] = [*places[1:]] if places and len(places) > 1 else [home]

    def product(stage: str, write, *args: Any, **kwargs: Any):
        return handle.submit(products.produce, write, *args, destination=destination, stage=stage, **kwargs)

    full = handle.submit(diagnose_results, results, settings=settings, seed=seed, stage="diagnosis", on=home,
                         priority=1)
    made = {"field-gpkg": product("field-gpkg", write_fields_gpkg_task, results, on=files_on[-1]),
            "field-parquet": product("field-parquet", write_fields_parquet_task, results, on=files_on[0]),
            "mapped-area": product("mapped-area", write_mapped_area_task, results)}
    made["field-uncertainty"] = product("field-uncertainty", write_field_uncertainty_task, full, results)
    counts = handle.submit(FIELD_COUNTS, results, stage="field-counts")
    diagnosis = handle.submit(methodcaller("without_candidates"), full, stage="diagnosis-slim")
    window = handle.submit(MAP_WINDOW, results, stage="map-window")
    images = {name: handle.submit(RENDER_IMAGE, name, diagnosis, settings, window, stage="image")
              for name in IMAGE_NAMES}
    polygons = handle.submit(polygons_of, results, stage="polygons")
    made["tables"] = product("tables", WRITE_TABLES, diagnosis, settings)
    made["field-lists"] = product("field-lists", WRITE_FIELD_LISTS, diagnosis, settings, crs=job.raster.crs,
                                  geometries=polygons)
    made["images"] = product("images", WRITE_IMAGES, images)
    made["report"] = product("report", WRITE_REPORT, diagnosis, images, settings=settings,
                             run_info={**header, "fields": counts}, seed=seed)
    summary = handle.submit(SUMMARISE, full, settings=settings, seed=seed, stage="aoi-summary") \
        if summarise else None
    extra = {"mapped_area": handle.submit(mapped_area_manifest_task, results, stage="mapped-area-manifest"),
             **{key: handle.submit(manifest_of, diagnosis, stage=stage)
                for key, (stage, manifest_of) in DIAGNOSIS_MANIFESTS.items()}}
    return Tail(products=made, counts=counts, summary=summary, manifest=extra)


def collect_tail(handle: ClusterHandle, tail: Tail, staging: Path, destination: Destination) -> dict[str, Any]:
    """Wait for one AOI's files (pulling them into `staging` when the workers do not share it), its field counts
    and the small dicts run.json takes from the tail (`Tail.manifest`); returns the counts and replaces each
    future of `tail.manifest` by its value."""
    for product in handle.as_completed(tail.products.values()):
        tail.files.update(receive(handle, product, staging, destination))
    tail.manifest = {key: handle.result(future) for key, future in tail.manifest.items()}
    return handle.result(tail.counts)


def receive(handle: ClusterHandle, product, staging: Path, destination: Destination) -> dict[str, int]:
    """The files of one finished product task: already in `staging` (shared) or in the bucket (uploaded by the
    worker), or pulled piece by piece."""
    files = handle.result(handle.submit(products.product_files, product, stage="product-files"))
    if destination.shared or destination.store:
        return files
    for name, size in files.items():
        with open(staging / name, "wb") as out:
            for start in range(0, size, products.PIECE_BYTES):
                piece = handle.submit(products.product_piece, product, name, start, start + products.PIECE_BYTES,
                                      stage="pull")
                out.write(handle.result(piece))
    return files


def submit_pooled(handle: ClusterHandle, summaries: dict[str, Any], *, settings: DiagnosisSettings, seed: int,
                  destination: Destination):
    """The pooled view of a multi-AOI run, from the AOIs' summaries (futures): one product task."""
    return handle.submit(products.produce, WRITE_POOLED, summaries, destination=destination, settings=settings,
                         seed=seed, stage="pooled")

