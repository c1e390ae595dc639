"""The tail of a run: everything after the engine's per-field table, as tasks on the cluster.

For one AOI, `submit_tail` submits, without waiting for anything (each task starts as soon as what it needs
exists; independent ones run side by side on the workers):

  diagnosis      analysis.diagnose_run on the per-field table           stays on the cluster
  field-gpkg     fields.gpkg (the per-field table with the input polygons, streamed)
  field-parquet  fields.parquet, field_class_counts.parquet (side by side with the GeoPackage)
  field-counts   manifest.field_counts                                  small: for run.json and the report
  mapped-area    mapped_area.csv (the map's census; no ground truth needed) and run.json `mapped_area`
  field-uncertainty  field_uncertainty.parquet (every field's scores, from the diagnosis; no ground truth needed)
  map-window     report.map_window (reads a window of the raster)        a few small arrays
  image          one task per picture of the report                      PNG bytes
  tables, field-lists, images, report                                    files
  aoi-summary    analysis.pooled.summarise_diagnosis (multi-AOI runs)     compact, stays on the cluster

Every file goes to the run's staging directory through io/outputs.produce: renamed into place by the worker when
it shares the directory with the client, uploaded by the worker when the outputs go to a bucket, else pulled by
the client in pieces. `collect_tail` waits for the files
and returns what run.json says about them. The client never holds the per-field table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cropmon import runtime
from cropmon.analysis.settings import DiagnosisSettings
from cropmon.io import outputs
from cropmon.io.outputs import Destination
from cropmon.tasks import ClusterHandle

if TYPE_CHECKING:
    from cropmon.analysis.diagnose import Diagnosis
    from cropmon.analysis.pooled import AOISummary
    from cropmon.engine.assemble import FieldResults
    from cropmon.engine.job import FieldJob
    from cropmon.report.document import Image

log = logging.getLogger(__name__)

# Pictures of one AOI's report, one task each (report/images.py renders them).
IMAGE_NAMES: tuple[str, ...] = (
    "confusion_heatmap.png", "agreement_by_crop.png", "f1_vs_confidence.png", "block_error_map.png", "map_window.png",
    "area_adjusted.png",
)


@dataclass
class Tail:
    """One AOI's tail, submitted: futures of its products (files), its field counts and its summary."""

    products: dict[str, Any]  # stage -> future of io.outputs.Product
    counts: Any  # future of manifest.field_counts
    summary: Any | None = None  # future of an AOISummary (multi-AOI runs)
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes, once collected
    manifest: dict[str, Any] = field(default_factory=dict)  # run.json key -> future of a small dict


# -- what runs on the workers (top-level functions: they travel to the workers by reference; each imports what it
# -- needs when it runs, so the client, which only submits them, never imports matplotlib, scikit-learn ...) --------


def warm_up() -> None:
    """Import what the tail's tasks run (matplotlib, scikit-learn, geopandas ...), on a worker that has nothing
    better to do yet (pipeline submits it at a low priority)."""
    import cropmon.analysis.pooled
    import cropmon.report.images
    import cropmon.report.map_window
    import cropmon.report.single  # noqa: F401


def diagnose_results(results: FieldResults, *, settings: DiagnosisSettings, seed: int) -> Diagnosis:
    from cropmon.analysis.diagnose import diagnose_run

    diagnosis = diagnose_run(results.table, results.class_counts, settings=settings, seed=seed,
                             catalogue=results.catalogue, mapped_area=results.mapped_area,
                             in_population=results.in_population)
    runtime.trim_freed_memory()
    return diagnosis


def slim_diagnosis(d: Diagnosis) -> Diagnosis:
    return d.without_candidates()


def write_fields_gpkg_task(results: FieldResults, *, out_dir: Path) -> None:
    outputs.write_fields_gpkg(results.table, results.source, results.fids, out_dir / "fields.gpkg")


def write_fields_parquet_task(results: FieldResults, *, out_dir: Path) -> None:
    outputs.write_fields_parquet(results.table, results.class_counts, results.source, results.fids,
                                 out_dir / "fields.parquet", out_dir / "field_class_counts.parquet")


@dataclass(frozen=True)
class Polygons:
    """Reads the polygons of table rows by feature id (what the field lists need of the FieldResults)."""

    source: Any
    fids: Any

    def geometries(self, rows):
        import geopandas as gpd
        import numpy as np

        rows = np.asarray(rows, dtype=np.int64)
        return gpd.GeoSeries(self.source.read_geometries(self.fids[rows]), index=rows, crs=self.source.crs)


def polygons_of(results: FieldResults) -> Polygons:
    return Polygons(results.source, results.fids)


def write_mapped_area_task(results: FieldResults, *, out_dir: Path) -> None:
    from cropmon.report.accuracy import write_mapped_area

    write_mapped_area(results.mapped_area, out_dir)


def mapped_area_manifest_task(results: FieldResults) -> dict[str, Any]:
    """run.json `mapped_area`: the map's census (valid, invalid, nodata, outside-mask pixels, ha) and the mask."""
    from cropmon.engine.mapped import MappedPixels

    mapped = results.mapped if results.mapped is not None else MappedPixels.zeros(results.catalogue.n)
    table = results.mapped_area
    return {**mapped.as_manifest(),
            "aoi_mask": results.aoi_mask.as_manifest() if results.aoi_mask is not None else None,
            "area_ha": {crop: round(float(ha), 2) for crop, ha in zip(table["crop"], table["area_ha"], strict=True)
                        if ha > 0}}


def write_field_uncertainty_task(d: Diagnosis, results: FieldResults, *, out_dir: Path) -> None:
    from cropmon.report.active import write_field_uncertainty

    write_field_uncertainty(d, results.table, out_dir)


def accuracy_manifest_task(d: Diagnosis) -> dict[str, Any]:
    from cropmon.report.accuracy import accuracy_manifest
    from cropmon.report.active import NO_ACCURACY

    if not d.has_labels:
        return {"estimated": False, "why": NO_ACCURACY}
    return accuracy_manifest(d.accuracy)


ACTIVE_MANIFEST_KEYS = ("ground_truth", "ranking", "suspect_labels", "unlabelled_plan")


def active_manifest_task(key: str, d: Diagnosis) -> dict[str, Any]:
    """run.json `ground_truth`, `ranking`, `suspect_labels` or `unlabelled_plan` (report/active.py)."""
    from cropmon.report import active

    return {"ground_truth": active.ground_truth_manifest, "ranking": active.ranking_manifest,
            "suspect_labels": active.suspects_manifest, "unlabelled_plan": active.unlabelled_manifest}[key](d)


def evaluation_design_task(d: Diagnosis) -> dict[str, Any]:
    """run.json `evaluation_design`: how the held-back probability sample was drawn (analysis/evaluation.py)."""
    return d.selection.design.as_manifest() if d.selection.design is not None else {}


def field_counts_task(results: FieldResults) -> dict[str, Any]:
    from cropmon.manifest import field_counts

    return field_counts(results)


def map_window_task(results: FieldResults):
    from cropmon.report.map_window import map_window

    return map_window(results)


def render_image_task(name: str, d: Diagnosis, settings: DiagnosisSettings, window) -> Image | None:
    from cropmon.report.images import render_image

    return render_image(name, d, settings, window)


def write_tables_task(d: Diagnosis, settings: DiagnosisSettings, *, out_dir: Path) -> None:
    from cropmon.report.single import write_tables

    write_tables(d, settings, out_dir)


def write_field_lists_task(d: Diagnosis, polygons: Polygons, *, settings: DiagnosisSettings, crs: str,
                           out_dir: Path) -> None:
    from cropmon.report.single import write_field_lists

    write_field_lists(d, settings, out_dir, crs=crs, geometries=polygons.geometries)


def write_images_task(*images: Image | None, out_dir: Path) -> None:
    from cropmon.report.single import write_images

    write_images({image.name: image for image in images if image is not None}, out_dir)


def write_report_task(d: Diagnosis, counts: dict[str, Any], *images: Image | None, header: dict[str, Any],
                      settings: DiagnosisSettings, seed: int, out_dir: Path) -> None:
    from cropmon.report.single import write_report

    pictures = {image.name: image for image in images if image is not None}
    write_report(d, pictures, out_dir, settings=settings, run_info={**header, "fields": counts}, seed=seed)


def summarise_task(d: Diagnosis, *, settings: DiagnosisSettings, seed: int) -> AOISummary:
    from cropmon.analysis.pooled import summarise_diagnosis

    return summarise_diagnosis(d, settings=settings, seed=seed)


def write_pooled_task(names: list[str], *summaries: AOISummary, settings: DiagnosisSettings, seed: int,
                      out_dir: Path) -> None:
    from cropmon.report.pooled import write_pooled

    write_pooled(dict(zip(names, summaries, strict=True)), out_dir, settings=settings, seed=seed)


# -- the client's side ---------------------------------------------------------------------------------------------


def submit_tail(handle: ClusterHandle, job: FieldJob, *, settings: DiagnosisSettings, seed: int,
                destination: Destination, header: dict[str, Any], summarise: bool = False,
                places: list[str] | None = None) -> Tail:
    """Submit every task of one AOI's tail (see the module docstring); returns at once.

    `places` (ClusterHandle.places; the first is the worker that assembles the table): the diagnosis, first in
    line, runs on the table's worker; the two per-field files on the others, side by side with it."""
    results = job.results
    home = places[0] if places else None  # None: no placement (any worker)
    files_on: list[str | None] = [*places[1:]] if places and len(places) > 1 else [home]

    def product(stage: str, write, *args: Any, **kwargs: Any):
        return handle.submit(outputs.produce, write, *args, destination=destination, stage=stage, **kwargs)

    full = handle.submit(diagnose_results, results, settings=settings, seed=seed, stage="diagnosis", on=home,
                         priority=1)
    products = {"field-gpkg": product("field-gpkg", write_fields_gpkg_task, results, on=files_on[-1]),
                "field-parquet": product("field-parquet", write_fields_parquet_task, results, on=files_on[0]),
                "mapped-area": product("mapped-area", write_mapped_area_task, results)}
    products["field-uncertainty"] = product("field-uncertainty", write_field_uncertainty_task, full, results)
    counts = handle.submit(field_counts_task, results, stage="field-counts")
    diagnosis = handle.submit(slim_diagnosis, full, stage="diagnosis-slim")
    window = handle.submit(map_window_task, results, stage="map-window")
    images = [handle.submit(render_image_task, name, diagnosis, settings, window, stage="image")
              for name in IMAGE_NAMES]
    polygons = handle.submit(polygons_of, results, stage="polygons")
    products["tables"] = product("tables", write_tables_task, diagnosis, settings)
    products["field-lists"] = product("field-lists", write_field_lists_task, diagnosis, polygons, settings=settings,
                                      crs=job.raster.crs)
    products["images"] = product("images", write_images_task, *images)
    products["report"] = product("report", write_report_task, diagnosis, counts, *images, header=header,
                                 settings=settings, seed=seed)
    summary = handle.submit(summarise_task, full, settings=settings, seed=seed, stage="aoi-summary") \
        if summarise else None
    extra = {"mapped_area": handle.submit(mapped_area_manifest_task, results, stage="mapped-area-manifest"),
             "accuracy_assessment": handle.submit(accuracy_manifest_task, diagnosis, stage="accuracy-manifest"),
             "evaluation_design": handle.submit(evaluation_design_task, diagnosis, stage="evaluation-design"),
             **{key: handle.submit(active_manifest_task, key, diagnosis, stage="active-manifest")
                for key in ACTIVE_MANIFEST_KEYS}}
    return Tail(products=products, counts=counts, summary=summary, manifest=extra)


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
    files = handle.result(handle.submit(outputs.product_files, product, stage="product-files"))
    if destination.shared or destination.store:
        return files
    for name, size in files.items():
        with open(staging / name, "wb") as out:
            for start in range(0, size, outputs.PIECE_BYTES):
                piece = handle.submit(outputs.product_piece, product, name, start, start + outputs.PIECE_BYTES,
                                      stage="pull")
                out.write(handle.result(piece))
    return files


def submit_pooled(handle: ClusterHandle, summaries: dict[str, Any], *, settings: DiagnosisSettings, seed: int,
                  destination: Destination):
    """The pooled view of a multi-AOI run, from the AOIs' summaries (futures): one product task."""
    return handle.submit(outputs.produce, write_pooled_task, list(summaries), *summaries.values(),
                         destination=destination, settings=settings, seed=seed, stage="pooled")

