"""Fields to label where there is no ground truth yet: a new region, or the fields of a file that carry no label.

- **Pool**: the fields without a usable label (`gt_class` missing: no label, or one that is no class of the
  catalogue) that are clean as the GT plan's candidates are (diagnosis/select.py): at least `min_pixels` pixel
  centres (never an all-touched fallback), a usable geometry, a unique id, a point. Fields with a label are never
  in it, so a file where only some fields carry a label gets its unlabelled ones ranked.
- **Ranking**: `acquisition_score` (diagnosis/uncertainty.py), most uncertain first; ties break on a hash of the
  field id and the seed, so the picks depend on the seed only, never on the row order.
- **Quota per predicted class**: weight = (share of the predicted area) ** `unlabelled_area_power`. The default
  0.5 is square-root allocation, the usual compromise between proportional allocation (1: the large crops take
  nearly the whole budget; Vineyard at 0.02 % of the area would get nothing of 2,000) and equal allocation (0: a
  crop on 40 % of the map gets as few as one on 0.02 %). The budget is apportioned by largest remainder
  (`quotas.apportion`, every class with area gets one first when the budget allows), each quota is capped by the
  fields the class has to pick from, and what a capped class cannot use goes to the others in proportion to their
  weights, until the budget is spent or every class is exhausted. The predicted areas are an input (the engine's
  mapped area per predicted class, or any stand-in in one unit): only their shares count.
- **Spread in space**: best-first in rounds over the GT plan's `block_km` blocks (`blocks.pick_in_rounds`), at most
  `max_per_block` fields of a predicted class in one block.

Degenerate inputs give documented outputs, never an error: no field at all, or no unlabelled clean field, gives an
empty `picks` (columns kept); a budget larger than the pool gives every field that can be picked (status
`all_picked`: the class gave every field it had); a predicted class with area but no field to pick gets quota 0
(status `no_field`); a class predicted in the pool but absent from the areas gets quota 0 (status `no_area`). The
budget is `label_budget` (None: no budget, every field that can be picked), checked by DiagnosisSettings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis.blocks import BlockGrid, block_labels, pick_in_rounds, seeded_hash
from cropmon.diagnosis.select import clean_fields
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.diagnosis.uncertainty import field_uncertainty
from cropmon.quotas import apportion

QUOTA_COLUMNS: tuple[str, ...] = ("crop", "area", "area_share", "weight", "wanted", "available", "quota", "status")
PICK_COLUMNS: tuple[str, ...] = (
    "rank", "field_id", "predicted", "acquisition_score", "band4_least_confidence", "vote_margin_uncertainty",
    "vote_entropy", "purity", "confidence_score", "n_pixels", "area_ha", "block", "pick_round", "x", "y",
)  # fmt: skip


@dataclass(frozen=True)
class UnlabelledSelection:
    """The pool of unlabelled clean fields (with scores and blocks), the quota per predicted class, the picks."""

    grid: BlockGrid
    pool: pd.DataFrame
    quotas: pd.DataFrame
    picks: pd.DataFrame


def unlabelled_pool(fields: pd.DataFrame, uncertainty: pd.DataFrame, *, settings: DiagnosisSettings,
                    grid: BlockGrid, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """The clean fields without a usable label, with their predicted class, scores and block (the fields' index)."""
    clean = (
        fields["gt_class"].isna()
        & clean_fields(fields, settings)
        & fields["majority_crop"].notna()
        & uncertainty["acquisition_score"].reindex(fields.index).notna()
    )
    ev = fields.loc[clean, ["field_id", "majority_crop", "confidence_score", "area_m2", "x", "y"]]
    scores = uncertainty.loc[ev.index]
    x, y = ev["x"].to_numpy(float), ev["y"].to_numpy(float)
    bx, by = grid.index(x, y)
    return pd.DataFrame(
        {
            "field_id": ev["field_id"].astype(str),
            "predicted": catalogue.names_of(ev["majority_crop"].astype(int).to_numpy()),
            "acquisition_score": scores["acquisition_score"],
            "band4_least_confidence": scores["band4_least_confidence"],
            "vote_margin_uncertainty": scores["vote_margin_uncertainty"],
            "vote_entropy": scores["vote_entropy"],
            "purity": scores["purity"],
            "confidence_score": ev["confidence_score"].astype(float),
            "n_pixels": scores["n_pixels"].astype("int64"),
            "area_ha": ev["area_m2"].astype(float) / 1e4,
            "x": x,
            "y": y,
            "block_x": bx,
            "block_y": by,
        },
        index=ev.index,
    )


def spread_quotas(weights: np.ndarray, available: np.ndarray, budget: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(wanted, quota): the budget apportioned by weight (every positive weight one first when the budget allows),
    then each class capped at `available`, what the capped ones cannot use apportioned to the others by weight
    (again, until the budget is spent or no class has more). No budget (None): every class with weight takes what
    it has."""
    weights = np.asarray(weights, dtype=np.float64)
    available = np.asarray(available, dtype=np.int64)
    if budget is None:
        quota = np.where(weights > 0, available, 0)
        return quota.copy(), quota
    wanted = apportion(weights, budget, at_least_one=True)
    quota = np.minimum(wanted, available)
    open_ = (weights > 0) & (quota < available)
    while (left := budget - int(quota.sum())) > 0 and open_.any():
        quota = np.minimum(quota + apportion(np.where(open_, weights, 0.0), left), available)
        open_ &= quota < available  # each pass spends the rest or fills at least one class: at most n passes
    return wanted, quota


def class_quotas(areas: pd.Series, pool: pd.DataFrame, *, budget: int | None, settings: DiagnosisSettings,
                 catalogue: Catalogue = U0C) -> pd.DataFrame:
    """Per predicted class (with area or with pool fields, in catalogue order), `QUOTA_COLUMNS`: its area and share,
    weight, the quota it wanted, the fields it can give (at most `max_per_block` per block) and its quota."""
    areas = pd.Series(areas, dtype=np.float64)
    unknown = sorted(set(areas.index) - set(catalogue.names))
    if unknown:
        raise ValueError(f"areas name classes that are not in the {catalogue.describe()}: {unknown[:5]}")
    if not np.isfinite(areas.to_numpy()).all() or (areas < 0).any():
        raise ValueError("areas must be finite and >= 0 (the mapped area of each predicted class, in one unit)")
    per_block = pool.groupby(["predicted", "block_x", "block_y"]).size().clip(upper=settings.max_per_block)
    available = per_block.groupby(level="predicted").sum()
    crops = [c for c in catalogue.names if areas.get(c, 0.0) > 0 or available.get(c, 0) > 0]
    area = areas.reindex(crops, fill_value=0.0).to_numpy()
    total = area.sum()
    share = area / total if total > 0 else np.zeros_like(area)
    weight = np.where(share > 0, share ** settings.unlabelled_area_power, 0.0)
    have = available.reindex(crops, fill_value=0).to_numpy(dtype=np.int64)
    wanted, quota = spread_quotas(weight, have, budget)
    status = np.select([weight == 0, have == 0, quota >= have], ["no_area", "no_field", "all_picked"], "ok")
    return pd.DataFrame({"crop": crops, "area": area, "area_share": share, "weight": weight, "wanted": wanted,
                         "available": have, "quota": quota, "status": status}, columns=list(QUOTA_COLUMNS))


def select_unlabelled(fields: pd.DataFrame, class_counts: pd.DataFrame, areas: pd.Series, *,
                      settings: DiagnosisSettings, seed: int, catalogue: Catalogue = U0C,
                      uncertainty: pd.DataFrame | None = None) -> UnlabelledSelection:
    """The fields to label among the unlabelled ones (module docstring). `areas`: mapped area per predicted class
    (index: crop names); the budget is `settings.label_budget` (None: every field that can be picked);
    `uncertainty`: the fields' `field_uncertainty` when the caller has it already."""
    x, y = fields["x"].to_numpy(float), fields["y"].to_numpy(float)
    grid = BlockGrid.for_points(x, y, block_km=settings.block_km)
    if uncertainty is None:
        uncertainty = field_uncertainty(fields, class_counts, catalogue=catalogue)
    pool = unlabelled_pool(fields, uncertainty, settings=settings, grid=grid, catalogue=catalogue)
    pool["_key"] = seeded_hash(pool["field_id"], seed)
    quotas = class_quotas(areas, pool, budget=settings.label_budget, settings=settings, catalogue=catalogue)
    quota = pd.Series(quotas["quota"].to_numpy(), index=quotas["crop"])
    quota = quota.loc[quota > 0]
    chosen = pick_in_rounds(pool.rename(columns={"predicted": "crop"}), quota, by=["acquisition_score"],
                        ascending=[False], max_round=settings.max_per_block).rename(columns={"crop": "predicted"})
    if not len(chosen):
        return UnlabelledSelection(grid, pool, quotas, pd.DataFrame(columns=list(PICK_COLUMNS)))
    picks = chosen.sort_values(["pick_round", "acquisition_score", "_key"], ascending=[True, False, True])
    picks["rank"] = np.arange(1, len(picks) + 1)
    picks["block"] = block_labels(picks["block_x"], picks["block_y"])
    return UnlabelledSelection(grid, pool, quotas, picks[list(PICK_COLUMNS)])
