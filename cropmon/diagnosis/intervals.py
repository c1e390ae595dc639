"""95 % intervals of the per-crop figures, vectorised over the crops, and what they say about a threshold.

- agreement, a share of a crop's GT fields: the Wilson score interval, as
  `scipy.stats.binomtest(k, n).proportion_ci(method="wilson")` (tested equal), NaN without a field;
- F1 = 2 J / (1 + J) grows with J = tp / (tp + fp + fn), the share of the fields that are the crop in the GT or in
  the prediction on which both agree: the Wilson interval of J, mapped through 2 J / (1 + J);
- mean confidence over a crop's fields: mean +- t sd / sqrt(n), t the Student quantile with n - 1 degrees of freedom
  (wide for a handful of fields, the normal one for many; none with one field).

`verdict` reads an interval against a threshold: `below` when its upper bound is under it (certainly fails),
`above` when its lower bound reaches it, `unsure` when it straddles it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri, stdtrit

LEVEL = 0.95


def _z(level: float) -> float:
    return float(ndtri(0.5 + 0.5 * level))


def wilson(k: np.ndarray, n: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n trials (arrays), as scipy's proportion_ci(method="wilson")."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    z = _z(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 2 * (n + z**2)
        center = (2 * n * p + z**2) / denom
        delta = z / denom * np.sqrt(4 * n * p * (1 - p) + z**2)
    low = np.where(k == 0, 0.0, center - delta)
    high = np.where(k == n, 1.0, center + delta)
    empty = n <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def f1_interval(correct: np.ndarray, support: np.ndarray, predicted: np.ndarray,
                level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Interval of F1 = 2 tp / (support + predicted): Wilson on J = tp / (support + predicted - tp), mapped."""
    correct = np.asarray(correct, dtype=float)
    union = np.asarray(support, dtype=float) + np.asarray(predicted, dtype=float) - correct
    low, high = wilson(correct, union, level)
    return 2 * low / (1 + low), 2 * high / (1 + high)


def mean_interval(total: np.ndarray, squares: np.ndarray, n: np.ndarray,
                  level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of a mean from the sum, the sum of squares and the count of its values (NaN for n < 2)."""
    total, squares, n = (np.asarray(a, dtype=float) for a in (total, squares, n))
    ok = n >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        variance = np.maximum(squares - n * mean**2, 0.0) / (n - 1)
        t = stdtrit(np.where(ok, n - 1, 1), 0.5 + 0.5 * level)
        half = t * np.sqrt(variance / n)
    return np.where(ok, mean - half, np.nan), np.where(ok, mean + half, np.nan)


def verdict(low: np.ndarray, high: np.ndarray, threshold: float) -> np.ndarray:
    """'below' (the whole interval under the threshold), 'above' (none of it), 'unsure' (it straddles), or ''
    without an interval."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    out = np.where(high < threshold, "below", np.where(low >= threshold, "above", "unsure"))
    return np.where(np.isnan(low) | np.isnan(high), "", out).astype(object)
