"""Whole-number shares: one largest-remainder apportionment for every place that splits a count (the twin's fields
per crop and per label alias, the plan's label quotas, the pooled allocation across AOIs)."""

from __future__ import annotations

import numpy as np


def apportion(weights: np.ndarray, total: int, *, at_least_one: bool = False) -> np.ndarray:
    """Split `total` in proportion to `weights` (>= 0) by largest remainder; ties go to the lower index.

    The counts sum to `total` (0 everywhere when `total` <= 0 or all weights are 0) and each lies within one of
    its exact share. `at_least_one`: every positive weight gets 1 first, when `total` allows it.
    """
    weights = np.asarray(weights, dtype=np.float64)
    counts = np.zeros(len(weights), dtype=np.int64)
    if total <= 0 or weights.sum() <= 0:
        return counts
    base = np.where((weights > 0) & at_least_one & (total >= (weights > 0).sum()), 1, 0).astype(np.int64)
    rest = total - int(base.sum())
    exact = weights * rest / weights.sum()  # multiply first: exact for integer weights that divide evenly
    counts = base + np.floor(exact).astype(np.int64)
    remainder = exact - np.floor(exact)
    order = np.lexsort((np.arange(len(weights)), -remainder))
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def within_budget(wanted: np.ndarray, budget: int | None) -> np.ndarray:
    """`wanted` (int >= 0) as it is when it fits `budget` (None = no budget), else apportioned down to exactly the
    budget in proportion to `wanted`; never above `wanted`."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if budget is None or int(wanted.sum()) <= budget:
        return wanted.copy()
    return apportion(wanted, budget)
