"""What the engine needs to know of a run, as one frozen object: which file layer and bands to read, how to chunk
and score, where a GeoPackage copy goes. `RunConfig.engine_settings` derives it once from the run's settings
(config.py may import the engine; the engine never imports config), so a new engine setting is declared in RunConfig
and read here.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cropmon.catalogue import U0C, Catalogue

TieBreak = Literal["confidence", "lowest_id"]
TIE_BREAK_CHOICES: tuple[TieBreak, ...] = typing.get_args(TieBreak)


def _u0c() -> Catalogue:
    return U0C


@dataclass(frozen=True)
class EngineSettings:
    """One AOI's engine settings; the defaults are RunConfig's (tests and benchmarks use `EngineSettings()`)."""

    chunk_rows: int | None = None  # raster rows per task (None: the file's blocks decide, io/raster.chunk_rows_for)
    layer: str | None = None  # layer of the fields file (needed when it has several)
    label_column: str = "normalized_label"
    no_labels: bool = False  # read no label even where the fields carry some (a run without ground truth)
    class_band: int = 3  # 1-based
    confidence_band: int = 4  # 1-based
    tie_break: TieBreak = "confidence"
    scratch_dir: str | Path | None = None  # where a fields file that cannot be read by feature id is copied
    catalogue: Catalogue = field(default_factory=_u0c)  # the model's classes
    aoi_mask: str | Path | None = None  # polygons of the AOI (engine/mapped.aoi_mask); None: the whole raster
