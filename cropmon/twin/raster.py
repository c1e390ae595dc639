"""The twin's prediction raster: per-pixel classes and the 10 bands, written in row chunks like the real file.

Pass 1 decides every pixel's class (int8, one byte a pixel) and counts each GT field's pixel vote, every pixel
centre inside the field counting whatever its neighbours (a pixel in two fields votes in both); fields where noise
or shared pixels beat the designed majority (ties break to the lowest class id, as the engine does) get pure own
pixels, which always win: overlaps leave every field more own pixels than shared ones. Pass 2 derives the other
nine bands chunk by chunk and writes them: the full 10-band raster is never held in memory.
Spatial coherence comes from smooth noise (bilinear upsampling of a coarse Gaussian grid) plus per-pixel noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy.special import ndtr

from cropmon.labels import N_CLASSES
from cropmon.twin.landscape import TwinGrid
from cropmon.twin.model import CROP2_MIX, MARGIN_MIX, Predictions
from cropmon.twin.overlaps import SharedPixels
from cropmon.twin.params import (
    BAND_DESCRIPTIONS,
    CLASS_PIXEL_MEAN,
    CONF_PIXEL_MEAN,
    CONF_RANGE,
    CROP2_CONF_INTERCEPT,
    CROP2_CONF_RANGE,
    CROP2_CONF_RESIDUAL_STD,
    CROP2_CONF_SLOPE,
    CYCLES_CONF_MEAN,
    CYCLES_CONF_PER_CLASS,
    CYCLES_CONF_PER_CONF,
    CYCLES_CONF_RANGE,
    CYCLES_CONF_RESIDUAL_STD,
    DATE_BANDS,
)

logger = logging.getLogger(__name__)

ROWS_PER_CHUNK = 256  # fixed whatever the scale: the per-chunk random streams (hence the bytes) depend on it
THIRD_CLASS_SHARE = 0.15  # of a field's non-majority pixels
GAP_TAKES_NEIGHBOUR = 0.55  # road/hedge pixels: share that repeats the parcel to their left (mixed pixels)
NOISE_CONF_DROP = 14.0  # minority pixels are less confident
CROP2_FLIP = 0.05  # band 7 pixels that differ from their parcel's second-cycle code
GDAL_CACHE_MB = 64  # keep GDAL's write cache small: dirty blocks would otherwise pile up in memory
COMPRESSIONS = ("none", "deflate", "lzw")
Progress = Callable[[float], None]


class SmoothNoise:
    """A smooth standard-normal field over the grid: a coarse Gaussian grid, bilinearly upsampled by rows."""

    def __init__(self, grid: TwinGrid, cell: int, rng: np.random.Generator) -> None:
        self.cell = cell
        self.coarse = rng.standard_normal((grid.height // cell + 2, grid.width // cell + 2), dtype=np.float32)
        x = (np.arange(grid.width) + 0.5) / cell
        self.col = np.floor(x).astype(np.int64)
        self.fx = (x - self.col).astype(np.float32)
        # bilinear weights shrink the variance by E[(1-f)^2 + f^2]^2 = 4/9 on average: scale it back to ~1
        self.gain = np.float32(1.5)

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """The field on rows r0..r1 (float32, (r1 - r0) x width)."""
        y = (np.arange(r0, r1) + 0.5) / self.cell
        row = np.floor(y).astype(np.int64)
        fy = (y - row).astype(np.float32)[:, None]
        by_row = self.coarse[row] * (1 - fy) + self.coarse[row + 1] * fy
        left, right = by_row[:, self.col], by_row[:, self.col + 1]
        return (left + (right - left) * self.fx) * self.gain


def child_rng(seed_seq: np.random.SeedSequence, *key: int) -> np.random.Generator:
    """An independent stream addressed by `key` under seed_seq (stateless, unlike SeedSequence.spawn)."""
    return np.random.default_rng(np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, *key)))


def _smooth_fields(grid: TwinGrid, cells: tuple[int, ...], seed_seq: np.random.SeedSequence) -> list[SmoothNoise]:
    """One smooth field per cell size, each from its own stream (key 0, i)."""
    return [SmoothNoise(grid, cell, child_rng(seed_seq, 0, i)) for i, cell in enumerate(cells)]


def decide_classes(
    id_grid: np.ndarray, pred: Predictions, shared: SharedPixels, grid: TwinGrid, seed_seq: np.random.SeedSequence
) -> np.ndarray:
    """Band 3 for the whole grid (int8); every GT field's pixel vote is won by its designed majority."""
    key_field, margin_field = _smooth_fields(grid, (5, 9), seed_seq)
    classes = np.empty(id_grid.shape, dtype=np.int8)
    votes = np.zeros((3, len(pred.majority)), dtype=np.int64)
    for chunk, r0 in enumerate(range(0, grid.height, ROWS_PER_CHUNK)):
        r1 = min(r0 + ROWS_PER_CHUNK, grid.height)
        rng = child_rng(seed_seq, 1, chunk)
        ids = id_grid[r0:r1]
        key = 0.6 * key_field.rows(r0, r1) + 0.8 * rng.standard_normal(ids.shape, dtype=np.float32)
        noisy = key < pred.noise_threshold[ids]
        minority = np.where(
            rng.random(ids.shape, dtype=np.float32) < THIRD_CLASS_SHARE, pred.third[ids], pred.second[ids]
        )
        cls = np.where(noisy, minority, pred.majority[ids])
        _fill_gaps(cls, ids, margin_field.rows(r0, r1), rng)
        classes[r0:r1] = cls
        _count_votes(votes, ids, cls, pred)
    made_pure = np.zeros(len(pred.majority), dtype=bool)
    beaten = _beaten(votes, pred) | _regions(shared, _beaten_with_shared(classes, pred, shared), len(made_pure))
    while beaten.any():  # at most twice: a field's pure own pixels always win (overlaps.MAX_SHARED_SHARE)
        logger.debug("made %d fields pure: pixel noise or shared pixels had beaten their majority", beaten.sum())
        _make_pure(classes, id_grid, pred, beaten)
        made_pure |= beaten
        beaten = _regions(shared, _beaten_with_shared(classes, pred, shared), len(made_pure)) & ~made_pure
    if _beaten_with_shared(classes, pred, shared).any():
        raise RuntimeError("twin design broken: a field's own pixels do not outnumber the pixels it shares")
    return classes


def _make_pure(classes: np.ndarray, id_grid: np.ndarray, pred: Predictions, regions: np.ndarray) -> None:
    """Give every pixel of the chosen id-grid regions their region's majority class."""
    for r0 in range(0, id_grid.shape[0], ROWS_PER_CHUNK):
        ids = id_grid[r0 : r0 + ROWS_PER_CHUNK]
        fix = regions[ids]
        classes[r0 : r0 + ROWS_PER_CHUNK][fix] = pred.majority[ids[fix]]


def _beaten_with_shared(classes: np.ndarray, pred: Predictions, shared: SharedPixels) -> np.ndarray:
    """Per field of `shared`: whether its designed majority loses the vote of all its pixel centres."""
    n = len(shared.region)
    cls = classes.reshape(-1)[shared.pixels].astype(np.int64)
    counts = np.bincount(shared.owner() * N_CLASSES + cls, minlength=n * N_CLASSES).reshape(n, N_CLASSES)
    return counts.argmax(axis=1) != pred.majority[shared.region]


def _regions(shared: SharedPixels, which: np.ndarray, n_ids: int) -> np.ndarray:
    """A mask over id-grid values of the own regions of the chosen fields of `shared`."""
    mask = np.zeros(n_ids, dtype=bool)
    mask[shared.region[which]] = True
    return mask


def _fill_gaps(cls: np.ndarray, ids: np.ndarray, smooth: np.ndarray, rng: np.random.Generator) -> None:
    """Road/hedge pixels: the class of the parcel to their left (mixed pixels) or a verge class, in patches."""
    gap = ids == 0
    cols = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    last_parcel = np.maximum.accumulate(np.where(gap, -1, cols), axis=1)
    neighbour = np.take_along_axis(cls, np.maximum(last_parcel, 0), axis=1)
    margin_class = np.searchsorted(np.cumsum(MARGIN_MIX), ndtr(smooth), side="right").clip(0, len(MARGIN_MIX) - 1)
    take_neighbour = (last_parcel >= 0) & (rng.random(ids.shape, dtype=np.float32) < GAP_TAKES_NEIGHBOUR)
    cls[gap] = np.where(take_neighbour, neighbour, margin_class)[gap]


def _count_votes(votes: np.ndarray, ids: np.ndarray, cls: np.ndarray, pred: Predictions) -> None:
    """Add this chunk's pixels of each id that carry its majority / second / third class."""
    n = votes.shape[1]
    is_major = cls == pred.majority[ids]
    is_second = ~is_major & (cls == pred.second[ids])
    is_third = ~is_major & ~is_second & (cls == pred.third[ids])
    for row, mask in enumerate((is_major, is_second, is_third)):
        votes[row] += np.bincount(ids[mask], minlength=n)


def _beaten(votes: np.ndarray, pred: Predictions) -> np.ndarray:
    """GT fields whose majority does not win the vote (a tie goes to the lowest class id)."""
    major, second, third = votes
    loses_to_second = (second > major) | ((second == major) & (pred.second < pred.majority))
    loses_to_third = (third > major) | ((third == major) & (pred.third < pred.majority))
    return pred.is_field & (loses_to_second | loses_to_third)


def write_raster(
    path: Path,
    id_grid: np.ndarray,
    classes: np.ndarray,
    pred: Predictions,
    grid: TwinGrid,
    seed_seq: np.random.SeedSequence,
    *,
    compress: str = "none",
    progress: Progress | None = None,
) -> None:
    """The real layout: GTiff int16, 10 described bands, 1-row strips, pixel interleave, EPSG:4326, no nodata."""
    profile = {
        "driver": "GTiff",
        "dtype": "int16",
        "count": len(BAND_DESCRIPTIONS),
        "width": grid.width,
        "height": grid.height,
        "crs": "EPSG:4326",
        "transform": grid.transform,
        "tiled": False,
        "blockysize": 1,
        "interleave": "pixel",
        "nodata": None,
    }
    if compress != "none":
        profile["compress"] = compress
    smooth = _smooth_fields(grid, (8, 12, 16, 16, 16, 16), seed_seq)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = BAND_DESCRIPTIONS
        dst.update_tags(AREA_OR_POINT="Area")
        n_chunks = -(-grid.height // ROWS_PER_CHUNK)
        for chunk, r0 in enumerate(range(0, grid.height, ROWS_PER_CHUNK)):
            r1 = min(r0 + ROWS_PER_CHUNK, grid.height)
            noise = [f.rows(r0, r1) for f in smooth]
            bands = _chunk_bands(id_grid[r0:r1], classes[r0:r1], pred, noise, child_rng(seed_seq, 1, chunk))
            dst.write(bands, window=Window(0, r0, grid.width, r1 - r0))
            if progress:
                progress((chunk + 1) / n_chunks)


def _chunk_bands(
    ids: np.ndarray, cls8: np.ndarray, pred: Predictions, smooth: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """All 10 bands (int16) of one row chunk."""
    conf_smooth, cycles_smooth, *date_smooth = smooth
    cls = cls8.astype(np.float32)
    bands = np.zeros((len(BAND_DESCRIPTIONS), *ids.shape), dtype=np.int16)
    minority = (cls8 != pred.majority[ids]) & (ids != 0)
    raw_conf = pred.conf_mean[ids] + pred.conf_sd[ids] * (0.5 * conf_smooth + 0.87 * _normal(rng, ids.shape))
    conf = np.rint(_soft_limit(raw_conf - NOISE_CONF_DROP * minority, *CONF_RANGE))
    offsets = pred.offsets[ids]
    residual = 0.55 * offsets[..., 0] + 0.55 * cycles_smooth + 0.63 * _normal(rng, ids.shape)
    cycles = (
        CYCLES_CONF_MEAN
        + CYCLES_CONF_PER_CLASS * (cls - CLASS_PIXEL_MEAN)
        + CYCLES_CONF_PER_CONF * (conf - CONF_PIXEL_MEAN)
        + CYCLES_CONF_RESIDUAL_STD * residual
    )
    bands[1] = np.rint(_soft_limit(cycles, *CYCLES_CONF_RANGE))
    bands[2] = cls8
    bands[3] = conf
    for i, (band, (mean, sd, low, high)) in enumerate(DATE_BANDS.items()):
        day = mean + sd * (0.6 * offsets[..., i + 1] + 0.6 * date_smooth[i] + 0.53 * _normal(rng, ids.shape))
        bands[band - 1] = np.clip(np.rint(day), low, high)
    flip = rng.random(ids.shape, dtype=np.float32) < CROP2_FLIP
    random_code = np.searchsorted(np.cumsum(CROP2_MIX), rng.random(ids.shape), side="right").clip(0, len(CROP2_MIX) - 1)
    bands[6] = np.where(flip, random_code, pred.crop2[ids])
    crop2_conf = CROP2_CONF_SLOPE * conf + CROP2_CONF_INTERCEPT + CROP2_CONF_RESIDUAL_STD * _normal(rng, ids.shape)
    bands[7] = np.clip(np.rint(crop2_conf), *CROP2_CONF_RANGE)
    return bands


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise."""
    return rng.standard_normal(shape, dtype=np.float32)


def _soft_limit(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Identity in the middle, bending smoothly towards (never past) low/high over the outer 10 % of the range."""
    knee = 0.1 * (high - low)
    top, bottom = high - knee, low + knee
    x = np.where(x > top, top + knee * (1 - np.exp(-(x - top) / knee)), x)
    return np.where(x < bottom, bottom - knee * (1 - np.exp(-(bottom - x) / knee)), x)
