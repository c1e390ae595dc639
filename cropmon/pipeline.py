"""run(config): the only place that computes. read -> rasterize -> zonal (one Dask compute) -> outputs.

`analyse_fields` is the engine as a library call (inputs in, per-field table out); `run` adds the cluster, the
outputs on disk (atomically), the diagnosis and the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropmon import __version__, errors
from cropmon import fields as fields_mod
from cropmon import io as cio
from cropmon.cluster import ClusterHandle, TLSFiles, connect
from cropmon.config import RunConfig
from cropmon.labels import CROP_NAMES
from cropmon.rasterize import FieldLayout, RowChunks, burn_values, label_grid, layout_fields
from cropmon.schema import FIELD_TABLE_COLUMNS, text_column
from cropmon.zonal import field_statistics, unique_pairs

log = logging.getLogger(__name__)


@dataclass
class StageTimer:
    """Wall-clock seconds per named stage, in order; with `show`, a ticking line per stage on the terminal."""

    seconds: dict[str, float] = field(default_factory=dict)
    show: bool = False

    @contextlib.contextmanager
    def stage(self, name: str, *, has_own_bar: bool = False) -> Iterator[None]:
        from cropmon.progress import StepClock

        start = time.perf_counter()
        log.info("%s ...", name)
        clock = StepClock(name) if self.show and not has_own_bar else contextlib.nullcontext()
        try:
            with clock:
                yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)
            log.info("%s done in %.2f s", name, self.seconds[name])


@dataclass
class FieldResults:
    """The engine's output: the per-field table (no polygons), class histograms, what was seen, where polygons are.

    The polygons stay in the fields file (`source`, read by feature id `fids`): the outputs stream them through,
    so memory does not grow with the AOI's polygons.
    """

    table: pd.DataFrame  # input order: attributes, results, geometry_status, x, y (a point inside, raster CRS)
    class_counts: pd.DataFrame
    report: fields_mod.FieldReport
    raster: cio.RasterInfo
    layout: FieldLayout
    timings: dict[str, float]
    source: cio.FieldSource
    fids: np.ndarray  # feature id of each row in the fields file
    raster_bounds: np.ndarray  # (n, 4) bounding boxes in the raster's CRS

    def geometries(self, rows: np.ndarray | pd.Index):
        """The input polygons of table rows `rows` (positions), in the fields' CRS, as a GeoSeries."""
        import geopandas as gpd

        rows = np.asarray(rows, dtype=np.int64)
        return gpd.GeoSeries(self.source.read_geometries(self.fids[rows]), index=rows, crs=self.source.crs)


def build_field_graph(info: cio.RasterInfo, prepared: fields_mod.PreparedFields, *, bands):
    """The lazy computation (nothing is computed here) and the layout, over `bands` (io.open_prediction_bands).

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
    return field_statistics(bands, grid, extras, layout, nodata=info.nodata), layout


def report_overlaps(prepared: fields_mod.PreparedFields, layout: FieldLayout, pairs: np.ndarray) -> None:
    """Count the pairs of fields that share pixel centres and name a few of them."""
    prepared.report.overlapping_pairs = len(pairs)
    if len(pairs):
        rows = layout.row_of_label[np.unique(pairs.ravel()) - 1]
        prepared.report.add("overlapping_fields", prepared.table["field_id"].iloc[rows])
        log.warning("%d pairs of fields overlap (share pixel centres); shared pixels count once", len(pairs))


GEOMETRY_CASES = ("repaired", "multipolygon", "empty", "not_polygon")


def classify_unread_geometries(prepared: fields_mod.PreparedFields, rows: np.ndarray, raster_crs: str,
                               *, batch_rows: int = cio.FIELD_BATCH_ROWS) -> np.ndarray:
    """Geometry status of fields no chunk read (outside the raster), read here in batches: outside | empty |
    not_polygon (a point or line, or an empty polygon, is reported as such wherever it lies)."""
    status = text_column(len(rows), "outside")
    for start in range(0, len(rows), batch_rows):
        part = rows[start : start + batch_rows]
        geometry = prepared.source.read_geometries(prepared.fids[part])
        _, found = fields_mod.prepare_geometries(geometry, fields_crs=prepared.source.crs, raster_crs=raster_crs)
        status[start : start + batch_rows] = np.where(np.isin(found, ["empty", "not_polygon"]), found, "outside")
    return status


class FieldColumns:
    """The per-field result columns (input order), filled chunk summary by chunk summary as they arrive."""

    FLOATS = ("majority_crop", "purity", "runner_up_crop", "runner_up_share", "vote_margin", "confidence_score",
              "confidence_std", "confidence_majority", "x", "y")

    def __init__(self, n: int, layout: FieldLayout) -> None:
        self.n = n
        self.layout = layout
        self.histogram_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, classes, pixels)
        self.columns: dict[str, np.ndarray] = {
            "n_pixels": np.zeros(n, np.int64),
            "n_invalid": np.zeros(n, np.int64),
            "n_nodata": np.zeros(n, np.int64),
            "n_conf_invalid": np.zeros(n, np.int64),
            "tie": np.zeros(n, bool),
            "pixel_rule": text_column(n, "none"),
            "geometry_status": text_column(n, "empty"),  # null geometries get no label: never read
            **{name: np.full(n, np.nan) for name in self.FLOATS},
        }
        self.overlap_pairs: list[np.ndarray] = []

    def add(self, index: int, summary: dict[str, np.ndarray]) -> None:
        """Take one chunk's summary (zonal.finish_owned_fields) into the columns; `index` is its graph position."""
        rows = self.layout.row_of_label[summary["label"] - 1]
        field, crop = np.nonzero(summary["class_counts"])  # a field covers ~2 of the 32 classes
        self.histogram_parts.append((rows[field].astype(np.int32), crop.astype(np.int8),
                                     summary["class_counts"][field, crop]))
        for name, values in self.columns.items():
            values[rows] = summary[name]
        self.overlap_pairs.append(summary["overlap_pairs"])

    def class_counts(self, index: pd.Index) -> pd.DataFrame:
        """The (fields x 32 crops) pixel histograms as a sparse DataFrame (zeros not stored: ~20 bytes a field
        instead of 128), for metrics.pixel_confusion_matrix and the field_class_counts output."""
        import scipy.sparse

        parts = self.histogram_parts or [(np.empty(0, np.int32), np.empty(0, np.int8), np.empty(0, np.int32))]
        rows, crops, pixels = (np.concatenate(p) for p in zip(*parts, strict=True))
        self.histogram_parts = []
        matrix = scipy.sparse.csc_matrix((pixels, (rows, crops)), shape=(self.n, len(CROP_NAMES)), dtype=np.int32)
        return pd.DataFrame.sparse.from_spmatrix(matrix, index=index, columns=list(CROP_NAMES))


def assemble_table(prepared: fields_mod.PreparedFields, layout: FieldLayout, results: FieldColumns,
                   raster_crs: str):
    """Per-field table in input order: the reference columns first, then the extras."""
    table = prepared.table
    n = len(table)
    columns = results.columns
    unread = np.flatnonzero((layout.label_of_row == 0) & np.isfinite(prepared.raster_bounds).all(axis=1))
    columns["geometry_status"][unread] = classify_unread_geometries(prepared, unread, raster_crs)
    for name, values in columns.items():
        table[name] = values
    results.columns = {}

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
    names = np.array([*CROP_NAMES, ""], dtype=object)
    table["majority_crop_label"] = names[np.where(has_pixels, np.nan_to_num(majority, nan=0), -1).astype(int)]
    gt = table["gt_class"]
    decidable = has_pixels & gt.notna().to_numpy()
    match = pd.array(np.full(n, pd.NA), dtype="Int8")
    match[decidable] = (majority[decidable] == gt.to_numpy(dtype=float, na_value=np.nan)[decidable]).astype(int)
    table["gt_ml_match"] = match

    ordered = [c for c in FIELD_TABLE_COLUMNS if c in table.columns]
    rest = [c for c in table.columns if c not in ordered]
    out = table[ordered + rest]
    return out, results.class_counts(out.index)


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
) -> FieldResults:
    """Per-field majority class, purity, runner-up and confidence of `fields` on `raster` (one Dask compute)."""
    timer = StageTimer(show=progress)
    with timer.stage("inspect raster"):
        info = cio.inspect_raster(raster, class_band=class_band, confidence_band=confidence_band)
        chunk_rows = cio.chunk_rows_for(info, chunk_rows)
        bands = cio.open_prediction_bands(info, chunk_rows=chunk_rows)  # lazy: reads the header only
    with timer.stage("read fields"):
        source = cio.read_field_table(fields, layer=layer, label_column=label_column)
    with timer.stage("prepare fields"):
        prepared = fields_mod.prepare_fields(source, raster_crs=info.crs, label_column=label_column)
        prepared.table.attrs["source"] = source.table.attrs.get("source", {})
        del source
    handle_cm = contextlib.nullcontext(cluster) if cluster is not None else connect(scheduler)
    with handle_cm as handle:
        with timer.stage("build graph"):
            graph, layout = build_field_graph(info, prepared, bands=bands)
            results = FieldColumns(len(prepared.table), layout)
        with timer.stage("compute", has_own_bar=True), _pixel_read_errors(info):
            handle.compute(graph, results.add, progress=progress, no_worker_timeout=no_worker_timeout)
        del graph
    with timer.stage("assemble table"):
        report_overlaps(prepared, layout, unique_pairs(results.overlap_pairs))
        table, class_counts = assemble_table(prepared, layout, results, info.crs)
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
    )


@contextlib.contextmanager
def _pixel_read_errors(info: cio.RasterInfo) -> Iterator[None]:
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


def _raster_bounds(info: cio.RasterInfo) -> list[float]:
    a, _, c, _, e, f = info.transform
    return [round(c, 6), round(f + e * info.height, 6), round(c + a * info.width, 6), round(f, 6)]


def versions() -> dict[str, str]:
    """Versions of cropmon, Python and the libraries that shape the results."""
    import importlib.metadata as md

    out = {"cropmon": __version__, "python": platform.python_version()}
    for dist in ("dask", "distributed", "xarray", "rioxarray", "flox", "rasterio", "shapely", "pyogrio",
                 "geopandas", "numpy", "pandas", "scikit-learn", "matplotlib"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    import rasterio

    out["gdal"] = rasterio.__gdal_version__
    return out


def default_out_dir(config: RunConfig, raster: str, *, twin: bool) -> Path:
    if config.out:
        return Path(config.out)
    return Path("outputs") / ("twin" if twin else Path(raster).stem)


def _want_progress(config: RunConfig) -> bool:
    return config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())


@dataclass
class RunOutcome:
    out_dir: Path
    manifest: dict[str, Any]
    results: FieldResults | None  # None for a multi-AOI run (only summaries are kept)


def resolve_inputs(config: RunConfig, *, progress: bool) -> tuple[str, str, bool]:
    """The raster and fields to analyse: the given ones, or the digital twin (made once, then reused)."""
    if config.raster and config.fields:
        return config.raster, config.fields, False
    from cropmon import twin

    paths = twin.ensure_twin(scale=config.twin_scale, progress=_twin_progress() if progress else None)
    return str(paths.raster), str(paths.fields), True


def _twin_progress():
    from tqdm import tqdm

    bar = tqdm(total=100, desc="making the digital twin (once)", unit="%", file=sys.stderr)

    def update(step: str, fraction: float) -> None:
        bar.set_postfix_str(step)
        bar.n = round(100 * fraction)
        bar.refresh()
        if fraction >= 1:
            bar.close()

    return update


def run(config: RunConfig) -> RunOutcome:
    """The whole job: inputs -> per-field table on the cluster -> outputs written atomically -> manifest.

    With `config.aois`, every AOI is analysed on the same cluster, one graph after another, into
    `<out>/<aoi>/`, followed by the pooled view across AOIs in `<out>/`.
    """
    if config.aois:
        return run_many(config)
    started = time.time()
    progress = _want_progress(config)
    timer = StageTimer(show=progress)
    with timer.stage("inputs", has_own_bar=True):
        raster, fields, is_twin = resolve_inputs(config, progress=progress)
        out_dir = default_out_dir(config, raster, twin=is_twin)
        cio.check_writable(out_dir)
        _inspect_inputs(raster, fields, config)
    profile = profile_scratch(config)
    with _cluster(config) as handle:
        results = _analyse(raster, fields, config, handle, progress=progress, profile=profile)
        cluster_info = handle.describe()
    with cio.atomic_output_dir(out_dir) as staged:
        place_profile(config.profile, profile, out_dir, staged.staging)
        manifest = write_run_outputs(
            results, config, staged.staging, cluster_info=cluster_info, is_twin=is_twin, started=started, timer=timer
        )
    log.info("outputs in %s (%.1f s)", out_dir, manifest["timings_s"]["total"])
    return RunOutcome(out_dir=Path(out_dir), manifest=manifest, results=results)


def run_many(config: RunConfig) -> RunOutcome:
    """Several AOIs on one cluster: per-AOI outputs, then the pooled view (metrics by crop x AOI, label allocation).

    Only each AOI's compact summary outlives its own analysis, so memory does not grow with the number of AOIs.
    """
    from cropmon import pooled

    started = time.time()
    progress = _want_progress(config)
    out_dir = Path(config.out) if config.out else Path("outputs") / "aois"
    cio.check_writable(out_dir)
    for name, raster, fields in config.aois:
        try:
            _inspect_inputs(raster, fields, config)
        except errors.InputError as exc:
            raise type(exc)(f"AOI {name}: {exc.problem}", path=exc.path, fix=exc.fix) from exc
    settings = _diagnosis_settings(config)
    summaries: dict[str, Any] = {}
    manifests: dict[str, dict] = {}
    with cio.atomic_output_dir(out_dir) as staged, _cluster(config) as handle:
        for name, raster, fields in config.aois:
            timer = StageTimer(show=progress)
            aoi_started = time.time()
            log.info("AOI %s: %s + %s", name, raster, fields)
            profile = profile_scratch(config)
            results = _analyse(raster, fields, config, handle, progress=progress, profile=profile)
            place_profile(config.profile, profile, out_dir, staged.staging)  # the last AOI's report is kept
            aoi_dir = staged.staging / name
            aoi_dir.mkdir()
            manifests[name] = write_run_outputs(
                results, config, aoi_dir, cluster_info=handle.describe(), is_twin=False, started=aoi_started,
                timer=timer,
            )
            summaries[name] = pooled.summarise_aoi(
                results.table, results.class_counts, settings=settings, seed=config.seed
            )
            del results  # only the compact summary outlives the AOI
        written = pooled.write_pooled(summaries, staged.staging, settings=settings, seed=config.seed)
        manifest = {
            "cropmon_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "aois": {
                name: {"raster": r, "fields": f, "n_fields": manifests[name]["fields"]["n_input"],
                       "timings_s": manifests[name]["timings_s"]}
                for name, r, f in config.aois
            },
            "settings": config.as_manifest(),
            "versions": versions(),
            "cluster": handle.describe(),
            "pooled_outputs": sorted(written),
            "timings_s": {"total": round(time.time() - started, 3)},
        }
        cio.write_json(staged.path("run.json"), manifest)
    log.info("outputs of %d AOIs in %s (%.1f s)", len(config.aois), out_dir, manifest["timings_s"]["total"])
    return RunOutcome(out_dir=out_dir, manifest=manifest, results=None)


def _inspect_inputs(raster: str, fields: str, config: RunConfig) -> None:
    """Fail before any work on a bad raster or fields header."""
    cio.inspect_raster(raster, class_band=config.class_band, confidence_band=config.confidence_band)
    cio.inspect_fields(fields, layer=config.layer, label_column=config.label_column)


@contextlib.contextmanager
def _cluster(config: RunConfig) -> Iterator[ClusterHandle]:
    with connect(
        config.scheduler,
        workers=config.workers,
        threads_per_worker=config.threads_per_worker,
        memory_limit=config.memory_limit,
        dashboard_address=config.dashboard_address,
        tls=TLSFiles(config.tls_ca_file, config.tls_cert, config.tls_key),
    ) as handle:
        if handle.dashboard_link:
            print(f"Dask dashboard: {handle.dashboard_link}", file=sys.stderr)
        yield handle


def _analyse(
    raster: str, fields: str, config: RunConfig, handle: ClusterHandle, *, progress: bool, profile: Path | None = None
) -> FieldResults:
    with _performance_report(handle, profile):
        return analyse_fields(
            raster,
            fields,
            cluster=handle,
            chunk_rows=config.chunk_rows,
            layer=config.layer,
            label_column=config.label_column,
            class_band=config.class_band,
            confidence_band=config.confidence_band,
            progress=progress,
            no_worker_timeout=config.no_worker_timeout,
        )


def write_run_outputs(
    results: FieldResults,
    config: RunConfig,
    out_dir: Path,
    *,
    cluster_info: dict[str, Any],
    is_twin: bool,
    started: float,
    timer: StageTimer,
) -> dict[str, Any]:
    """Every output of one AOI into `out_dir` (a staging directory), the manifest last; returns the manifest."""
    timer.seconds.update(results.timings)
    manifest = {
        "cropmon_version": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "inputs": {
            "raster": results.raster.as_manifest(),
            "fields": {
                **results.table.attrs.get("source", {}),
                "crs": fields_mod.crs_name(results.source.crs),
                "n_fields": len(results.table),
            },
            "digital_twin": is_twin,
        },
        "settings": config.as_manifest(),
        "versions": versions(),
        "cluster": cluster_info,
        "fields": _field_counts(results),
        "timings_s": timer.seconds,
    }
    staged = cio.StagedOutput(final=out_dir, staging=out_dir)
    with timer.stage("write outputs"):
        cio.write_field_outputs(results.table, results.class_counts, results.source, results.fids, staged)
    with timer.stage("diagnosis and report"):
        staged.written.extend(write_diagnosis_outputs(results, config, manifest, out_dir))
    manifest["timings_s"] = {**timer.seconds, "total": round(time.time() - started, 3)}
    manifest["outputs"] = sorted([*staged.written, "run.json"])
    cio.write_json(staged.path("run.json"), manifest)
    return manifest


def map_window(results: FieldResults, *, rows: int = 240, cols: int = 328):
    """The report's side-by-side window: where the most misclassified fields are, at the real clip's size.

    Only the polygons whose boxes meet the window are read (by feature id), prepared as the engine does.
    """
    from affine import Affine

    from cropmon.plots import MapWindow

    info = results.raster
    rows, cols = min(rows, info.height), min(cols, info.width)
    transform = Affine(*info.transform)
    table = results.table
    wrong = (table["gt_ml_match"] == 0).fillna(False).to_numpy(dtype=bool)
    pick = wrong if wrong.any() else (table["n_pixels"] > 0).to_numpy()
    if not pick.any():
        return None
    col_f, row_f = ~transform * (table["x"].to_numpy()[pick], table["y"].to_numpy()[pick])
    counts, row_edges, col_edges = np.histogram2d(
        row_f, col_f, bins=(max(1, info.height // rows), max(1, info.width // cols)),
        range=((0, info.height), (0, info.width)),
    )
    r, c = np.unravel_index(np.argmax(counts), counts.shape)
    row_off = int(min(max(row_edges[r], 0), info.height - rows))
    col_off = int(min(max(col_edges[c], 0), info.width - cols))
    bands = cio.read_raster_window(info, row_off=row_off, col_off=col_off, height=rows, width=cols)
    window_transform = transform @ Affine.translation(col_off, row_off)
    left, top = window_transform * (0, 0)
    right, bottom = window_transform * (cols, rows)
    gt_values = table["gt_class"].to_numpy(dtype=float, na_value=np.nan)
    minx, miny, maxx, maxy = results.raster_bounds.T
    with np.errstate(invalid="ignore"):  # NaN bounds of null geometries compare False
        in_window = (maxx >= left) & (minx <= right) & (maxy >= bottom) & (miny <= top)
    known = np.flatnonzero(~np.isnan(gt_values) & in_window)
    geometry, _ = fields_mod.prepare_geometries(
        results.source.read_geometries(results.fids[known]), fields_crs=results.source.crs, raster_crs=info.crs
    )
    gt = burn_values(geometry, gt_values[known].astype(np.int32) + 1, transform=window_transform,
                     shape=(rows, cols)) - 1
    return MapWindow(gt_class=gt, predicted=bands[0], confidence=bands[1], extent=(left, right, bottom, top),
                     crs=info.crs)


def _field_counts(results: FieldResults) -> dict[str, Any]:
    table = results.table
    report = results.report.as_manifest()
    analysed = int((table["n_pixels"] > 0).sum())
    return {
        "n_input": len(table),
        "n_with_pixels": analysed,
        "n_without_pixels": len(table) - analysed,
        "n_scored": int(table["gt_ml_match"].notna().sum()),
        "pixel_rule": table["pixel_rule"].value_counts().to_dict(),
        "geometry_status": table["geometry_status"].value_counts().to_dict(),
        "label_status": table["label_status"].value_counts().loc[lambda c: c > 0].to_dict(),
        **report,
    }


def write_diagnosis_outputs(results: FieldResults, config: RunConfig, manifest: dict, out_dir: Path) -> list[str]:
    """Metrics, confusions, underperforming crops, the label plan, pictures and the report."""
    from cropmon.report import write_diagnosis

    settings = _diagnosis_settings(config)
    window = map_window(results)
    written = write_diagnosis(
        results.table, results.class_counts, out_dir, settings=settings, run_info=manifest, map_window=window,
        seed=config.seed, geometries=results.geometries,
    )
    return sorted(written)


def _diagnosis_settings(config: RunConfig):
    from cropmon.diagnose import DiagnosisSettings

    return DiagnosisSettings.from_mapping(config.diagnosis)


def profile_scratch(config: RunConfig) -> Path | None:
    """Where the performance report is first written (moved next to the outputs by place_profile)."""
    if not config.profile:
        return None
    fd, name = tempfile.mkstemp(prefix="cropmon-profile-", suffix=".html")
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def _performance_report(handle: ClusterHandle, path: Path | None) -> Iterator[None]:
    if not path:
        yield
        return
    if handle.client is None:
        raise errors.ConfigError(
            "--profile needs a distributed scheduler", fix="use --scheduler local (the default) or an address"
        )
    from distributed import performance_report

    # performance_report talks to the current client; a remote client is not the default one (set_as_default=False).
    with handle.client.as_current(), performance_report(filename=path):
        yield
    log.info("Dask performance report written (it goes to %s with the outputs)", path)


def place_profile(profile: str | None, report: Path | None, out_dir: Path, staging: Path) -> None:
    """Move the run's performance report to `--profile`: into the staging directory when that path lies in the
    output directory (so the atomic swap keeps it), else straight to its place."""
    if not profile or report is None or not report.exists():
        return
    target = Path(profile).resolve()
    final = Path(out_dir).resolve()
    if target.is_relative_to(final):
        target = staging / target.relative_to(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(report, target)
    log.info("Dask performance report: %s", profile)
