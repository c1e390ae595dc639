"""cropmon as a library, for notebooks and scripts: `analyse`, `diagnose`, `tables_of`, `report_of`, `run`, `compare`.

    import cropmon

    results = cropmon.analyse("predictions.tif", "fields.gpkg", scheduler="threads")
    d = cropmon.diagnose(results)
    d.underperforming.head()             # the worst crops, with how sure the rule is
    cropmon.report_of(d, results)   # the HTML report, shown by a notebook cell
    cropmon.run(raster="predictions.tif", fields="fields.gpkg", out="outputs/v1")   # what the CLI does

Bad input raises the typed errors of `cropmon.errors` (InputError and its kinds: the CLI's exit code 2;
ClusterError: exit code 3), with the file, the problem and the fix in the message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from cropmon import errors, pipeline
from cropmon.catalogue import Catalogue
from cropmon.cluster import ClusterSpec, connect
from cropmon.config import OutputsVia, Progress, RunConfig, build_config
from cropmon.diagnosis.compare import DEFAULT_BOOTSTRAP
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.engine.job import FieldResults, analyse_fields
from cropmon.engine.settings import TieBreak
from cropmon.engine.zonal import warm_up
from cropmon.io.store import StorageSettings
from cropmon.tasks import ClusterHandle, use_client

if TYPE_CHECKING:
    import geopandas
    import xarray

    from cropmon.api.diagnosis import diagnose, report_of, tables_of
    from cropmon.cluster import DaskClient
    from cropmon.diagnosis.diagnose import Diagnosis
    from cropmon.report.compare import Comparison

__all__ = ["Comparison", "Diagnosis", "analyse", "compare", "diagnose", "report_of", "run", "tables_of"]

# The diagnosis and the comparison load scikit-learn and matplotlib (slow imports): `run`, which the CLI calls, needs
# neither on the client (the tail runs them on the workers), so they load on first use (PEP 562).
_LAZY = {"Diagnosis": "cropmon.diagnosis.diagnose", "diagnose": "cropmon.api.diagnosis",
         "report_of": "cropmon.api.diagnosis", "tables_of": "cropmon.api.diagnosis",
         "Comparison": "cropmon.report.compare"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cropmon.api' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


class AnalyseOptions(TypedDict, total=False):
    """The run's settings `analyse` takes, each as RunConfig declares it (its help: docs' settings page): what the
    engine reads and how, then the cluster's. Checked as the CLI checks its flags."""

    layer: str | None
    label_column: str
    no_labels: bool
    class_band: int
    confidence_band: int
    chunk_rows: int | None
    progress: Progress
    no_worker_timeout: float
    gdal: StorageSettings | Mapping[str, str]  # GDAL's options, e.g. {"AWS_S3_ENDPOINT": "host:9000"}
    workers: int | None  # a local cluster's
    threads_per_worker: int | None
    memory_limit: str
    dashboard_address: str
    connect_timeout: float  # a scheduler's address
    tls_ca_file: str | None  # a tls:// scheduler's
    tls_cert: str | None
    tls_key: str | None


ANALYSE_OPTIONS: tuple[str, ...] = tuple(AnalyseOptions.__annotations__)


class RunOptions(AnalyseOptions, total=False):
    """The settings `run` takes besides raster, fields and out: all of RunConfig's, typed as it types them (a
    table may also be given as a mapping, as a config file's table)."""

    scheduler: str | None
    classes: str | Catalogue | Mapping[str, list[str]] | None
    aois: Sequence[tuple[str, ...] | str | Mapping[str, str]]  # (NAME, RASTER, FIELDS[, MASK]), as --aoi, or a table
    aoi_mask: str | None
    twin_scale: float
    scratch_dir: str | None
    profile: str | None
    outputs_via: OutputsVia
    tie_break: TieBreak
    seed: int
    diagnosis: DiagnosisSettings | Mapping[str, Any]
    cluster: ClusterSpec | Mapping[str, Any] | None


def analyse(raster: str | os.PathLike[str] | xarray.DataArray,
            fields: str | os.PathLike[str] | geopandas.GeoDataFrame, *, scheduler: str | None = None,
            client: DaskClient | None = None, classes: Catalogue | Mapping[str, list[str]] | str | Path | None = None,
            **options: Unpack[AnalyseOptions]) -> FieldResults:
    """Per-field class histograms, majority class, purity and confidence of `fields` on `raster`, on Dask.

    - `raster`: the prediction GeoTIFF's path, or a rioxarray DataArray opened from a file
      (`rioxarray.open_rasterio(path)`): cropmon reads that file itself, whole (bands by `class_band` /
      `confidence_band`, not by the array's selection; a spatial subset is refused: write it out first).
    - `fields`: a vector file's path, or a GeoDataFrame. A GeoDataFrame is written once to a temporary GeoPackage
      (layer `fields`, in `tempfile.gettempdir()`; the workers read their polygons from it, so on a remote cluster
      pass a path on shared storage instead); it is removed when the results are garbage-collected. The table
      keeps the GeoDataFrame's row order (its index is not kept: `field_id` names the rows).
    - `scheduler`: 'threads' (in-process), 'local' (a LocalCluster, the default unless DASK_SCHEDULER_ADDRESS is
      set) or 'tcp://HOST:PORT'; `client`: your own `distributed.Client`, used as it is and never closed.
    - `classes`: the model's class list (path to JSON/CSV, a {crop: [aliases]} mapping or a Catalogue); default u0c.
    - `options`: the run's settings of `AnalyseOptions`, named and typed as RunConfig declares them (the settings
      page says what each does). `gdal`'s options for object storage are set in this process and on every worker
      for the call (docs/object-storage.md). Only these arguments count: no config file, no CROPMON_* variable
      (`run` reads those).
    - Fields without labels (no `normalized_label` column, `no_labels=True`, or only some fields labelled) are
      analysed as well: `diagnose` then ranks the fields without a label by the model's uncertainty.

    Returns FieldResults: `.table` (one row per field, the reference columns first), `.class_counts` (pixels per
    class and field, sparse), `.catalogue`, `.invalid_values`, `.timings`.

    >>> results = cropmon.analyse("predictions.tif", "fields.gpkg", scheduler="threads")  # doctest: +SKIP
    >>> results.table[["field_id", "gt_label", "majority_crop_label", "confidence_score"]].head()  # doctest: +SKIP
    """
    unknown = sorted(set(options) - set(ANALYSE_OPTIONS))
    if unknown:
        raise errors.ConfigError(f"analyse() has no option {', '.join(unknown)}",
                                 fix=f"use {', '.join(ANALYSE_OPTIONS)} (or cropmon.run for a run)")
    if scheduler is not None and client is not None:
        raise errors.ConfigError("scheduler= and client= exclude each other", fix="pass one of them")
    raster_path = _raster_path(raster)
    with _fields_file(fields) as (fields_path, scratch):
        config = build_config({**options, "raster": raster_path, "fields": fields_path, "scheduler": scheduler,
                               "classes": classes}, environ={})
        if scratch is not None:
            config = dataclasses.replace(config, layer="fields")
        if config.raster is None or config.fields is None:  # build_config was given both
            raise RuntimeError("the configuration lost its raster or fields")
        with config.gdal.applied(), _cluster(config, client) as handle:
            results = analyse_fields(config.raster, config.fields, settings=config.engine_settings, cluster=handle,
                                     progress=pipeline.want_progress(config))
        if scratch is not None:
            results.keep_alive = weakref.finalize(results, shutil.rmtree, scratch, ignore_errors=True)
    return results


def run(*, raster: str | Path | None = None, fields: str | Path | None = None, out: str | Path | None = None,
        config: str | Path | None = None, **options: Unpack[RunOptions]) -> pipeline.RunOutcome:
    """What `python -m cropmon run` does: analyse, write every output atomically into `out`, return the outcome.

    Settings as the CLI takes them: defaults < `config` (a TOML file) < CROPMON_* environment < these arguments;
    `options` (`RunOptions`) are the flags' names with underscores (`scheduler`, `workers`, `chunk_rows`,
    `classes`, `seed`, `aois`, `diagnosis` = a mapping or DiagnosisSettings ...). Without raster and fields: the
    digital twin.

    Returns the RunOutcome: `.out_dir`, `.paths` (files by name), `.counts` (fields read, scored, dropped and why),
    `.timings` (seconds per stage) and `.manifest` (run.json). The per-field table is in `out` (fields.parquet);
    `analyse` brings one back into memory.

    >>> outcome = cropmon.run(raster="predictions.tif", fields="fields.gpkg", out="outputs/v1")  # doctest: +SKIP
    >>> outcome.counts["n_scored"], outcome.paths["report.html"]  # doctest: +SKIP
    """
    flags = {**options, "raster": _str(raster), "fields": _str(fields), "out": _str(out)}
    known = [f.name for f in dataclasses.fields(RunConfig)]
    unknown = sorted(set(flags) - set(known))
    if unknown:
        raise errors.ConfigError(f"run() has no option {', '.join(unknown)}", fix=f"known settings: {', '.join(known)}")
    return pipeline.run(build_config(flags, config_file=_str(config)))


def compare(run_a: str | Path, run_b: str | Path, *, out: str | Path | None = None, n_boot: int = DEFAULT_BOOTSTRAP,
            seed: int = 0) -> Comparison:
    """Compare two runs' output directories per crop on run A's held-back evaluation fields: design-based user's
    and producer's accuracy of both models with paired intervals (A's probability sample's weights), a verdict per
    crop on producer's accuracy, `overall` accuracy of both, and the field-level scores with bootstrap intervals.
    With `out`, also writes comparison.csv/.png/.md there, as `python -m cropmon compare`.

    >>> c = cropmon.compare("outputs/v1", "outputs/v2")  # doctest: +SKIP
    >>> c.table[["crop", "verdict", "agreement_a", "agreement_b", "agreement_delta"]]  # doctest: +SKIP
    """
    from cropmon.report.compare import Comparison, compare_runs, write_comparison

    result = compare_runs(run_a, run_b, n_boot=n_boot, seed=seed)
    if out is None:
        return result
    written, _, _ = write_comparison(run_a, run_b, out, n_boot=n_boot, seed=seed)
    return Comparison(result.table, result.evaluation, result.report, out_dir=written, overall=result.overall)


def _str(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


def _raster_path(raster: Any) -> str:
    """The file behind `raster`: a path as given, or the source file of a rioxarray DataArray (checked whole)."""
    if isinstance(raster, str | os.PathLike):
        return os.fspath(raster)
    source = getattr(raster, "encoding", {}).get("source") if hasattr(raster, "dims") else None
    if not source:
        raise errors.InputError(
            f"raster is a {type(raster).__name__} with no file behind it",
            fix="pass the GeoTIFF's path, or an array from rioxarray.open_rasterio(path) (write an in-memory array"
            " with .rio.to_raster(path) first)",
        )
    import rasterio

    with rasterio.open(source) as src:
        shape = (src.height, src.width)
    sizes = dict(zip(raster.dims, raster.shape, strict=True))
    if (sizes.get("y"), sizes.get("x")) != shape:
        raise errors.InputError(
            f"the array is a {sizes.get('y')} x {sizes.get('x')} subset of its {shape[0]} x {shape[1]} file",
            path=source, fix="cropmon reads whole files: write the subset with .rio.to_raster(path) and pass that",
        )
    return str(source)


@contextlib.contextmanager
def _fields_file(fields: Any) -> Iterator[tuple[str, str | None]]:
    """(path, scratch directory or None): a path as given, or a GeoDataFrame written to a temporary GeoPackage.

    The scratch directory outlives this block when the analysis succeeds (the results read polygons from it); it
    is removed at once when the analysis fails."""
    if isinstance(fields, str | os.PathLike):
        yield os.fspath(fields), None
        return
    if not (hasattr(fields, "geometry") and hasattr(fields, "crs")):
        raise errors.InputError(f"fields is a {type(fields).__name__}",
                                fix="pass a vector file's path or a geopandas.GeoDataFrame")
    if fields.crs is None:
        raise errors.MissingCRS("the GeoDataFrame of fields has no CRS",
                                fix="set it, e.g. fields.set_crs('EPSG:4326') (the real ground truth is EPSG:4326)")
    if not len(fields):
        raise errors.EmptyInput("the GeoDataFrame of fields is empty", fix="pass fields with polygons")
    import pyogrio

    scratch = tempfile.mkdtemp(prefix="cropmon-fields-")
    path = Path(scratch) / "fields.gpkg"
    try:
        pyogrio.write_dataframe(fields.reset_index(drop=True), path, layer="fields", driver="GPKG")
    except Exception as exc:  # pyogrio's errors: a column type a GeoPackage cannot hold, a full disk ...
        shutil.rmtree(scratch, ignore_errors=True)
        raise errors.InputError(f"the GeoDataFrame cannot be written to a GeoPackage ({errors.first_line(exc)})",
                                path=path, fix="keep plain columns (numbers, text) and polygon geometries") from exc
    try:
        yield str(path), scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


@contextlib.contextmanager
def _cluster(config: RunConfig, client: DaskClient | None) -> Iterator[ClusterHandle]:
    if client is not None:
        yield use_client(client)
        return
    with connect(config.cluster_settings, warm_up=warm_up) as handle:
        yield handle
