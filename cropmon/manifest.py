"""The run manifest (run.json): what was read, with which versions and settings, on which cluster, how long each
stage took, and what happened to every field. Built once per AOI (`run_header`), completed when the outputs are
written."""

from __future__ import annotations

import platform
import time
from typing import Any

from cropmon import __version__
from cropmon.engine.analyse import FieldResults
from cropmon.engine.fields import crs_name

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


def run_header(results: FieldResults, *, settings: dict[str, Any], cluster: dict[str, Any], is_twin: bool,
               started: float, timings: dict[str, float]) -> dict[str, Any]:
    """run.json of one AOI before its outputs are written: inputs, versions, settings, cluster, field counts."""
    return {
        "cropmon_version": __version__,
        "started": started_at(started),
        "inputs": {
            "raster": results.raster.as_manifest(),
            "fields": {
                **results.table.attrs.get("source", {}),
                "crs": crs_name(results.source.crs),
                "n_fields": len(results.table),
            },
            "digital_twin": is_twin,
            "classes": results.catalogue.as_manifest(),
        },
        "settings": settings,
        "versions": versions(),
        "cluster": cluster,
        "fields": field_counts(results),
        "timings_s": timings,
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
