"""The twin's crop model: what it predicts for every GT field and every background parcel.

Field-level outcomes follow the real confusion matrix exactly: each crop's row is scaled to the crop's field count
with largest-remainder rounding and dealt out, so per-crop agreement lands on the real value instead of scattering
around it (wrong outcomes lean towards small fields, a design choice: small fields have fewer, more mixed pixels).
A duplicate sees exactly its original's pixels, so the pair is dealt one outcome that both crops' rows hold; every
other field, covered or overlapping included, is dealt its own (the raster makes each field's own pixels win).
`quality` moves rows of the matrix towards or away from the diagonal. Everything random here comes from the
prediction stream, so a quality change never moves a field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from cropmon.errors import ConfigError
from cropmon.labels import CLASS_IDS, CROP_NAMES, N_CLASSES
from cropmon.quotas import apportion
from cropmon.twin.fields import RADISH, GroundTruth
from cropmon.twin.landscape import FARMLAND, VILLAGE, WOOD, Landscape
from cropmon.twin.params import (
    CONF_WHEN_RIGHT,
    CONF_WHEN_RIGHT_DEFAULT,
    CONF_WHEN_WRONG,
    CONF_WHEN_WRONG_DEFAULT,
    CROP2_SHARES,
    REAL_FIELD_CONFUSION,
)

Quality = float | dict[str, float] | None

REAL_CONFUSION = np.asarray(REAL_FIELD_CONFUSION, dtype=np.float64)
CROP2_MIX = np.asarray(CROP2_SHARES) / sum(CROP2_SHARES)
# What the model predicts over all GT fields (column sums): the mix of a "typical" farm parcel.
PREDICTED_MIX = REAL_CONFUSION.sum(axis=0) / REAL_CONFUSION.sum()


def _mix(shares: dict[str, float]) -> np.ndarray:
    """A class distribution from {crop name: share}."""
    mix = np.zeros(N_CLASSES)
    for name, share in shares.items():
        mix[CLASS_IDS[name]] = share
    return mix / mix.sum()


# Background mixes (a documented choice; the real background is unlabelled):
# - unlabelled farmland: 70 % like the GT fields' predictions, 30 % grass/fallow (meadows, set-aside), which also
#   gives the AOI its many Grassland Cultivated pixels though that class is absent from GT;
# - woods: what the model predicts on real GT `Trees` fields (its row of the real confusion matrix);
# - villages: gardens, lawns and wasteland; road verges and hedges: grass and fallow.
GRASS_MIX = _mix({"Fallow": 0.45, "Ryegrass": 0.25, "Grassland Cultivated": 0.2, "Alfalfa": 0.1})
FARMLAND_BACKGROUND_MIX = 0.7 * PREDICTED_MIX + 0.3 * GRASS_MIX
WOOD_MIX = REAL_CONFUSION[CLASS_IDS["Trees"]] / REAL_CONFUSION[CLASS_IDS["Trees"]].sum()
VILLAGE_MIX = _mix(
    {"Fallow": 0.4, "Grassland Cultivated": 0.3, "Ryegrass": 0.15, "Potatoes": 0.05, "Alfalfa": 0.05, "Vineyard": 0.05}
)
MARGIN_MIX = _mix({"Fallow": 0.5, "Grassland Cultivated": 0.3, "Ryegrass": 0.2})

# Share of a field's pixels that are not its majority class: ~3 % for easy crops (Winter Wheat, Canola,
# Sugarbeets: 96-100 % majority as in the real clip), up to ~35 % for crops the model never gets right.
NOISE_BASE, NOISE_PER_ERROR, NOISE_IF_WRONG, NOISE_CAP = 0.015, 0.22, 0.08, 0.45
NOISE_CONCENTRATION = 12.0  # Beta concentration of the per-field noise share
SECOND_IS_GT_WHEN_WRONG = 0.7  # in a wrongly predicted field, the minority is mostly the true crop
WRONG_SMALL_FIELD_BIAS = 0.35  # std of the rank noise: wrong outcomes lean towards small fields
FIELD_CONF_SD = 7.0  # spread of field mean confidence around the crop's right/wrong figure
# Background parcels (as in the real clip): unlabelled farm parcels look like fields, nearly pure and about as
# confident as a correctly predicted field of their class; woods and villages are a low-confidence speckle of
# several classes. (noise share, confidence offset from the class's right-figure or absolute mean, sd).
FARMLAND_BACKGROUND = (0.04, -3.0, 8.0)
NON_FARM_BACKGROUND = (0.45, 41.0, 6.0)
GAP_CONF = (45.0, 12.0)  # roads and hedges: (mean, per-pixel sd)


@dataclass(frozen=True)
class Predictions:
    """What the model does on each id-grid value (0 = roads/hedges, then parcels, then slivers)."""

    majority: np.ndarray  # int8 class holding most pixels
    second: np.ndarray  # int8 class of most other pixels
    third: np.ndarray  # int8 class of the remaining few
    noise_threshold: np.ndarray  # float32 probit of the share of non-majority pixels (-inf: pure)
    conf_mean: np.ndarray  # float32 mean band-4 confidence
    conf_sd: np.ndarray  # float32 per-pixel std of band 4
    crop2: np.ndarray  # int8 band-7 code (second cycle)
    offsets: np.ndarray  # float32 (n, 5): per-parcel standard normals for bands 2, 5, 6, 9, 10
    is_field: np.ndarray  # bool: a regular GT field (its pixel vote must be won by `majority`)


def effective_confusion(quality: Quality) -> np.ndarray:
    """The real confusion matrix with rows moved towards (or away from) the diagonal as `quality` asks.

    None: the real matrix. A float k: every crop's error share e becomes min(1, k * e) (k < 1 easier, k > 1 harder).
    A dict {crop name: target agreement}: those rows get that agreement; their errors keep their real proportions.
    """
    confusion = REAL_CONFUSION.copy()
    if quality is None:
        return confusion
    totals = confusion.sum(axis=1)
    target = _target_agreement(
        quality, np.divide(np.diag(confusion), totals, out=np.zeros(N_CLASSES), where=totals > 0)
    )
    for g in np.flatnonzero(totals > 0):
        off = confusion[g].copy()
        off[g] = 0.0
        if off.sum() == 0:  # a crop the model never gets wrong: errors follow the overall predicted mix
            off = PREDICTED_MIX.copy()
            off[g] = 0.0
        confusion[g] = off / off.sum() * (1.0 - target[g]) * totals[g]
        confusion[g, g] = target[g] * totals[g]
    return confusion


def _target_agreement(quality: float | dict[str, float], agreement: np.ndarray) -> np.ndarray:
    """Per-class agreement asked for by `quality` (validated: a ConfigError names the bad entry)."""
    if isinstance(quality, dict):
        target = agreement.copy()
        for name, value in quality.items():
            if name not in CLASS_IDS or not REAL_CONFUSION[CLASS_IDS[name]].any():
                raise ConfigError(
                    f"quality names {name!r}, which is no crop of the u0c ground truth",
                    fix=f"use one of {', '.join(n for n in CROP_NAMES if REAL_CONFUSION[CLASS_IDS[n]].any())}",
                )
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"quality[{name!r}] = {value!r} is not an agreement in 0..1")
            target[CLASS_IDS[name]] = float(value)
        return target
    if isinstance(quality, int | float) and quality >= 0:
        return 1.0 - np.minimum(1.0, float(quality) * (1.0 - agreement))
    raise ConfigError(f"quality must be None, a float >= 0 or a dict of crop agreements, not {quality!r}")


def predict(gt: GroundTruth, landscape: Landscape, quality: Quality, rng: np.random.Generator) -> Predictions:
    """Per id-grid value: the designed majority, minority classes, noise share and confidence of the model."""
    confusion = effective_confusion(quality)
    totals = confusion.sum(axis=1)
    agreement = np.divide(np.diag(confusion), totals, out=np.zeros(N_CLASSES), where=totals > 0)
    pred = _background(landscape, gt.n_ids, rng)
    majority = designed_majority(gt, confusion, rng)
    _set_fields(pred, gt, majority, agreement, confusion, rng)
    return pred


def designed_majority(gt: GroundTruth, confusion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each field's designed majority class: exact stratified counts per GT crop, wrong ones towards small fields.

    Duplicate pairs are dealt first, one outcome per pair taken from both fields' rows; the others then share out
    what is left of each row.
    """
    majority = np.empty(len(gt.crop), dtype=np.int8)
    fields_per_crop = np.bincount(gt.crop[gt.crop != RADISH], minlength=N_CLASSES)
    remaining = np.stack([apportion(confusion[g], fields_per_crop[g]) for g in range(N_CLASSES)])
    duplicates = np.flatnonzero(gt.original >= 0)
    for d in duplicates:
        o = gt.original[d]
        majority[[o, d]] = shared_outcome(remaining, (int(gt.crop[o]), int(gt.crop[d])), rng)
    paired = np.zeros(len(gt.crop), dtype=bool)
    paired[duplicates] = paired[gt.original[duplicates]] = True
    for g in range(N_CLASSES):
        fields = np.flatnonzero((gt.crop == g) & ~paired)
        if fields.size == 0:
            continue
        outcomes = np.repeat(np.arange(N_CLASSES), remaining[g])
        wrong_first = np.concatenate([rng.permutation(outcomes[outcomes != g]), outcomes[outcomes == g]])
        size_rank = np.argsort(np.argsort(gt.area_m2[fields])) / fields.size
        order = np.argsort(size_rank + rng.normal(0.0, WRONG_SMALL_FIELD_BIAS, fields.size))
        majority[fields[order]] = wrong_first
    radish = np.flatnonzero(gt.crop == RADISH)
    majority[radish] = rng.choice(N_CLASSES, size=radish.size, p=PREDICTED_MIX)
    return majority


def shared_outcome(remaining: np.ndarray, rows: tuple[int, ...], rng: np.random.Generator) -> int:
    """One outcome for fields that see the same pixels (`rows`: their GT crops), taken from those rows' counts.

    Prefers an outcome every row still holds, drawn in proportion to the rows' counts of it; otherwise one that
    keeps each row's number of right outcomes (it replaces another wrong outcome). A crop's agreement moves only when
    neither exists, which a `quality` far from the real model can cause (no common outcome left).
    """
    need = np.bincount(rows, minlength=N_CLASSES)
    crops = np.flatnonzero(need).tolist()
    cost = np.array([sum(_shortfall_cost(remaining[r], r, p, int(need[r])) for r in crops) for p in range(N_CLASSES)])
    cheapest = cost == cost.min()
    weight = np.prod(remaining[crops].astype(np.float64), axis=0) * cheapest
    p = int(rng.choice(N_CLASSES, p=weight / weight.sum() if weight.sum() > 0 else cheapest / cheapest.sum()))
    for r in crops:
        _take(remaining[r], r, p, int(need[r]))
    return p


def _shortfall_cost(row: np.ndarray, crop: int, outcome: int, k: int) -> int:
    """0 if the row holds k of `outcome`; 1 per missing one if other wrong outcomes can stand in; else 100 each."""
    short = max(0, k - int(row[outcome]))
    other_wrong = 0 if outcome == crop else int(row.sum() - row[crop] - row[outcome])
    return short if other_wrong >= short else 100 * short


def _take(row: np.ndarray, crop: int, outcome: int, k: int) -> None:
    """Use k of `outcome` from a crop's remaining outcomes, standing in the most frequent one of the same kind."""
    for _ in range(k):
        if row[outcome] > 0:
            row[outcome] -= 1
            continue
        stand_in = row.copy()
        if outcome != crop:
            stand_in[crop] = 0  # a wrong outcome replaces a wrong one: the crop's agreement stays
        row[np.argmax(stand_in if stand_in.any() else row)] -= 1


def _background(landscape: Landscape, n_ids: int, rng: np.random.Generator) -> Predictions:
    """Every id as a background parcel (classes from its block's mix); fields are overwritten afterwards."""
    kind = np.full(n_ids, VILLAGE, dtype=np.int8)
    kind[1 : len(landscape.wkb) + 1] = landscape.block_kind[landscape.parcel_block]
    majority = np.zeros(n_ids, dtype=np.int8)
    second = np.zeros(n_ids, dtype=np.int8)
    for k, mix in ((FARMLAND, FARMLAND_BACKGROUND_MIX), (WOOD, WOOD_MIX), (VILLAGE, VILLAGE_MIX)):
        ids = np.flatnonzero(kind == k)
        majority[ids] = rng.choice(N_CLASSES, size=ids.size, p=mix)
        second[ids] = rng.choice(N_CLASSES, size=ids.size, p=mix)
    farm = kind == FARMLAND
    share = np.where(farm, FARMLAND_BACKGROUND[0], NON_FARM_BACKGROUND[0])
    class_conf = np.array([CONF_WHEN_RIGHT.get(name, CONF_WHEN_RIGHT_DEFAULT) for name in CROP_NAMES])
    conf_mean = np.where(farm, class_conf[majority] + FARMLAND_BACKGROUND[1], NON_FARM_BACKGROUND[1])
    conf_mean += rng.normal(0.0, 1.0, n_ids) * np.where(farm, FARMLAND_BACKGROUND[2], NON_FARM_BACKGROUND[2])
    conf_mean[0] = GAP_CONF[0]
    conf_sd = rng.uniform(5.0, 14.0, n_ids).astype(np.float32)
    conf_sd[0] = GAP_CONF[1]
    return Predictions(
        majority=majority,
        second=second,
        third=rng.choice(N_CLASSES, size=n_ids, p=MARGIN_MIX).astype(np.int8),
        noise_threshold=ndtri(rng.beta(2.0, 2.0 / share - 2.0)).astype(np.float32),
        conf_mean=conf_mean.astype(np.float32),
        conf_sd=conf_sd,
        crop2=rng.choice(len(CROP2_MIX), size=n_ids, p=CROP2_MIX).astype(np.int8),
        offsets=rng.standard_normal((n_ids, 5), dtype=np.float32),
        is_field=np.zeros(n_ids, dtype=bool),
    )


def _set_fields(
    pred: Predictions,
    gt: GroundTruth,
    majority: np.ndarray,
    agreement: np.ndarray,
    confusion: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Overwrite the GT fields' ids with their designed majority, minority classes, purity and confidence."""
    n = len(gt.crop)
    crop = gt.crop.astype(np.int64)
    known = crop != RADISH
    right = known & (majority == crop)
    crop_agreement = np.where(known, agreement[np.where(known, crop, 0)], 0.5)
    mean_share = NOISE_BASE + NOISE_PER_ERROR * (1 - crop_agreement) + NOISE_IF_WRONG * ~right
    share = np.minimum(rng.beta(mean_share * NOISE_CONCENTRATION, (1 - mean_share) * NOISE_CONCENTRATION), NOISE_CAP)
    share[gt.is_sliver] = 0.0  # the all-touched pixels of a sliver are all its own
    second = _second_classes(crop, majority, right, confusion, rng)
    third = _draw_excluding(PREDICTED_MIX, majority, rng)
    conf_mean = _field_confidence(crop, right, rng)
    conf_sd = 3.0 + 12.0 * rng.beta(2.0, 3.0, n)
    own = gt.original < 0  # a duplicate's pixels are its original's (same majority by design)
    ids = gt.parcel[own]
    pred.majority[ids] = majority[own]
    pred.second[ids] = second[own]
    pred.third[ids] = third[own]
    pred.noise_threshold[ids] = ndtri(share[own])
    pred.conf_mean[ids] = conf_mean[own]
    pred.conf_sd[ids] = conf_sd[own]
    pred.is_field[ids] = ~gt.is_sliver[own]


def _second_classes(
    crop: np.ndarray, majority: np.ndarray, right: np.ndarray, confusion: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The field's minority class: its true crop when wrong (mostly), else one of the crop's real confusions."""
    second = np.empty(len(crop), dtype=np.int8)
    for g in np.unique(crop):
        fields = np.flatnonzero(crop == g)
        weights = confusion[g] if g != RADISH else PREDICTED_MIX
        second[fields] = _draw_excluding(weights, majority[fields], rng)
    wrong = np.flatnonzero(~right & (crop != RADISH))
    to_gt = wrong[rng.random(wrong.size) < SECOND_IS_GT_WHEN_WRONG]
    second[to_gt] = crop[to_gt]
    return second


def _draw_excluding(weights: np.ndarray, excluded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per element from `weights`, never the element's `excluded` class (falls back to the global mix)."""
    w = np.broadcast_to(np.where(weights.sum() > 0, weights, PREDICTED_MIX), (len(excluded), N_CLASSES)).copy()
    w[np.arange(len(excluded)), excluded] = 0.0
    empty = w.sum(axis=1) == 0
    w[empty] = PREDICTED_MIX
    w[empty, excluded[empty]] = 0.0
    cumulative = np.cumsum(w, axis=1)
    u = rng.random(len(excluded)) * cumulative[:, -1]
    return (cumulative < u[:, None]).sum(axis=1).astype(np.int8)


def _field_confidence(crop: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Field mean confidence around the crop's real figure when right / wrong."""
    names = [CROP_NAMES[c] if c != RADISH else "" for c in crop]
    centre = np.array(
        [
            CONF_WHEN_RIGHT.get(name, CONF_WHEN_RIGHT_DEFAULT)
            if ok
            else CONF_WHEN_WRONG.get(name, CONF_WHEN_WRONG_DEFAULT)
            for name, ok in zip(names, right, strict=True)
        ]
    )
    return (centre + rng.normal(0.0, FIELD_CONF_SD, len(crop))).astype(np.float32)
