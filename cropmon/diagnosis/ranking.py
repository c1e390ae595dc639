"""What an uncertainty ranking is worth where the ground truth exists: the share of misclassified fields among its
top k, against a random draw of k (precision at k). The ranking never sees the GT; the GT only scores it.

`errors_in_top_k` gives the numbers of the report's sentence "the top 500 uncertain fields hold x % errors, against
y % at random"; `benchmarks/acquisition.py` uses `ranked_order` and `precision_at_k` over seeds and bootstraps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis.blocks import seeded_hash
from cropmon.diagnosis.intervals import wilson
from cropmon.diagnosis.metrics import truth_and_prediction


def ranked_order(score: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Positions from the most to the least uncertain: score descending, NaN last, ties on `keys` ascending."""
    score = np.asarray(score, dtype=np.float64)
    missing = np.isnan(score)
    return np.lexsort((np.asarray(keys), -np.where(missing, 0.0, score), missing))


def precision_at_k(wrong: np.ndarray, order: np.ndarray, k: int) -> float:
    """The share of `wrong` among the first k of `order` (k is cut to the number of fields; NaN for none)."""
    k = min(int(k), len(order))
    return float(np.asarray(wrong, dtype=bool)[order[:k]].mean()) if k > 0 else float("nan")


@dataclass(frozen=True)
class TopKErrors:
    """Misclassified fields among the k most uncertain, and what a random draw of k would hold.

    `share_low/high`: 95 % Wilson interval of the top-k share, taking the top k as a sample of what the ranking
    picks from fields like these (binomial); `random_low/high`: the central 95 % of a random draw of k of the
    n fields without replacement (hypergeometric, exact); `random_share` is its expectation, the error rate.
    """

    k: int  # cut to n_fields
    n_fields: int  # evaluable fields ranked (a GT class and a pixel)
    n_errors: int
    errors_in_top_k: int
    share: float
    share_low: float
    share_high: float
    random_share: float
    random_low: float
    random_high: float
    score: str


def errors_in_top_k(fields: pd.DataFrame, uncertainty: pd.DataFrame, *, k: int = 500, seed: int = 0,
                    score: str = "acquisition_score", catalogue: Catalogue = U0C) -> TopKErrors:
    """The headline numbers for a run with GT: the evaluable fields ranked by `uncertainty[score]` (ties on the
    seeded hash of the field id), and the share of them whose majority class is not their GT class in the top k."""
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    truth, pred = truth_and_prediction(fields, catalogue)
    wrong = (truth != pred).to_numpy()
    n, errors = len(wrong), int(wrong.sum())
    k = min(int(k), n)
    values = uncertainty.loc[truth.index, score].to_numpy(dtype=np.float64)
    order = ranked_order(values, seeded_hash(fields.loc[truth.index, "field_id"], seed))
    hits = int(wrong[order[:k]].sum())
    if k == 0:
        nan = float("nan")
        return TopKErrors(0, n, errors, 0, nan, nan, nan, errors / n if n else nan, nan, nan, score)
    low, high = wilson(np.array([hits]), np.array([k]))
    draw = hypergeom(n, errors, k)
    return TopKErrors(k=k, n_fields=n, n_errors=errors, errors_in_top_k=hits, share=hits / k,
                      share_low=float(low[0]), share_high=float(high[0]), random_share=errors / n,
                      random_low=float(draw.ppf(0.025)) / k, random_high=float(draw.ppf(0.975)) / k, score=score)
