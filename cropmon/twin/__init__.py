"""The digital twin of the real u0c AOI: a prediction raster and a ground-truth GeoPackage with the real layouts.

`make_twin` builds it from a seed: the same seed gives the same bytes. Fields come from a landscape of farm blocks
(landscape), are sampled to the real size distribution and labelled in the real class proportions (fields); like
the real export, some are exact duplicates, lie inside another field or share a strip of pixels with a neighbour
(overlaps). The model's field-level outcomes follow the real confusion matrix exactly when every pixel centre of a
field counts for it whatever its neighbours (model), and the raster is written in row chunks (raster). Geometry and
predictions draw from separate random streams, so `quality` changes the predictions while every field stays the
same.

Scale 1 is the whole cell (5,218 x 5,218 pixels, ~153,800 fields); `scale` multiplies the area at the same
density (1/16: a quarter of each side, for tests; 4: twice each side, for memory benchmarks).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cropmon.errors import ConfigError, OutputError
from cropmon.twin.fields import build_ground_truth, write_fields
from cropmon.twin.landscape import TwinGrid, build_landscape, rasterize_ids, twin_grid
from cropmon.twin.model import Quality, effective_confusion, predict
from cropmon.twin.params import FULL_SIDE_PX
from cropmon.twin.raster import COMPRESSIONS, decide_classes, write_raster

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "3"  # bump when the same seed would give different bytes (cache directories carry it)
RASTER_NAME, FIELDS_NAME, MANIFEST_NAME = "predictions.tif", "fields.gpkg", "twin.json"
MIN_SIDE_PX = 64
# Rough share of the generation time each step takes (for one monotone progress fraction).
STEP_SHARES = {"landscape": 0.35, "rasterize": 0.2, "fields": 0.08, "predictions": 0.12, "raster": 0.25}
ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class TwinPaths:
    """Where a twin's two files are."""

    raster: Path
    fields: Path


def make_twin(
    out_dir: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    seed: int = 0,
    compress: str = "none",
    quality: Quality = None,
    progress: ProgressCallback | None = None,
) -> TwinPaths:
    """Write `out_dir/predictions.tif` and `out_dir/fields.gpkg` (and a small `twin.json` manifest).

    `quality`: None = calibrated to u0c; a float k multiplies every crop's error share; a dict {crop name: target
    agreement} sets those crops' agreement (same seed: same fields, other predictions). `progress(step, fraction)`
    gets the whole job's fraction done, monotone, ending with ("done", 1.0).
    """
    grid = _checked_grid(scale, seed, compress, quality)
    scale, seed = float(scale), int(seed)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the twin directory: {exc.strerror}", path=out) from exc
    steps = _Steps(progress)
    partial = {name: out / f".{Path(name).stem}.partial{Path(name).suffix}" for name in (FIELDS_NAME, RASTER_NAME)}
    try:
        manifest = _generate(partial, grid, scale=scale, seed=seed, compress=compress, quality=quality, steps=steps)
    except BaseException:  # a failed or interrupted build leaves no half-written file behind
        for path in partial.values():
            path.unlink(missing_ok=True)
        raise
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    for name, path in partial.items():
        os.replace(path, out / name)
    steps.done()
    return TwinPaths(out / RASTER_NAME, out / FIELDS_NAME)


def _generate(
    partial: dict[str, Path], grid: TwinGrid, *, scale: float, seed: int, compress: str, quality: Quality, steps: _Steps
) -> dict:
    """Landscape -> ground truth (written) -> predictions -> raster (written); returns the manifest."""
    geometry_seq, prediction_seq, class_seq, band_seq = np.random.SeedSequence(seed).spawn(4)
    geometry_rng = np.random.default_rng(geometry_seq)
    started = time.perf_counter()

    landscape = build_landscape(grid, geometry_rng, progress=steps.start("landscape"))
    id_grid = np.zeros((grid.height, grid.width), dtype=np.int32)
    parcel_ids = np.arange(1, len(landscape.wkb) + 1)
    rasterize_ids(landscape.wkb, landscape.rows, parcel_ids, grid, id_grid, progress=steps.start("rasterize"))
    _log_step("landscape", started, parcels=len(landscape.wkb))

    steps.start("fields")
    gt = build_ground_truth(landscape, id_grid, grid, scale, geometry_rng)
    write_fields(gt, partial[FIELDS_NAME])
    _log_step("fields", started, fields=len(gt.wkb))

    steps.start("predictions")
    pred = predict(gt, landscape, quality, np.random.default_rng(prediction_seq))
    classes = decide_classes(id_grid, pred, gt.shared, grid, class_seq)
    _log_step("predictions", started)

    raster_progress = steps.start("raster")
    write_raster(
        partial[RASTER_NAME], id_grid, classes, pred, grid, band_seq, compress=compress, progress=raster_progress
    )
    _log_step("raster", started)
    return {
        "generator_version": GENERATOR_VERSION,
        "scale": scale,
        "seed": seed,
        "compress": compress,
        "quality": quality,
        "width": grid.width,
        "height": grid.height,
        "fields": len(gt.wkb),
        "duplicates": gt.plan.duplicates,
        "fields_inside_another": gt.plan.contained,
        "neighbour_pairs_sharing_pixels": gt.plan.partial_pairs,
        "no_pixel_centre_fields": int(gt.is_sliver.sum()),
    }


class _Steps:
    """Turns each step's own 0..1 progress into the whole job's (monotone; the last call is ("done", 1.0))."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.offset = 0.0
        self.share = 0.0

    def start(self, step: str) -> Callable[[float], None]:
        """Enter `step`; returns the reporter of its own progress."""
        self.offset += self.share
        self.share = STEP_SHARES[step]
        offset, share = self.offset, self.share

        def report(fraction: float) -> None:
            if self.callback:
                self.callback(step, float(min(offset + share * fraction, 0.999)))

        report(0.0)
        return report

    def done(self) -> None:
        """The twin is complete."""
        if self.callback:
            self.callback("done", 1.0)


def twin_cache_dir(*, scale: float = 1.0, seed: int = 0) -> Path:
    """The per-user cache directory of the twin of (scale, seed): ~/.cache/cropmon/twin-<version>-scale<S>-seed<N>."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "cropmon" / f"twin-{GENERATOR_VERSION}-scale{scale:g}-seed{seed}"


def default_twin_dir() -> Path:
    """The default input's directory: $CROPMON_DATA_DIR if set, else the cache directory of scale 1, seed 0."""
    configured = os.environ.get("CROPMON_DATA_DIR")
    return Path(configured) if configured else twin_cache_dir()


def ensure_twin(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    scale: float = 1.0,
    seed: int = 0,
    compress: str = "none",
    progress: ProgressCallback | None = None,
) -> TwinPaths:
    """The twin in `out_dir` (default: default_twin_dir() for scale 1 seed 0, else its cache dir), built once.

    Building is atomic: the twin is generated in a temporary directory beside the target, then renamed, so a
    crash or a concurrent build never leaves a half-written twin behind.
    """
    _checked_grid(scale, seed, compress, None)
    if out_dir is None:
        target = default_twin_dir() if (scale, seed) == (1.0, 0) else twin_cache_dir(scale=scale, seed=seed)
    else:
        target = Path(out_dir)
    paths = TwinPaths(target / RASTER_NAME, target / FIELDS_NAME)
    if paths.raster.is_file() and paths.fields.is_file():
        logger.debug("reusing the twin in %s", target)
        return paths
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the finished twin is ordinary, readable data
    except OSError as exc:
        raise OutputError(f"cannot create the twin directory: {exc.strerror}", path=target) from exc
    try:
        make_twin(staging, scale=scale, seed=seed, compress=compress, progress=progress)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished twin to its place; losing the race to a concurrent build of the same twin is fine."""
    try:
        os.rename(staging, target)
    except OSError as exc:
        if not ((target / RASTER_NAME).is_file() and (target / FIELDS_NAME).is_file()):
            raise OutputError(
                f"cannot move the new twin into place: {exc.strerror}", path=target, fix="remove or empty it"
            ) from exc


def _checked_grid(scale: float, seed: int, compress: str, quality: Quality) -> TwinGrid:
    """Validate every argument before any work; the grid of the requested scale."""
    if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"scale must be a positive number, not {scale!r}")
    grid = twin_grid(scale)
    if grid.width < MIN_SIDE_PX:
        raise ConfigError(
            f"scale {scale:g} gives a {grid.width}-pixel side",
            fix=f"use a scale >= {(MIN_SIDE_PX / FULL_SIDE_PX) ** 2:.5f}",
        )
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, not {seed!r}")
    if compress not in COMPRESSIONS:
        raise ConfigError(f"compress must be one of {', '.join(COMPRESSIONS)}, not {compress!r}")
    effective_confusion(quality)
    return grid


def _log_step(step: str, started: float, **counts: int) -> None:
    """One info line per step, with the elapsed time."""
    extra = "".join(f", {k}={v:,}" for k, v in counts.items())
    logger.info("twin %s done at %.1f s%s", step, time.perf_counter() - started, extra)
