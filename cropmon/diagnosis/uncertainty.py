"""Per-field uncertainty that needs no ground truth: the model's band-4 confidence and the pixel committee's vote.

A field's class histogram (`class_counts`, pixels per predicted class) is a committee of pixels; its shares p are
taken as class probabilities. The scores (each in [0, 1], higher = less certain) are those of
`skactiveml.pool.uncertainty_scores` (Settles 2009), which the tests check on hypothesis-chosen histograms:

- `band4_least_confidence` = 1 - confidence_score / 100: the model's own confidence, mean of band 4 over the field;
- `vote_least_confidence` = 1 - max p = 1 - purity;
- `vote_margin_uncertainty` = 1 - (p1 - p2), p1 >= p2 the two largest shares (= 1 - the table's `vote_margin`);
  an exact tie of the two largest classes gives 1;
- `vote_entropy` = -sum p ln p / ln K: the vote entropy of query-by-committee with pixels as voters, *normalised*
  by ln K, K = the catalogue's classes, so that it lies in [0, 1] like the other scores and means the same in every
  run of one model (the ranking does not change: ln K is a constant). Not by the classes present, nor by
  ln(min(K, n_pixels)): a 1:1 split of 2 pixels would then score as high as a field split over all 32 classes.
  K = 1 gives 0. scikit-activeml's `entropy` is `vote_entropy` x ln K;
- `purity` = max p;
- `acquisition_score` = (band4_least_confidence + vote_margin_uncertainty) / 2, the margin alone where band 4 has
  no valid confidence: the GT plan's `uncertainty` (diagnosis/select.py), so one word means one thing. Chosen by
  what it finds (`benchmarks/acquisition.py`; docs/active-learning.md has the table): on the full twin its top 100
  and top 500 hold the most misclassified fields of all scores compared (99 and 91.8 %, random 17.1 %), and it
  keeps most of that when band 4 separates right from wrong fields less well than in the twin (top 500: 89.6 %
  with noise of sd 14 added to the confidences, where band 4 alone falls to 70.8 % and 1 - confidence x purity to
  72.6 %): in a region the model has never seen, its confidence is the signal least to be trusted. Its cost: the
  margin puts exact ties first, and the twin's ties are nearly all errors (501 of 544); without them,
  1 - confidence x purity finds more at the twin's sharp confidences (top 500: 85.4 against 81.2 %).

A field without a pixel of the catalogue (an empty histogram) gets NaN everywhere: there is no prediction to be
uncertain about, and labelling it would not teach the model anything (it has no pixel). Rankings put NaN last.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.sparse

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis.metrics import is_sparse

SCORES: tuple[str, ...] = (
    "band4_least_confidence", "vote_least_confidence", "vote_margin_uncertainty", "vote_entropy", "acquisition_score",
)  # fmt: skip
UNCERTAINTY_COLUMNS: tuple[str, ...] = ("n_pixels", "purity", *SCORES)


def count_matrix(index: pd.Index, class_counts: pd.DataFrame, catalogue: Catalogue = U0C) -> scipy.sparse.csr_matrix:
    """The histograms as a (fields x classes) CSR matrix of pixel counts, rows in `index` order, never densified
    (the engine's class_counts are sparse: a dense copy of 615k fields x 32 classes is 157 MB of int64)."""
    unknown = sorted(set(class_counts.columns) - set(catalogue.names))
    if unknown:
        raise ValueError(f"class_counts has columns that are no crop name: {unknown[:5]}")
    missing = ~index.isin(class_counts.index)
    if missing.any():
        raise ValueError(f"class_counts has no row for {int(missing.sum())} field(s): expected one per field")
    if not class_counts.index.equals(index):
        class_counts = class_counts.loc[index]
    if is_sparse(class_counts):
        matrix = scipy.sparse.csr_matrix(class_counts.sparse.to_coo(), dtype=np.int64)
    else:
        matrix = scipy.sparse.csr_matrix(class_counts.to_numpy(dtype=np.int64))
    if matrix.nnz and matrix.data.min() < 0:
        raise ValueError("class_counts holds negative pixel counts")
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def vote_scores(counts: scipy.sparse.csr_matrix, *, n_classes: int) -> dict[str, np.ndarray]:
    """Pixel total, purity and the three committee scores of each row of a count matrix (NaN for empty rows)."""
    counts = scipy.sparse.csr_matrix(counts)
    counts.eliminate_zeros()
    n_rows = counts.shape[0]
    per_row = np.diff(counts.indptr)
    rows = np.repeat(np.arange(n_rows), per_row)
    data = counts.data.astype(np.float64)
    total = np.bincount(rows, weights=data, minlength=n_rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = data / total[rows]
        order = np.lexsort((-share, rows))  # rows stay in their CSR blocks; largest share first within each
        ranked = share[order]
        start = counts.indptr[:-1]
        filled = per_row > 0
        first = np.full(n_rows, np.nan)
        first[filled] = ranked[start[filled]]
        has_second = per_row > 1
        second = np.zeros(n_rows)
        second[has_second] = ranked[start[has_second] + 1]
        entropy = np.bincount(rows, weights=-share * np.log(share), minlength=n_rows)
    norm = math.log(n_classes) if n_classes > 1 else math.inf
    return {
        "n_pixels": total.astype(np.int64),
        "purity": first,
        "vote_least_confidence": 1.0 - first,
        "vote_margin_uncertainty": np.where(filled, 1.0 - (first - second), np.nan),
        "vote_entropy": np.where(filled, np.abs(entropy) / norm, np.nan),  # abs: -0.0 of a pure field
    }


def acquisition_score(band4_least_confidence: np.ndarray, vote_margin_uncertainty: np.ndarray) -> np.ndarray:
    """The mean of band-4 least confidence and the vote margin uncertainty; the margin alone without band 4."""
    band4 = np.asarray(band4_least_confidence, dtype=np.float64)
    margin = np.asarray(vote_margin_uncertainty, dtype=np.float64)
    return 0.5 * (np.where(np.isnan(band4), margin, band4) + margin)


def field_uncertainty(fields: pd.DataFrame, class_counts: pd.DataFrame, *,
                      catalogue: Catalogue = U0C) -> pd.DataFrame:
    """Per field (the fields' index), `UNCERTAINTY_COLUMNS`: see the module docstring. Reads `confidence_score`."""
    votes = vote_scores(count_matrix(fields.index, class_counts, catalogue), n_classes=catalogue.n)
    confidence = fields["confidence_score"].to_numpy(dtype=np.float64, na_value=np.nan)
    empty = votes["n_pixels"] == 0
    band4 = np.where(empty, np.nan, 1.0 - confidence / 100.0)
    out = pd.DataFrame(votes, index=fields.index)
    out["band4_least_confidence"] = band4
    out["acquisition_score"] = acquisition_score(band4, votes["vote_margin_uncertainty"])
    return out[list(UNCERTAINTY_COLUMNS)]


CLASS_COLUMNS: tuple[str, ...] = ("crop", "fields", "mean_confidence", "mean_purity", "mean_acquisition_score")


def by_predicted_class(fields: pd.DataFrame, uncertainty: pd.DataFrame, *, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """Per predicted class (catalogue order; classes no field is predicted as left out), `CLASS_COLUMNS`: the fields
    with a prediction, their mean band-4 confidence, purity and acquisition score. What a run can say of the
    model's certainty without ground truth (small: one row per class)."""
    scored = uncertainty["acquisition_score"].notna() & fields["majority_crop"].notna()
    frame = pd.DataFrame({
        "class_id": fields.loc[scored, "majority_crop"].astype(int),
        "confidence": fields.loc[scored, "confidence_score"].astype(float),
        "purity": uncertainty.loc[scored, "purity"],
        "score": uncertainty.loc[scored, "acquisition_score"],
    })
    grouped = frame.groupby("class_id").agg(fields=("score", "size"), mean_confidence=("confidence", "mean"),
                                            mean_purity=("purity", "mean"), mean_acquisition_score=("score", "mean"))
    ids = [i for i in catalogue.ids if i in grouped.index]
    grouped = grouped.reindex(ids)
    return grouped.assign(crop=catalogue.names_of(np.asarray(ids, dtype=int))).reset_index(drop=True)[
        list(CLASS_COLUMNS)]
