"""The run manifest (run.json): what was read, with which versions and settings, on which cluster (and which worker
ran which stage), how long each stage took, and what happened to every field. Built once per AOI (`run_header`);
the field counts come from a task on the cluster (`field_counts`), the rest is added when the outputs are written."""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

from cropmon import __version__
from cropmon.engine.assemble import FieldResults
from cropmon.engine.fields import crs_name
from cropmon.engine.job import FieldInputs, FieldJob
from cropmon.io.paths import size_bytes

log = logging.getLogger(__name__)

VERSIONED = ("dask", "distributed", "xarray", "rioxarray", "flox", "rasterio", "shapely", "pyogrio", "geopandas",
             "numpy", "pandas", "scikit-learn", "matplotlib")


def versions() -> dict[str, str]:
    """Versions of cropmon, Python and the libraries that shape the results."""
    import importlib.metadata as md

    import rasterio

    out = {"cropmon": __version__, "python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    out["gdal"] = rasterio.__gdal_version__
    return out


def started_at(started: float) -> str:
    """A time.time() stamp as local ISO 8601 with its offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))


def run_header(job: FieldJob, inputs: FieldInputs, *, settings: dict[str, Any], is_twin: bool,
               started: float) -> dict[str, Any]:
    """run.json of one AOI before its tail: inputs, versions, settings (the cluster, the field counts, the timings
    and the outputs are added when they are known). The fields file as the worker read it (`job.fields_read`:
    path, layer, format, size; `read_from` when through a GeoPackage copy); the label column is the one read
    (`inputs.label_column`; None: none, a run without ground truth)."""
    source = job.source
    return {
        "cropmon_version": __version__,
        "started": started_at(started),
        "inputs": {
            "raster": job.raster.as_manifest(),
            "fields": {
                **(job.fields_read
                   or {"path": source.path, "layer": source.layer, "size_bytes": size_bytes(source.path)}),
                "crs": crs_name(source.crs),
                "n_fields": job.n_fields,
                "label_column": inputs.label_column,
            },
            "digital_twin": is_twin,
            "classes": inputs.catalogue.as_manifest(),
        },
        "settings": settings,
        "versions": versions(),
    }


def field_counts(results: FieldResults) -> dict[str, Any]:
    """How many fields were read, got pixels, were scored; by pixel rule, geometry and label status; the engine's
    report of repairs, drops and oddities."""
    table = results.table
    report = results.report.as_manifest()
    analysed = int((table["n_pixels"] > 0).sum())
    return {
        "n_input": len(table),
        "n_with_pixels": analysed,
        "n_without_pixels": len(table) - analysed,
        "n_scored": int(table["gt_ml_match"].notna().sum()),
        "n_labelled": int(table["gt_class"].notna().sum()),  # a usable label (a class of the catalogue)
        "pixel_rule": table["pixel_rule"].value_counts().to_dict(),
        "geometry_status": table["geometry_status"].value_counts().to_dict(),
        "label_status": table["label_status"].value_counts().loc[lambda c: c > 0].to_dict(),
        "invalid_class_values": {str(k): v for k, v in results.invalid_values.items()},
        **report,
    }


def many_aois(*, started: float, aois: dict[str, dict[str, Any]], settings: dict[str, Any],
              cluster: dict[str, Any], pooled_outputs: list[str]) -> dict[str, Any]:
    """run.json of a multi-AOI run: each AOI's inputs, size and timings, and the pooled outputs."""
    return {
        "cropmon_version": __version__,
        "started": started_at(started),
        "aois": aois,
        "settings": settings,
        "versions": versions(),
        "cluster": cluster,
        "pooled_outputs": sorted(pooled_outputs),
        "timings_s": {"total": round(time.time() - started, 3)},
    }


def log_field_counts(counts: dict[str, Any]) -> None:
    """The engine's report of repairs, drops and oddities (from field_counts), as log lines on the client."""
    for case, n in sorted(counts.get("counts", {}).items()):
        if case != "reprojected_from":
            examples = ", ".join(counts.get("examples", {}).get(case, [])[:3])
            log.info("fields: %s = %d (e.g. %s)", case, n, examples)
