"""Per-crop and confusion tables from the per-field table (`schema.FIELD_TABLE_COLUMNS`) and its class histograms.

Field-level metrics (precision, recall, F1, support, the confusion matrix) come from scikit-learn on the field
label vectors (GT class id, majority class id; `labels=` the catalogue's ids, `zero_division=np.nan`: a score that
is undefined stays NaN, it is never silently 0). Pixel-level metrics are read off the pixel confusion matrix that
the class histograms add up to (`scores`), which is what scikit-learn gives with each pixel as a weighted sample.

Only *evaluable* fields count: a known ground-truth class and at least one valid pixel. The others keep their rows
in the per-field table and are counted in the report's caveats. Crop names and their order follow the model's
catalogue (`catalogue.Catalogue`, the u0c one by default); confusion matrices are always n x n in catalogue order,
so tables of different AOIs line up.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis.intervals import f1_interval, mean_interval, wilson

REFERENCE_METRIC_COLUMNS: tuple[str, ...] = ("crop", "num_fields", "agreement_score", "weighted_f1_score")
TOP_MISTAKES = 3


def evaluable(fields: pd.DataFrame) -> pd.Series:
    """Rows that enter the metrics: a known ground-truth class and at least one valid pixel."""
    return fields["gt_class"].notna() & (fields["n_pixels"] > 0)


def truth_and_prediction(fields: pd.DataFrame, catalogue: Catalogue = U0C) -> tuple[pd.Series, pd.Series]:
    """Crop names of the ground truth and of the majority class, for the evaluable fields (same index)."""
    ev = fields.loc[evaluable(fields), ["gt_class", "majority_crop"]]
    truth = pd.Series(catalogue.names_of(ev["gt_class"].astype(int).to_numpy()), index=ev.index, dtype=object)
    pred = pd.Series(catalogue.names_of(ev["majority_crop"].astype(int).to_numpy()), index=ev.index, dtype=object)
    return truth, pred


def aligned_class_counts(fields: pd.DataFrame, class_counts: pd.DataFrame,
                         catalogue: Catalogue = U0C) -> pd.DataFrame:
    """`class_counts` on the fields' index with the crop columns in catalogue order (absent columns count 0)."""
    missing_rows = ~fields.index.isin(class_counts.index)
    if missing_rows.any():
        raise ValueError(f"class_counts has no row for {int(missing_rows.sum())} field(s): expected one per field")
    unknown = sorted(set(class_counts.columns) - set(catalogue.names))
    if unknown:
        raise ValueError(f"class_counts has columns that are no crop name: {unknown[:5]}")
    if is_sparse(class_counts):
        class_counts = class_counts.sparse.to_dense()
    return class_counts.reindex(index=fields.index, columns=list(catalogue.names), fill_value=0).astype("int64")


def _square(frame: pd.DataFrame, catalogue: Catalogue) -> pd.DataFrame:
    """A GT x predicted table reindexed to the catalogue's crops, named axes."""
    names = list(catalogue.names)
    out = frame.reindex(index=names, columns=names, fill_value=0).astype("int64")
    out.index.name, out.columns.name = "gt", "predicted"
    return out


def label_vectors(fields: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The evaluable fields' GT class ids and majority class ids (int64): the vectors the field metrics score."""
    ev = fields.loc[evaluable(fields), ["gt_class", "majority_crop"]]
    return ev["gt_class"].to_numpy(dtype=np.int64), ev["majority_crop"].to_numpy(dtype=np.int64)


def confusion_matrix(fields: pd.DataFrame, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """Field counts, GT crops as rows x predicted crops as columns (n x n, crop names in catalogue order):
    scikit-learn's confusion_matrix of the field label vectors with labels= the catalogue's ids."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    truth, pred = label_vectors(fields)
    with warnings.catch_warnings():
        # A one-class catalogue gives a 1 x 1 matrix, which scikit-learn warns about although labels= is given.
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        matrix = (sk_confusion_matrix(truth, pred, labels=list(catalogue.ids)) if len(truth)
                  else np.zeros((catalogue.n, catalogue.n), np.int64))  # scikit-learn refuses empty vectors
    names = list(catalogue.names)
    return _square(pd.DataFrame(matrix, index=names, columns=names), catalogue)


def field_scores(truth: np.ndarray, pred: np.ndarray, labels: list[int], names: list[str], *,
                 sample_weight: np.ndarray | None = None) -> pd.DataFrame:
    """Per class (rows `names`, for `labels`): precision, recall, F1, support, predicted, correct, from
    scikit-learn on label vectors. Precision of a class never predicted and recall of a class absent from the
    GT are NaN (zero_division=np.nan); F1 is 2 tp / (support + predicted), 0 when the class is on one side only."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix
    from sklearn.metrics import precision_recall_fscore_support

    if len(truth) == 0:
        nan, zero = np.full(len(labels), np.nan), np.zeros(len(labels), np.int64)
        return pd.DataFrame({"precision": nan, "recall": nan, "f1": nan, "support": zero, "predicted": zero,
                             "correct": zero}, index=names)  # fmt: skip
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, pred, labels=labels, zero_division=np.nan, sample_weight=sample_weight
    )
    with warnings.catch_warnings():  # see confusion_matrix
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        matrix = sk_confusion_matrix(truth, pred, labels=labels, sample_weight=sample_weight)
    return pd.DataFrame(
        {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": np.rint(support).astype("int64"),
            "predicted": np.rint(matrix.sum(axis=0)).astype("int64"),
            "correct": np.rint(np.diag(matrix)).astype("int64"),
        },
        index=names,
    )


def field_scores_of(fields: pd.DataFrame, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """`field_scores` of one per-field table: the evaluable fields' label vectors, the catalogue's ids."""
    truth, pred = label_vectors(fields)
    return field_scores(truth, pred, list(catalogue.ids), list(catalogue.names))


def field_scores_from_confusion(confusion: pd.DataFrame) -> pd.DataFrame:
    """`field_scores` when only a field confusion matrix is kept (the pooled view of many AOIs): each non-empty
    cell is one (GT, predicted) sample weighted by its count, which is the same as the fields it counts."""
    m = confusion.to_numpy()
    i, j = np.nonzero(m)
    names = list(confusion.index)
    return field_scores(i, j, list(range(len(names))), names, sample_weight=m[i, j].astype(float))


def is_sparse(frame: pd.DataFrame) -> bool:
    """True when every column of `frame` is a pandas sparse column."""
    return len(frame.columns) > 0 and all(isinstance(t, pd.SparseDtype) for t in frame.dtypes)


def pixel_confusion_matrix(fields: pd.DataFrame, class_counts: pd.DataFrame,
                           catalogue: Catalogue = U0C) -> pd.DataFrame:
    """Pixel counts, GT crops as rows x predicted classes as columns: each field's histogram summed by GT crop.

    One sparse product (GT crop x fields) @ (fields x classes): no dense copy of the histogram table is made, and
    the engine's histograms (engine/assemble.FieldColumns) stay sparse throughout.
    """
    import scipy.sparse

    names = list(catalogue.names)
    truth, _ = truth_and_prediction(fields, catalogue)
    if not (class_counts.index.equals(fields.index) and list(class_counts.columns) == names):
        class_counts = aligned_class_counts(fields, class_counts, catalogue)
    counts = (class_counts.sparse.to_coo() if is_sparse(class_counts)
              else scipy.sparse.csr_matrix(class_counts.to_numpy()))
    rows = fields.index.get_indexer(truth.index)
    crops = pd.Categorical(truth.to_numpy(), categories=names)
    by_crop = scipy.sparse.csr_matrix(
        (np.ones(len(rows), np.int64), (crops.codes, rows)), shape=(len(names), len(fields))
    )
    sums = (by_crop @ counts.astype(np.int64)).toarray()
    return _square(pd.DataFrame(sums, index=names, columns=names), catalogue)


def row_shares(confusion: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its total (rows without any field stay 0): the share of a GT crop going to each class."""
    totals = confusion.sum(axis=1)
    return confusion.div(totals.where(totals > 0, 1), axis=0)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (scikit-learn's zero_division=np.nan)."""
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def scores(confusion: pd.DataFrame) -> pd.DataFrame:
    """Per-class precision, recall, F1 (scikit-learn's definitions, NaN when undefined), support and predictions,
    read off a confusion matrix: the pixel-level metrics (tested equal to scikit-learn with pixel weights)."""
    m = confusion.to_numpy(dtype=float)
    tp, support, predicted = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    return pd.DataFrame(
        {
            "precision": ratio(tp, predicted),
            "recall": ratio(tp, support),
            "f1": ratio(2 * tp, support + predicted),
            "support": support.astype("int64"),
            "predicted": predicted.astype("int64"),
            "correct": tp.astype("int64"),
        },
        index=confusion.index,
    )


def reference_f1(agreement: pd.Series) -> pd.Series:
    """The reference's weighted F1 on a crop's own GT fields: precision is 1 there, so F1 = 2a / (1 + a)."""
    return 2 * agreement / (1 + agreement)


SUM_COLUMNS: tuple[str, ...] = (
    "conf_sum", "conf_n", "conf_right_sum", "conf_right_n", "conf_wrong_sum", "conf_wrong_n", "purity_sum",
    "purity_n", "area_m2", "area_right_m2", "conf_sq_sum",
)  # fmt: skip
INTERVAL_COLUMNS: tuple[str, ...] = (
    "agreement_ci_low", "agreement_ci_high", "f1_ci_low", "f1_ci_high", "conf_mean_ci_low", "conf_mean_ci_high",
)  # fmt: skip


def crop_sums(fields: pd.DataFrame, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """Per GT crop (one row per class, catalogue order): sums and counts of confidence (all, right, wrong) and
    purity, area and area right. Additive: the sums of several AOIs give the per-crop means of all their fields
    together."""
    truth, pred = truth_and_prediction(fields, catalogue)
    ev = fields.loc[truth.index, ["confidence_score", "purity", "area_m2"]]
    right = (truth == pred).to_numpy()
    conf = ev["confidence_score"].astype(float).to_numpy()
    purity = ev["purity"].astype(float).to_numpy()
    area = ev["area_m2"].astype(float).to_numpy()
    frame = pd.DataFrame(
        {
            "crop": truth.to_numpy(),
            "conf_sum": np.nan_to_num(conf),
            "conf_sq_sum": np.nan_to_num(conf) ** 2,
            "conf_n": np.isfinite(conf),
            "conf_right_sum": np.where(right, np.nan_to_num(conf), 0.0),
            "conf_right_n": np.isfinite(conf) & right,
            "conf_wrong_sum": np.where(~right, np.nan_to_num(conf), 0.0),
            "conf_wrong_n": np.isfinite(conf) & ~right,
            "purity_sum": np.nan_to_num(purity),
            "purity_n": np.isfinite(purity),
            "area_m2": np.nan_to_num(area),
            "area_right_m2": np.where(right, np.nan_to_num(area), 0.0),
        }
    )
    sums = frame.groupby("crop").sum().reindex(list(catalogue.names), fill_value=0)
    sums.index.name = "crop"
    return sums[list(SUM_COLUMNS)].astype(float)


def _stats_from_sums(sums: pd.DataFrame, crops: pd.Index) -> pd.DataFrame:
    """Per crop: mean confidence (all / right / wrong) with the 95 % interval of the mean, mean purity, area and
    area-weighted agreement."""
    s = sums.reindex(crops, fill_value=0.0)
    conf_low, conf_high = mean_interval(s["conf_sum"], s["conf_sq_sum"], s["conf_n"])
    return pd.DataFrame(
        {
            "conf_mean": ratio(s["conf_sum"].to_numpy(), s["conf_n"].to_numpy()),
            "conf_mean_ci_low": conf_low,
            "conf_mean_ci_high": conf_high,
            "conf_mean_right": ratio(s["conf_right_sum"].to_numpy(), s["conf_right_n"].to_numpy()),
            "conf_mean_wrong": ratio(s["conf_wrong_sum"].to_numpy(), s["conf_wrong_n"].to_numpy()),
            "purity_mean": ratio(s["purity_sum"].to_numpy(), s["purity_n"].to_numpy()),
            "area_ha": s["area_m2"].to_numpy() / 1e4,
            "area_agreement": ratio(s["area_right_m2"].to_numpy(), s["area_m2"].to_numpy()),
        },
        index=crops,
    )


def _mistakes(confusion: pd.DataFrame) -> pd.DataFrame:
    """The TOP_MISTAKES crops each GT crop is most often predicted as, with their share of its fields (empty
    columns past the catalogue's other crops: a 3-class model has at most 2 mistakes per crop)."""
    names = np.asarray(confusion.columns, dtype=object)
    shares = row_shares(confusion).to_numpy(copy=True)
    np.fill_diagonal(shares, 0.0)
    shares = np.pad(shares, ((0, 0), (0, max(TOP_MISTAKES - shares.shape[1], 0))))  # padding: share 0, never shown
    order = np.argsort(-shares, axis=1, kind="stable")[:, :TOP_MISTAKES]
    names = np.concatenate([names, np.full(shares.shape[1] - len(names), None, dtype=object)])
    columns: dict[str, object] = {}
    for k in range(TOP_MISTAKES):
        share = np.take_along_axis(shares, order[:, k : k + 1], axis=1)[:, 0]
        columns[f"mistaken_for_{k + 1}"] = np.where(share > 0, names[order[:, k]], np.array(None, dtype=object))
        columns[f"mistaken_for_{k + 1}_share"] = np.where(share > 0, share, np.nan)
    return pd.DataFrame(columns, index=confusion.index)


def crop_metrics(
    fields: pd.DataFrame,
    class_counts: pd.DataFrame,
    *,
    confusion: pd.DataFrame | None = None,
    pixel_confusion: pd.DataFrame | None = None,
    sums: pd.DataFrame | None = None,
    catalogue: Catalogue = U0C,
) -> pd.DataFrame:
    """One row per crop that is in the GT or predicted: the reference columns first, then the diagnostics.

    Unrounded (round for display). Sorted like the reference: weighted_f1_score descending (predicted-only crops,
    which have no GT field and so no score, last), then num_fields descending, then crop name. Pass the confusion
    matrices and the per-crop sums (`crop_sums`) when they are already computed (diagnose.diagnose_run does).
    """
    confusion = confusion_matrix(fields, catalogue) if confusion is None else confusion
    if pixel_confusion is None:
        pixel_confusion = pixel_confusion_matrix(fields, class_counts, catalogue)
    sums = crop_sums(fields, catalogue) if sums is None else sums
    return crop_table(confusion, pixel_confusion, sums, field=field_scores_of(fields, catalogue))


def crop_table(confusion: pd.DataFrame, pixel_confusion: pd.DataFrame, sums: pd.DataFrame, *,
               field: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-crop table from the two confusion matrices and the per-crop sums (`crop_sums`), in crop_metrics'
    columns and order: the one route to it, for one AOI and for the pooled view of many (sums added). The
    reference columns come first, then the 95 % intervals of agreement (Wilson), F1 and mean confidence
    (`intervals`), then the diagnostics.

    `field`: the field-level scores (`field_scores_of` the fields); without it they come from the field confusion
    matrix's cells as weighted samples (the pooled view keeps no fields)."""
    field = field_scores_from_confusion(confusion) if field is None else field
    pixel = scores(pixel_confusion)
    listed = (field["support"] > 0) | (field["predicted"] > 0)
    agreement = field["recall"]
    agreement_low, agreement_high = wilson(field["correct"], field["support"])
    f1_low, f1_high = f1_interval(field["correct"], field["support"], field["predicted"])
    table = pd.DataFrame(
        {
            "num_fields": field["support"],
            "agreement_score": agreement,
            "weighted_f1_score": reference_f1(agreement),
            "agreement_ci_low": agreement_low,
            "agreement_ci_high": agreement_high,
            "precision": field["precision"],
            "recall": field["recall"],
            "f1": field["f1"],
            "f1_ci_low": f1_low,
            "f1_ci_high": f1_high,
            "support": field["support"],
            "n_predicted": field["predicted"],
            "n_correct": field["correct"],
        }
    )
    table = table.join(_stats_from_sums(sums, confusion.index)).join(
        pixel[["precision", "recall", "f1", "support"]].add_prefix("pixel_").rename(columns={"pixel_support": "pixels"})
    )
    table = table.join(_mistakes(confusion)).loc[listed]
    table["area_ha"] = table["area_ha"].fillna(0.0)  # crops only predicted have no GT area
    table.index.name = "crop"
    table = table.reset_index()
    return table.sort_values(
        ["weighted_f1_score", "num_fields", "crop"], ascending=[False, False, True], na_position="last"
    ).reset_index(drop=True)


def confusion_pairs(confusion: pd.DataFrame, *, mutual_share: float, top: int | None = None) -> pd.DataFrame:
    """Off-diagonal flows between two crops, one row per unordered pair, largest total first.

    `crop_a` is the side whose fields go more often to the other (`a_as_b` >= `b_as_a`); shares are of each
    crop's own GT fields. A confusion is `mutual` when both shares are above 0 and reach `mutual_share`.
    """
    names = np.asarray(confusion.index, dtype=object)
    m = confusion.to_numpy()
    shares = row_shares(confusion).to_numpy()
    i, j = np.nonzero(np.triu(m + m.T, k=1))
    forward = m[i, j] >= m[j, i]
    a, b = np.where(forward, i, j), np.where(forward, j, i)
    pairs = pd.DataFrame(
        {
            "crop_a": names[a],
            "crop_b": names[b],
            "a_as_b": m[a, b],
            "a_as_b_share": shares[a, b],
            "b_as_a": m[b, a],
            "b_as_a_share": shares[b, a],
        }
    )
    pairs["fields"] = pairs["a_as_b"] + pairs["b_as_a"]
    both_ways = np.minimum(pairs["a_as_b_share"], pairs["b_as_a_share"])
    pairs["mutual"] = (both_ways > 0) & (both_ways >= mutual_share)
    pairs = pairs.sort_values(["fields", "a_as_b_share", "crop_a", "crop_b"], ascending=[False, False, True, True])
    return pairs.head(top).reset_index(drop=True) if top is not None else pairs.reset_index(drop=True)


def overall(crop_table: pd.DataFrame, pixel_confusion: pd.DataFrame) -> dict[str, float]:
    """Headline numbers from the per-crop table: field, area- and pixel-weighted agreement; macro and weighted F1
    over the crops in the GT or predicted, as scikit-learn has them."""
    n = int(crop_table["num_fields"].sum())
    area = crop_table["area_ha"].to_numpy(float)
    pixel = pixel_confusion.to_numpy()
    nan = float("nan")
    return {
        "fields_evaluated": n,
        "agreement": crop_table["n_correct"].sum() / n if n else nan,
        "area_agreement": np.nansum(crop_table["area_agreement"] * area) / area.sum() if area.sum() > 0 else nan,
        "pixel_agreement": np.trace(pixel) / pixel.sum() if pixel.sum() > 0 else nan,
        "macro_f1": crop_table["f1"].mean() if n else nan,
        "weighted_f1": np.average(crop_table["f1"], weights=crop_table["support"]) if n else nan,
    }
