"""cropmon: per-crop agreement, confusions and an active-learning plan for crop-type rasters, on Dask.

From a notebook or a script (the names load on first use, so `import cropmon` stays cheap):

    import cropmon

    results = cropmon.analyse("predictions.tif", "fields.gpkg", scheduler="threads")  # FieldResults
    d = cropmon.diagnose(results)                        # Diagnosis: its numbers as DataFrames
    d.underperforming                                            # the crops to worry about, and how sure that is
    cropmon.report_of(d, results)                        # the report (a notebook cell shows it); tables_of(d)
    outcome = cropmon.run(raster="predictions.tif", fields="fields.gpkg", out="outputs/v1")  # the CLI's job
    cropmon.compare("outputs/v1", "outputs/v2").table    # two runs, per crop, on held-back fields

Errors are the typed ones of `cropmon.errors` (InputError: bad input, with the file and the fix; ClusterError).
To read the code, start at `cropmon.pipeline.run`: it follows a run from its inputs to its outputs and hands each
step to the package that owns it (`io`, `engine`, `diagnosis`, `report`; `twin` makes the digital twin). README,
Development, draws the map and the direction imports go.
"""

import logging
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Catalogue",
    "Comparison",
    "Diagnosis",
    "DiagnosisSettings",
    "FieldResults",
    "RunOutcome",
    "__version__",
    "analyse",
    "compare",
    "diagnose",
    "errors",
    "read_catalogue",
    "report_of",
    "run",
    "tables_of",
]

# name -> module that defines it; imported on first access (PEP 562), so the CLI's start does not pay for Dask.
_LAZY = {
    "analyse": "cropmon.api",
    "diagnose": "cropmon.api",
    "run": "cropmon.api",
    "compare": "cropmon.api",
    "report_of": "cropmon.api",
    "tables_of": "cropmon.api",
    "Diagnosis": "cropmon.diagnosis.diagnose",
    "Comparison": "cropmon.report.compare",
    "FieldResults": "cropmon.engine.job",
    "RunOutcome": "cropmon.pipeline",
    "DiagnosisSettings": "cropmon.diagnosis.settings",
    "Catalogue": "cropmon.catalogue",
    "read_catalogue": "cropmon.catalogue",
    "errors": "cropmon.errors",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cropmon' has no attribute {name!r}")
    module = import_module(_LAZY[name])
    value = module if module.__name__ == f"cropmon.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# The library logs; the CLI configures logging (a NullHandler keeps library users quiet by default).
logging.getLogger(__name__).addHandler(logging.NullHandler())
