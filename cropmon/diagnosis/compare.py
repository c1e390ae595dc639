"""Compare two runs (A = the current model, B = the next one) per crop, on run A's held-back evaluation fields.

Run A's `evaluation_fields.csv` lists the fields its plan held back to measure the next model: a probability sample
of A's clean GT fields (diagnosis/evaluation.py: blocks, then fields by A's map class, each field's inclusion
probability written). B is measured on exactly those fields (all of them must be in B's fields), A too, so neither
model is scored on fields it may have been trained on. When A holds back nothing (no such file, or no row in it),
the fields scored in both runs are used, with equal weights, and the report says so; when the runs share no field
at all, each run's own scored fields are used, unpaired.

The verdicts rest on design-based estimates (`design_comparison`): for A and for B, the user's and producer's
accuracy of every crop and the overall accuracy, in pixels (fields are clusters of pixels), estimated from the
sample with inclusion-probability weights (Horvitz-Thompson totals, ratios Taylor-linearised: Stehman 2014, whose
strata need not be the map classes assessed, as A's strata are not B's map), with the evaluation blocks as primary
units (ultimate-cluster variance, finite-population factor 1 - blocks drawn / blocks in the frame). The deltas
B - A are paired: both models' linearised values are summed per block before the variance, so what the two share
cancels. Intervals use Student's t with (primary units - 1) degrees of freedom and are simultaneous over the crops
compared (Bonferroni: with k crops each interval has level 1 - (1 - level) / k), so an unchanged model flags no
crop in (1 - level) of the comparisons, however many crops there are. The verdict is on producer's accuracy (the
area-weighted share of the crop's GT pixels that the model maps as it: the design-based agreement): `better` when
its interval lies above 0, `worse` when below, `unchanged` otherwise, and `too_few_fields` below `min_fields` GT
fields of the crop in the sample.

The field-level scores stay as they were, beside: per GT crop, agreement (the share of its fields predicted as it),
F1 over the set (false alarms are counted among the set's fields only) and mean confidence, for A and B, their
deltas and bootstrap intervals (fields resampled with replacement within each GT crop, the same fields for A and B
when paired; unweighted, so they describe the sample, not the AOI).

Crops are listed in the order of run A's class catalogue (then any crop only B knows, by name); the comparison
works on crop names, so two models with different class lists are compared on the crops they share.

Pure functions over DataFrames; reading the runs and writing the outputs live in report/compare.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cropmon.catalogue import U0C
from cropmon.errors import NotComparable

MEASURES: tuple[str, ...] = ("agreement", "f1", "conf_mean")
VERDICTS: tuple[str, ...] = ("better", "worse", "unchanged", "too_few_fields")
DEFAULT_BOOTSTRAP = 10_000  # the Bonferroni tails need ~10 resamples beyond each end: 0.05 / (2 x 20 crops) x 10,000
MIN_FIELDS = 10
LEVEL = 0.95
MAX_DRAWS_PER_BATCH = 20_000_000  # resampled fields held in memory at once


@dataclass(frozen=True)
class EvaluationSet:
    """The fields both runs are scored on: one row per field (crop, predicted, confidence) for A and for B."""

    a: pd.DataFrame  # field_id, crop, predicted, confidence
    b: pd.DataFrame  # paired: the same fields in the same order as `a`
    paired: bool
    source: str  # "evaluation_fields" | "common_fields" | "all_fields"
    description: str  # one sentence for the report
    dropped: dict[str, int]  # why listed fields are left out, with counts
    order: tuple[str, ...] = U0C.names  # crop order: run A's catalogue

    def crops(self, table: pd.DataFrame | None = None) -> list[str]:
        """The GT crops of `table` (default: A's fields) in catalogue order, then other names sorted."""
        return ordered(set((self.a if table is None else table)["crop"]), self.order)


def ordered(names: set[str], order: tuple[str, ...]) -> list[str]:
    """`names` in the order of `order`, then the others sorted."""
    return [c for c in order if c in names] + sorted(names - set(order))


def scored_fields(fields: pd.DataFrame) -> pd.DataFrame:
    """Fields with a known GT crop and a prediction (as the metrics score them), one row per unique field_id:
    field_id, crop, predicted, confidence. Ids that appear twice are left out (they cannot be paired)."""
    ids = fields["field_id"].astype(str)
    gt, pred = fields["gt_label"].astype("string"), fields["majority_crop_label"].astype("string")
    known = gt.fillna("").ne("") & pred.fillna("").ne("")
    ok = known & (fields["n_pixels"] > 0) & ~ids.duplicated(keep=False)
    out = pd.DataFrame(
        {
            "field_id": ids[ok].to_numpy(),
            "crop": fields.loc[ok, "gt_label"].astype(str).to_numpy(),
            "predicted": fields.loc[ok, "majority_crop_label"].astype(str).to_numpy(),
            "confidence": fields.loc[ok, "confidence_score"].astype(float).to_numpy(),
            "n_pixels": fields.loc[ok, "n_pixels"].astype("int64").to_numpy(),
        }
    )
    return out


def evaluation_set(
    fields_a: pd.DataFrame,
    fields_b: pd.DataFrame,
    evaluation_ids: pd.Series | None,
    *,
    name_a: str = "A",
    name_b: str = "B",
    order: tuple[str, ...] = U0C.names,
) -> EvaluationSet:
    """The fields to compare on: A's held-back evaluation fields when it has any, else the fields both runs scored
    (paired by field_id), else each run's own scored fields (unpaired).

    NotComparable when A's evaluation fields are missing from B, or a shared field has another GT crop in B.
    """
    a_all, b_all = scored_fields(fields_a), scored_fields(fields_b)
    dropped: dict[str, int] = {}
    if evaluation_ids is not None and len(evaluation_ids):
        wanted = pd.Index(evaluation_ids.astype(str).unique())
        missing = wanted.difference(pd.Index(fields_b["field_id"].astype(str)))
        if len(missing):
            raise NotComparable(
                f"{len(missing):,} of the {len(wanted):,} evaluation fields of run {name_a} are not in run {name_b}'s"
                f" fields.parquet (e.g. {', '.join(missing[:3])})",
                path=name_b,
                fix=f"run the next model on the same ground-truth fields as run {name_a}",
            )
        source = "evaluation_fields"
        ids = wanted
    else:
        source = "common_fields"
        ids = pd.Index(a_all["field_id"]).intersection(pd.Index(b_all["field_id"]))
        if not len(ids):
            source = "all_fields"
    if source == "all_fields":
        description = (
            f"Run {name_a} holds back no evaluation fields and the runs share no field_id: each run is scored on its"
            f" own {len(a_all):,} / {len(b_all):,} scored fields, unpaired (a comparison of two field sets as much"
            " as of two models)."
        )
        return EvaluationSet(a_all, b_all, paired=False, source=source, description=description, dropped=dropped,
                             order=tuple(order))
    ids = pd.Index(ids, name="field_id")
    a = a_all.set_index("field_id").reindex(ids)
    b = b_all.set_index("field_id").reindex(ids)
    unscored = a["crop"].isna() | b["crop"].isna()
    if unscored.any():
        dropped["not scored in both runs"] = int(unscored.sum())
    a, b = a.loc[~unscored], b.loc[~unscored]
    other_truth = a["crop"] != b["crop"]
    if other_truth.any():
        example = other_truth[other_truth].index[0]
        raise NotComparable(
            f"{int(other_truth.sum()):,} shared fields have another ground-truth crop in run {name_b} (e.g. {example}:"
            f" {a.at[example, 'crop']} in {name_a}, {b.at[example, 'crop']} in {name_b})",
            path=name_b,
            fix="compare runs made with the same ground-truth labels",
        )
    if source == "evaluation_fields":
        description = (
            f"Run {name_a}'s held-back evaluation fields (evaluation_fields.csv): {len(ids):,} listed,"
            f" {len(a):,} scored in both runs; paired by field_id."
        )
    else:
        description = (
            f"Run {name_a} holds back no evaluation fields: the {len(a):,} fields scored in both runs, paired by"
            " field_id. If the next model was trained on labels of these fields, its numbers are optimistic."
        )
    return EvaluationSet(
        a.reset_index(), b.reset_index(), paired=True, source=source, description=description, dropped=dropped,
        order=tuple(order),
    )




def crop_scores(table: pd.DataFrame, order: tuple[str, ...] = U0C.names) -> pd.DataFrame:
    """Per GT crop of `table` (crop, predicted, confidence): n, agreement, F1 over the table, mean confidence."""
    crops = ordered(set(table["crop"]), order)
    right = table["crop"] == table["predicted"]
    n = table.groupby("crop").size().reindex(crops)
    tp = right.groupby(table["crop"]).sum().reindex(crops)
    predicted = table["predicted"].value_counts().reindex(crops, fill_value=0)
    return pd.DataFrame(
        {
            "n": n.astype("int64"),
            "agreement": tp / n,
            "f1": 2 * tp / (n + predicted),
            "conf_mean": table.groupby("crop")["confidence"].mean().reindex(crops),
        }
    ).rename_axis("crop")


def _strata(table: pd.DataFrame, crops: list[str], codes: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per crop (in `crops` order): the codes of the crops predicted for its fields and their confidences."""
    pred = table["predicted"].map(codes).to_numpy(dtype="int64")
    conf = table["confidence"].to_numpy(dtype=float)
    by_crop = table.groupby("crop").indices
    return [(pred[by_crop[c]], conf[by_crop[c]]) for c in crops]


def _resampled(
    strata: list[tuple[np.ndarray, np.ndarray]], draws: list[np.ndarray], crop_ids: np.ndarray, n_codes: int
) -> dict[str, np.ndarray]:
    """Agreement, F1 and mean confidence per crop (columns) for each resample (rows); crops are coded 0..n_codes-1."""
    n_boot = draws[0].shape[0]
    tp = np.zeros((n_boot, len(strata)))
    predicted = np.zeros((n_boot, n_codes))
    conf = np.full((n_boot, len(strata)), np.nan)
    offsets = np.arange(n_boot)[:, None] * n_codes
    for k, ((pred, confidence), idx) in enumerate(zip(strata, draws, strict=True)):
        p = pred[idx]
        tp[:, k] = (p == crop_ids[k]).sum(axis=1)
        predicted += np.bincount((p + offsets).ravel(), minlength=n_boot * n_codes).reshape(n_boot, -1)
        c = confidence[idx]
        finite = np.isfinite(c)
        with np.errstate(invalid="ignore", divide="ignore"):
            conf[:, k] = np.where(finite, c, 0.0).sum(axis=1) / finite.sum(axis=1)
    n = np.array([len(pred) for pred, _ in strata], dtype=float)
    return {
        "agreement": tp / n,
        "f1": 2 * tp / (n + predicted[:, crop_ids]),
        "conf_mean": conf,
    }


def bootstrap_deltas(
    set_: EvaluationSet, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = LEVEL, n_crops: int
) -> pd.DataFrame:
    """Bootstrap intervals of B - A per crop (rows) for each measure: `<measure>_delta_lo` / `_hi`.

    Fields are resampled with replacement within each GT crop (the same draws for A and B when paired). Each
    interval is the percentile interval at level 1 - (1 - level) / n_crops (Bonferroni over the crops compared).
    """
    crops = set_.crops()
    seen = set(crops) | set(set_.a["predicted"]) | set(set_.b["predicted"]) | set(set_.b["crop"])
    codes = {name: i for i, name in enumerate(ordered(seen, set_.order))}
    crop_ids = np.array([codes[c] for c in crops], dtype=np.int64)
    strata_a, strata_b = _strata(set_.a, crops, codes), _strata(set_.b, crops, codes)
    rng = np.random.default_rng(seed)
    fields = max(len(set_.a), 1)
    batch = max(1, MAX_DRAWS_PER_BATCH // fields)
    deltas: dict[str, list[np.ndarray]] = {m: [] for m in MEASURES}
    for start in range(0, n_boot, batch):
        size = min(batch, n_boot - start)
        draws_a = [rng.integers(0, len(pred), size=(size, len(pred))) for pred, _ in strata_a]
        draws_b = draws_a if set_.paired else [rng.integers(0, len(p), size=(size, len(p))) for p, _ in strata_b]
        scores_a = _resampled(strata_a, draws_a, crop_ids, len(codes))
        scores_b = _resampled(strata_b, draws_b, crop_ids, len(codes))
        for m in MEASURES:
            deltas[m].append(scores_b[m] - scores_a[m])
    tail = (1 - level) / max(n_crops, 1) / 2
    out = {}
    for m in MEASURES:
        values = np.concatenate(deltas[m])
        finite = np.isfinite(values).all(axis=0)
        lo = np.full(len(crops), np.nan)
        hi = np.full(len(crops), np.nan)
        if finite.any():
            lo[finite], hi[finite] = np.quantile(values[:, finite], [tail, 1 - tail], axis=0)
        out[f"{m}_delta_lo"], out[f"{m}_delta_hi"] = lo, hi
    return pd.DataFrame(out, index=pd.Index(crops, name="crop"))


def _verdict(n: int, lo: float, hi: float, min_fields: int) -> str:
    if n < min_fields:
        return "too_few_fields"
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "unchanged"


@dataclass(frozen=True)
class DesignSample:
    """The evaluation sample as the design-based estimator reads it: per field its GT crop, design weight and
    primary unit, and both models' class histograms (pixels per crop name)."""

    fields: pd.DataFrame  # field_id, crop, weight (1 / inclusion probability), psu (block, or the field itself)
    counts_a: pd.DataFrame  # index field_id (as `fields`), one column per crop name: A's pixels per class
    counts_b: pd.DataFrame  # B's (for unpaired runs: B's own fields, `fields_b`)
    fpc: float  # 1 - blocks drawn / blocks in the frame (1: no finite-population correction)
    probability: bool  # the weights are A's inclusion probabilities (else equal weights)
    fields_b: pd.DataFrame | None = None  # unpaired runs: B's own fields

    @property
    def paired(self) -> bool:
        return self.fields_b is None


def homogeneous_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Histograms of fields known only by their majority class: all their pixels in the predicted crop (what the
    comparison uses when a run's field_class_counts are not given)."""
    counts = pd.crosstab(table["field_id"], table["predicted"], values=table["n_pixels"], aggfunc="sum")
    return counts.fillna(0).reindex(table["field_id"]).fillna(0)


def design_sample(set_: EvaluationSet, evaluation: pd.DataFrame | None = None, *,
                  counts_a: pd.DataFrame | None = None, counts_b: pd.DataFrame | None = None) -> DesignSample:
    """The design of the comparison: A's probability sample when `evaluation` (A's evaluation_fields.csv) carries
    inclusion probabilities and the set is A's evaluation fields; else equal weights with every field its own
    primary unit (a simple random sample of the fields compared, as the report says). Histograms default to
    `homogeneous_counts`."""
    a = set_.a
    probability = (set_.source == "evaluation_fields" and evaluation is not None
                   and {"inclusion_probability", "block"} <= set(evaluation.columns))
    if probability and evaluation is not None:
        held = evaluation.drop_duplicates("field_id").set_index(evaluation["field_id"].drop_duplicates().astype(str))
        pi = held["inclusion_probability"].reindex(a["field_id"]).to_numpy(float)
        psu = held["block"].astype(str).reindex(a["field_id"]).to_numpy()
        fraction = float(held["block_fraction"].iloc[0]) if "block_fraction" in held and len(held) else 0.0
        fields = pd.DataFrame({"field_id": a["field_id"].to_numpy(), "crop": a["crop"].to_numpy(),
                               "weight": 1.0 / pi, "psu": psu})
        fpc = 1.0 - fraction
    else:
        fields = pd.DataFrame({"field_id": a["field_id"].to_numpy(), "crop": a["crop"].to_numpy(), "weight": 1.0,
                               "psu": a["field_id"].to_numpy()})
        fpc = 1.0
    fields_b = None
    if not set_.paired:
        b = set_.b
        fields_b = pd.DataFrame({"field_id": b["field_id"].to_numpy(), "crop": b["crop"].to_numpy(), "weight": 1.0,
                                 "psu": "b:" + b["field_id"].astype(str).to_numpy()})
    counts_a = homogeneous_counts(a) if counts_a is None else counts_a.reindex(a["field_id"]).fillna(0)
    b_ids = set_.b["field_id"]
    counts_b = homogeneous_counts(set_.b) if counts_b is None else counts_b.reindex(b_ids).fillna(0)
    return DesignSample(fields, counts_a, counts_b, fpc, probability, fields_b)


DESIGN_MEASURES: tuple[str, ...] = ("pa", "ua")


def design_comparison(ds: DesignSample, *, order: tuple[str, ...] = U0C.names, level: float = LEVEL,
                      n_crops: int = 1) -> tuple[pd.DataFrame, dict[str, float]]:
    """Design-based producer's and user's accuracy per crop (rows: every crop of either model or the GT, in
    `order`), for A, for B and B - A with intervals (level Bonferroni-widened over `n_crops`, Student's t), plus the
    overall accuracy of both and its delta (interval at `level`). Pixels are the units, fields their clusters,
    blocks the primary units (see the module docstring)."""
    import scipy.sparse as sp  # not at import: the CLI's client imports this module for its defaults only
    from scipy.special import stdtrit

    from cropmon.diagnosis.accuracy import Sample, prepare, variances

    names = ordered(set(ds.fields["crop"]) | set(ds.counts_a.columns) | set(ds.counts_b.columns)
                    | (set(ds.fields_b["crop"]) if ds.fields_b is not None else set()), order)
    k = len(names)
    code = {n: i for i, n in enumerate(names)}
    fields_b = ds.fields if ds.fields_b is None else ds.fields_b
    psu_ids, psu = np.unique(np.concatenate([ds.fields["psu"].astype(str), fields_b["psu"].astype(str)]),
                             return_inverse=True)
    psu_a, psu_b = psu[:len(ds.fields)], psu[len(ds.fields):]
    units = []
    for model, (fields, counts, psus) in enumerate(((ds.fields, ds.counts_a, psu_a), (fields_b, ds.counts_b, psu_b))):
        matrix = sp.coo_matrix(counts.reindex(columns=names, fill_value=0).to_numpy(dtype=float))
        ref = fields["crop"].map(code).to_numpy()
        units.append(pd.DataFrame({
            "cell": model * k * k + matrix.col * k + ref[matrix.row], "psu": psus[matrix.row],
            "pixels": matrix.data, "weight": fields["weight"].to_numpy(float)[matrix.row]}))
    u = pd.concat(units, ignore_index=True)
    n_psu = len(psu_ids)
    sample = Sample(cell=u["cell"].to_numpy(np.int64), stratum=np.zeros(len(u), np.int64),
                    psu=u["psu"].to_numpy(np.int64), pixels=u["pixels"].to_numpy(float),
                    weight=u["weight"].to_numpy(float), psu_stratum=np.zeros(n_psu, np.int64),
                    fpc=np.array([ds.fpc]), n_cells=2 * k * k, center=True)
    lin = prepare(sample, None)
    totals = lin.totals.reshape(2, k, k)
    columns, estimates = [], {}
    for model in (0, 1):
        t = totals[model]
        rows, cols, diag, whole = t.sum(axis=1), t.sum(axis=0), np.diag(t), t.sum()
        for j in range(k):
            estimates[("pa", model, j)] = _ratio_coefficients(model, k, [(j, j)], [(i, j) for i in range(k)],
                                                              diag[j], cols[j])
            estimates[("ua", model, j)] = _ratio_coefficients(model, k, [(j, j)], [(j, i) for i in range(k)],
                                                              diag[j], rows[j])
        estimates[("oa", model, 0)] = _ratio_coefficients(model, k, [(i, i) for i in range(k)],
                                                          [(i, j) for i in range(k) for j in range(k)],
                                                          diag.sum(), whole)
    keys: list[tuple[str, int | str, int]] = []
    for measure, count in (("pa", k), ("ua", k), ("oa", 1)):
        for j in range(count):
            for model in (0, 1):
                keys.append((measure, model, j))
                columns.append(estimates[(measure, model, j)][1])
            keys.append((measure, "delta", j))
            columns.append(estimates[(measure, 1, j)][1] - estimates[(measure, 0, j)][1])
    var = variances(lin, sp.csc_matrix(np.column_stack(columns)))
    se = dict(zip(keys, np.sqrt(var), strict=True))
    df = max(n_psu - 1, 1)
    t_crop = float(stdtrit(df, 1 - (1 - level) / max(n_crops, 1) / 2))
    t_overall = float(stdtrit(df, 1 - (1 - level) / 2))
    table = pd.DataFrame(index=pd.Index(names, name="crop"))
    for measure in DESIGN_MEASURES:
        a = np.array([estimates[(measure, 0, j)][0] for j in range(k)])
        b = np.array([estimates[(measure, 1, j)][0] for j in range(k)])
        delta_se = np.array([se[(measure, "delta", j)] for j in range(k)])
        table[f"{measure}_a"], table[f"{measure}_b"] = a, b
        table[f"{measure}_a_se"] = [se[(measure, 0, j)] for j in range(k)]
        table[f"{measure}_b_se"] = [se[(measure, 1, j)] for j in range(k)]
        table[f"{measure}_delta"] = b - a
        table[f"{measure}_delta_lo"] = b - a - t_crop * delta_se
        table[f"{measure}_delta_hi"] = b - a + t_crop * delta_se
    reference = totals[0].sum(axis=0)
    table["reference_share"] = reference / reference.sum() if reference.sum() > 0 else np.nan
    table["mapped_share_a"] = totals[0].sum(axis=1) / max(totals[0].sum(), 1e-300)
    table["mapped_share_b"] = totals[1].sum(axis=1) / max(totals[1].sum(), 1e-300)
    oa_a, oa_b = estimates[("oa", 0, 0)][0], estimates[("oa", 1, 0)][0]
    delta_se = se[("oa", "delta", 0)]
    overall = {"oa_a": oa_a, "oa_a_se": se[("oa", 0, 0)], "oa_b": oa_b, "oa_b_se": se[("oa", 1, 0)],
               "oa_delta": oa_b - oa_a, "oa_delta_lo": oa_b - oa_a - t_overall * delta_se,
               "oa_delta_hi": oa_b - oa_a + t_overall * delta_se, "primary_units": n_psu, "df": df,
               "fields": len(ds.fields), "probability_sample": ds.probability, "fpc": ds.fpc}
    return table, overall


def _ratio_coefficients(model: int, k: int, num: list[tuple[int, int]], den: list[tuple[int, int]], n: float,
                        d: float) -> tuple[float, np.ndarray]:
    """(N / D, the coefficients on the 2 k^2 cell totals of its linearised value (e_N - R e_D) / D)."""
    coef = np.zeros(2 * k * k)
    if d <= 0:
        return float("nan"), coef
    r = n / d
    for i, j in num:
        coef[model * k * k + i * k + j] += 1 / d
    for i, j in den:
        coef[model * k * k + i * k + j] -= r / d
    return r, coef


def compare_tables(
    set_: EvaluationSet,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
    min_fields: int = MIN_FIELDS,
    design: DesignSample | None = None,
) -> pd.DataFrame:
    """The per-crop comparison: the design-based producer's and user's accuracy of A and B with paired deltas and
    intervals, the verdict (on producer's accuracy), and beside them the field-level scores with their bootstrap
    intervals. `design`: the sample's weights and both models' histograms (`design_sample`; default: equal
    weights, homogeneous fields).

    One row per GT crop of the set; better first (largest gain first), then worse, unchanged, too_few_fields.
    """
    design = design if design is not None else design_sample(set_)
    a, b = crop_scores(set_.a, set_.order), crop_scores(set_.b, set_.order)
    crops = [c for c in a.index if c in b.index]
    a, b = a.loc[crops], b.loc[crops]
    n_compared = int((np.minimum(a["n"], b["n"]) >= min_fields).sum())
    if not set_.paired:  # strata need fields on both sides
        keep = set_.a["crop"].isin(crops), set_.b["crop"].isin(crops)
        set_ = EvaluationSet(set_.a.loc[keep[0]], set_.b.loc[keep[1]], False, set_.source, set_.description, {},
                             set_.order)
    intervals = bootstrap_deltas(set_, n_boot=n_boot, seed=seed, level=level, n_crops=n_compared)
    estimates, _ = design_comparison(design, order=set_.order, level=level, n_crops=n_compared)
    table = pd.DataFrame({"n_a": a["n"], "n_b": b["n"]})
    for m in MEASURES:
        table[f"{m}_a"], table[f"{m}_b"] = a[m], b[m]
        table[f"{m}_delta"] = b[m] - a[m]
        table[f"{m}_delta_lo"] = intervals[f"{m}_delta_lo"]
        table[f"{m}_delta_hi"] = intervals[f"{m}_delta_hi"]
    table = table.join(estimates)
    table.insert(
        0,
        "verdict",
        [
            _verdict(min(na, nb), lo, hi, min_fields)
            for na, nb, lo, hi in zip(
                table["n_a"], table["n_b"], table["pa_delta_lo"], table["pa_delta_hi"], strict=True
            )
        ],
    )
    table["interval_level"] = 1 - (1 - level) / max(n_compared, 1)
    table = table.reset_index()
    order = table["verdict"].map(VERDICTS.index)
    gain = np.where(table["verdict"] == "worse", table["pa_delta"], -table["pa_delta"])
    return table.assign(_o=order, _g=gain).sort_values(["_o", "_g", "crop"]).drop(columns=["_o", "_g"])


def overall_comparison(set_: EvaluationSet, design: DesignSample | None = None, *,
                       level: float = LEVEL) -> dict[str, float]:
    """The design-based overall accuracy of A and B and its paired delta with its interval (`design_comparison`)."""
    _, overall = design_comparison(design if design is not None else design_sample(set_), order=set_.order,
                                   level=level)
    return overall
