"""Map accuracy and class areas with their uncertainty, as remote sensing reports them (Olofsson et al. 2014, Remote
Sensing of Environment 148:42-57; Stehman 2014, International Journal of Remote Sensing 35:4923-4939).

What is estimated. The population is the map's valid pixels (inside the AOI mask, when one is given), stratified by
map class: stratum h holds the N_h pixels (their area) that the map labels h, known exactly from the engine's
census (engine/mapped.py). A pixel's reference class is the ground-truth label of the field it lies in. For the
K x K cells (map k, reference j) the estimator gives the area T_kj, hence the error matrix of area proportions
p_kj = T_kj / N, the error-adjusted area of every class (the column totals T_.j, against the mapped area T_k.),
user's accuracy T_kk / T_k., producer's accuracy T_jj / T_.j and overall accuracy sum_k T_kk / N. Kappa is not
reported (Pontius & Millones 2011: it adds nothing the matrix does not say, and misleads).

The estimator. Fields are clusters of pixels, not independent samples: the pixels of one field share its label and
mostly its map class. The sampled units are the parts of fields that fall in one stratum (a field whose pixels
carry two map classes is two units, one per stratum); within stratum h the share of pixels with reference j is the
ratio estimator q_hj = sum_i y_hij / sum_i m_hi over its units (m = pixels, y = pixels with reference j), and
T_kj = sum_h N_h q_h(kj) (Stehman 2014's stratified estimator, with clusters as its units: strata need not be the
map classes, which `compare` uses to score a second model on the first one's strata). Standard errors come from
Taylor linearisation of these ratios (and of UA, PA, OA as ratios of such totals), with the *field* as the primary
unit: each field's linearised values are summed over its units (z_f), and
v = sum_g n_g / (n_g - 1) sum_(f in g) z_f^2 over the fields grouped by their majority class g. The ratio estimator
already centres the values within each map-class stratum; centring them again on their group would drop the
covariance of a field's parts in two strata, which is real variance when fields are not drawn by majority class
(tested by simulation). For a probability sample of whole fields drawn by stratum (`compare`), the values are
centred on their design stratum and a finite-population factor applies. Why linearisation and not a bootstrap
over fields: it is exact where the answer is known (every field one pixel: Olofsson's formulas, to the last digit;
tested), it costs a few sparse products instead of thousands of resamples of 150k fields (0.3-0.6 s on the full
twin), and it adds over AOIs. A large homogeneous field counts as one unit, so the interval is as wide as that of
one pixel per field, not sqrt(pixels) narrower (tested). A group with one primary unit gives no variance
estimate: it contributes none (its classes are flagged `one_field`), as R's survey package does with lonely PSUs
removed.

The assumption (`DESIGN_ASSUMPTION`, worded by report/accuracy.py). The ground-truth fields are not a probability
sample of the AOI: the estimates hold if, within each map class, the pixels of the GT fields are like the class's
other pixels (the GT is representative of its map class). It fails when fields are collected along roads, when the
labelling team skips crops, and for the map's pixels outside any field (roads, woods, villages: the map gives them
a crop too, and no GT field says what they are) unless an AOI mask restricts the population to cropland. A map
class with mapped pixels but no sampled pixel cannot be assessed: its pixels are left out of the population and
listed (`not_assessed`). No finite-population correction is applied to the GT: it is no sample drawn from the
stratum, so the share of a stratum it covers is no sampling fraction (leaving it out is conservative).

Pure numpy / scipy.sparse / pandas: no I/O, no figures (report/accuracy.py words and draws the results).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import ndtri

from cropmon.catalogue import U0C, Catalogue

LEVEL = 0.95
OVERALL = "overall"  # the crop of the overall row of accuracy_assessment.csv
ASSESSMENT_COLUMNS: tuple[str, ...] = (
    "crop", "class_id", "mapped_ha", "adjusted_ha", "adjusted_ha_se", "adjusted_ha_ci_low", "adjusted_ha_ci_high",
    "users_accuracy", "users_accuracy_se", "users_accuracy_ci_low", "users_accuracy_ci_high",
    "producers_accuracy", "producers_accuracy_se", "producers_accuracy_ci_low", "producers_accuracy_ci_high",
    "n_fields", "n_pixels", "n_reference_fields", "note",
)  # fmt: skip
DESIGN_ASSUMPTION = "representative_of_map_class"


# --- the estimator core: units, totals, linearised variances ----------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The sampled units of one assessment, one entry per unit (a field's pixels in one stratum, or one pixel).

    `cell` = map class x n_classes + reference class (several maps: + map_index x n_classes^2, see `compare`);
    `stratum` indexes the stratum sizes; `psu` is the unit's primary sampling unit (its field, or its block),
    `psu_stratum[psu]` the stratum that primary unit was drawn from (its variance stratum), `fpc[g]` the
    finite-population factor of variance stratum g (1 - sampling fraction; 1 when there is none).
    """

    cell: np.ndarray  # int64
    stratum: np.ndarray  # int64
    psu: np.ndarray  # int64, 0..n_psu-1
    pixels: np.ndarray  # float64, m_i
    weight: np.ndarray  # float64, the unit's design weight (1 / inclusion probability; 1 for the GT)
    psu_stratum: np.ndarray  # int64 per psu
    fpc: np.ndarray  # float64 per variance stratum
    n_cells: int
    center: bool = True  # centre the primary units' linearised values on their variance stratum's mean (see below)

    @property
    def n_psu(self) -> int:
        return len(self.psu_stratum)


@dataclass(frozen=True)
class Linearised:
    """What the variances of any linear combination of cell totals need (see `prepare`)."""

    totals: np.ndarray  # (n_cells,) estimated totals T_c
    S_cells: sp.csr_matrix  # (psu x n_cells): sum over the psu's units of a_i [cell_i = c]
    A: sp.csr_matrix  # (psu x strata): sum over the psu's units of a_i in stratum s
    means: np.ndarray  # (strata x n_cells): the within-stratum ratios q_sc subtracted in the linearisation
    groups: sp.csr_matrix  # (variance strata x psu) indicator
    psu_group: np.ndarray  # variance stratum of each psu
    factor: np.ndarray  # per variance stratum: fpc x n / (n - 1), 0 for a stratum with one psu
    center: bool


def prepare(sample: Sample, stratum_sizes: np.ndarray | None) -> Linearised:
    """Totals of every cell and the pieces of their linearisation.

    With `stratum_sizes` (N_s, known): the separate ratio estimator T_c = sum_s N_s (sum_(i in s, cell c) w m) /
    (sum_(i in s) w m), linearised per unit as a_i (1[cell_i = c] - q_sc), a_i = N_s w_i m_i / M_s. Without: the
    Horvitz-Thompson estimator T_c = sum_i w_i m_i [cell_i = c] (a_i = w_i m_i, nothing subtracted).
    """
    wm = sample.weight * sample.pixels
    n_units = len(sample.cell)
    if stratum_sizes is None:
        n_strata = int(sample.stratum.max()) + 1 if n_units else 1
        a = wm
        means = np.zeros((n_strata, sample.n_cells))
    else:
        sizes = np.asarray(stratum_sizes, dtype=np.float64)
        n_strata = len(sizes)
        sampled = np.bincount(sample.stratum, weights=wm, minlength=n_strata)
        per = np.divide(sizes, sampled, out=np.zeros(n_strata), where=sampled > 0)
        a = per[sample.stratum] * wm
        share = np.divide(1.0, sampled, out=np.zeros(n_strata), where=sampled > 0)
        means = sp.csr_matrix((share[sample.stratum] * wm, (sample.stratum, sample.cell)),
                              shape=(n_strata, sample.n_cells)).toarray()
    n_psu = sample.n_psu
    S_cells = sp.csr_matrix((a, (sample.psu, sample.cell)), shape=(n_psu, sample.n_cells))
    A = sp.csr_matrix((a, (sample.psu, sample.stratum)), shape=(n_psu, n_strata))
    n_groups = int(sample.psu_stratum.max()) + 1 if n_psu else 1
    groups = sp.csr_matrix((np.ones(n_psu), (sample.psu_stratum, np.arange(n_psu))), shape=(n_groups, n_psu))
    n_g = np.bincount(sample.psu_stratum, minlength=n_groups).astype(np.float64)
    fpc = np.ones(n_groups) if sample.fpc is None else np.asarray(sample.fpc, dtype=np.float64)[:n_groups]
    factor = np.divide(fpc * n_g, n_g - 1, out=np.zeros(n_groups), where=n_g > 1)
    totals = np.bincount(sample.cell, weights=a, minlength=sample.n_cells)
    return Linearised(totals, S_cells, A, means, groups, sample.psu_stratum, factor, sample.center)


def variances(lin: Linearised, coefficients: sp.spmatrix) -> np.ndarray:
    """The linearised variance of each linear combination sum_c C[c, v] T_c (the columns of `coefficients`,
    n_cells x V), from per-stratum sums of z and z^2 of the primary units, z = S C - A Q C (never one dense
    psu x V array: the squares expand into sparse products and small stratum-by-stratum Gram matrices)."""
    C = sp.csc_matrix(coefficients)
    S = (lin.S_cells @ C).tocsr()  # psu x V
    Q = np.asarray(C.T @ lin.means.T).T  # strata x V: the combination's within-stratum ratios
    n_groups, n_strata = lin.groups.shape[0], lin.A.shape[1]
    G = lin.groups
    sum_S = np.asarray((G @ S).todense())
    sum_S2 = np.asarray((G @ S.multiply(S)).todense())
    sum_A = np.asarray((G @ lin.A).todense())
    sum_z = sum_S - sum_A @ Q
    # A_big: A with its columns moved to the psu's variance stratum block (g x strata + s)
    A = lin.A.tocoo()
    big = sp.csr_matrix((A.data, (A.row, lin.psu_group[A.row] * n_strata + A.col)),
                        shape=(A.shape[0], n_groups * n_strata))
    AS = np.asarray((big.T @ S).todense()).reshape(n_groups, n_strata, -1)  # g, s, v
    gram = np.asarray((big.T @ lin.A).todense()).reshape(n_groups, n_strata, n_strata)  # g, s, t
    cross = np.einsum("gsv,sv->gv", AS, Q)
    quad = np.einsum("gsv,sv->gv", gram @ Q, Q)
    sum_z2 = sum_S2 - 2 * cross + quad
    if not lin.center:
        return np.maximum(lin.factor @ np.maximum(sum_z2, 0.0), 0.0)
    n_g = np.asarray(G.sum(axis=1)).ravel()
    within = sum_z2 - np.divide(sum_z**2, n_g[:, None], out=np.zeros_like(sum_z2), where=n_g[:, None] > 0)
    return np.maximum(lin.factor @ np.maximum(within, 0.0), 0.0)


# --- error-matrix estimates from the totals (one AOI, or several added) --------------------------------------


def _moment_coefficients(k: int) -> sp.csc_matrix:
    """The linear combinations of the k x k cell totals whose variances `ErrorMatrix` keeps: every cell, each row,
    each column, each diagonal cell plus its row, plus its column, each column plus the whole, the whole, the
    diagonal, the diagonal plus the whole (enough for UA, PA, OA and area proportions as ratios, and additive over
    independent AOIs)."""
    cells = np.arange(k * k)
    row_of, col_of = cells // k, cells % k
    diag = np.flatnonzero(row_of == col_of)
    blocks = [sp.identity(k * k, format="csc")]
    blocks.append(sp.csc_matrix((np.ones(k * k), (cells, row_of)), shape=(k * k, k)))  # rows
    blocks.append(sp.csc_matrix((np.ones(k * k), (cells, col_of)), shape=(k * k, k)))  # columns
    d = sp.csc_matrix((np.ones(k), (diag, np.arange(k))), shape=(k * k, k))
    blocks += [d + blocks[1], d + blocks[2]]
    whole = sp.csc_matrix(np.ones((k * k, 1)))
    blocks.append(blocks[2] + sp.csc_matrix(np.ones((k * k, k))))  # column + whole
    diag_sum = sp.csc_matrix((np.ones(k), (diag, np.zeros(k, int))), shape=(k * k, 1))
    blocks += [whole, diag_sum, diag_sum + whole]
    return sp.hstack(blocks, format="csc")


@dataclass(frozen=True)
class ErrorMatrix:
    """The estimated cell totals (map rows x reference columns, in area units) and the variances of the linear
    combinations `_moment_coefficients` lists; additive over independent AOIs (`+`)."""

    totals: np.ndarray  # (k, k)
    var_cells: np.ndarray  # (k, k)
    var_rows: np.ndarray
    var_cols: np.ndarray
    var_diag_row: np.ndarray
    var_diag_col: np.ndarray
    var_col_whole: np.ndarray
    var_whole: float
    var_diag: float
    var_diag_whole: float

    @classmethod
    def of(cls, lin: Linearised, k: int, map_index: int = 0) -> ErrorMatrix:
        """The k x k matrix of map `map_index` (cells map_index x k^2 ...) of a prepared sample."""
        offset = map_index * k * k
        C = _moment_coefficients(k)
        full = sp.vstack([sp.csc_matrix((offset, C.shape[1])), C,
                          sp.csc_matrix((lin.totals.size - offset - k * k, C.shape[1]))], format="csc")
        v = variances(lin, full)
        parts = np.split(v, np.cumsum([k * k, k, k, k, k, k, 1, 1]))
        return cls(lin.totals[offset:offset + k * k].reshape(k, k), parts[0].reshape(k, k), parts[1], parts[2],
                   parts[3], parts[4], parts[5], float(parts[6][0]), float(parts[7][0]), float(parts[8][0]))

    def __add__(self, other: ErrorMatrix) -> ErrorMatrix:
        return ErrorMatrix(*(a + b for a, b in zip(self._fields(), other._fields(), strict=True)))

    def _fields(self) -> tuple:
        return (self.totals, self.var_cells, self.var_rows, self.var_cols, self.var_diag_row, self.var_diag_col,
                self.var_col_whole, self.var_whole, self.var_diag, self.var_diag_whole)

    def estimates(self) -> Estimates:
        """UA, PA, OA, areas and area proportions with their standard errors (ratios linearised)."""
        t = self.totals
        whole = t.sum()
        rows, cols, diag = t.sum(axis=1), t.sum(axis=0), np.diag(t)

        def ratio(num, den, v_num, v_den, v_sum):
            r = np.divide(num, den, out=np.full(np.shape(num), np.nan), where=np.asarray(den) > 0)
            cov = (v_sum - v_num - v_den) / 2
            var = (v_num - 2 * r * cov + r * r * v_den) / np.where(np.asarray(den) > 0, den, np.nan) ** 2
            return r, np.sqrt(np.maximum(var, 0.0))

        ua, ua_se = ratio(diag, rows, np.diag(self.var_cells), self.var_rows, self.var_diag_row)
        pa, pa_se = ratio(diag, cols, np.diag(self.var_cells), self.var_cols, self.var_diag_col)
        oa, oa_se = ratio(np.array(diag.sum()), np.array(whole), self.var_diag, self.var_whole, self.var_diag_whole)
        share, share_se = ratio(cols, np.full(len(cols), whole), self.var_cols, np.full(len(cols), self.var_whole),
                                self.var_col_whole)
        matrix = t / whole if whole > 0 else np.full_like(t, np.nan)
        matrix_se = np.sqrt(self.var_cells) / whole if whole > 0 else np.full_like(t, np.nan)
        return Estimates(matrix=matrix, matrix_se=matrix_se, area=cols, area_se=np.sqrt(self.var_cols),
                         mapped=rows, share=share, share_se=share_se, ua=ua, ua_se=ua_se, pa=pa, pa_se=pa_se,
                         oa=float(oa), oa_se=float(oa_se), total=float(whole))


@dataclass(frozen=True)
class Estimates:
    """Point estimates and standard errors, per class in catalogue order (areas in the totals' units)."""

    matrix: np.ndarray  # area proportions, map rows x reference columns
    matrix_se: np.ndarray
    area: np.ndarray  # error-adjusted area (reference column totals)
    area_se: np.ndarray
    mapped: np.ndarray  # the map's own area of each class (row totals) in the assessed population
    share: np.ndarray  # area proportions p_.j
    share_se: np.ndarray
    ua: np.ndarray
    ua_se: np.ndarray
    pa: np.ndarray
    pa_se: np.ndarray
    oa: float
    oa_se: float
    total: float


def z_value(level: float = LEVEL) -> float:
    return float(ndtri(0.5 + level / 2))


# --- the assessment of one run: ground-truth fields as clusters, strata = map classes --------------------------


@dataclass(frozen=True)
class AccuracyAssessment:
    """One AOI's (or a pooled run's) accuracy and area estimates, what they rest on, and what was left out."""

    table: pd.DataFrame  # ASSESSMENT_COLUMNS: one row per class seen (mapped or in the sample), then OVERALL
    error_matrix: pd.DataFrame  # area proportions, map rows x reference columns (catalogue names)
    error_matrix_se: pd.DataFrame
    matrix: ErrorMatrix  # the additive totals behind them (in m2), for pooling
    design: dict  # facts of the design: sample, population, exclusions, strata without a sample ...
    level: float = LEVEL

    @property
    def overall(self) -> pd.Series:
        return self.table.set_index("crop").loc[OVERALL]


def sample_fields(fields: pd.DataFrame, in_population: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Which rows of the per-field table enter the sample, and how many are left out by each rule (checked in
    order): a known GT class, pixel centres, none of them all-touched or shared with another field, inside the
    mask."""
    left = np.ones(len(fields), dtype=bool)
    dropped: dict[str, int] = {}
    rules = {
        "unknown_label": fields["gt_class"].notna().to_numpy(),
        "no_pixel": (fields["n_pixels"] > 0).to_numpy(),
        "all_touched": (fields["pixel_rule"] == "centre").to_numpy(),
        "shared_pixels": (fields["n_pixels_shared"] == 0).to_numpy() if "n_pixels_shared" in fields
        else np.ones(len(fields), bool),
        "outside_mask": np.ones(len(fields), bool) if in_population is None else np.asarray(in_population, bool),
    }
    for name, keep in rules.items():
        dropped[name] = int((left & ~keep).sum())
        left &= keep
    return left, dropped


def assess(fields: pd.DataFrame, class_counts: pd.DataFrame, mapped_area: pd.DataFrame, *,
           catalogue: Catalogue = U0C, in_population: np.ndarray | None = None,
           level: float = LEVEL) -> AccuracyAssessment:
    """The accuracy assessment of one run from its per-field table, its class histograms (fields x crops, sparse
    or dense) and the map's census (`FieldResults.mapped_area`: area_ha per class, catalogue order).

    Strata are the map classes, sized by their mapped area; every sampled field's pixels of map class h are one
    unit of stratum h with the field's GT class as reference; each field is one primary unit, its variance stratum
    its majority class. See the module docstring for the estimator and the assumption.
    """
    k = catalogue.n
    names = list(catalogue.names)
    keep, dropped = sample_fields(fields, in_population)
    rows = np.flatnonzero(keep)
    counts = class_counts.reindex(columns=names, fill_value=0)
    matrix = (counts.sparse.to_coo().tocsr() if _is_sparse(counts)
              else sp.csr_matrix(counts.to_numpy(dtype=np.int64)))[rows].tocoo()
    ref = catalogue.positions(fields["gt_class"].to_numpy(dtype=float, na_value=np.nan)[rows].astype(np.int64))
    majority = catalogue.positions(fields["majority_crop"].to_numpy(dtype=float)[rows].astype(np.int64))
    mapped_m2 = mapped_area.set_index("crop")["area_ha"].reindex(names, fill_value=0.0).to_numpy(float) * 1e4
    sampled_pixels = np.bincount(matrix.col, weights=matrix.data, minlength=k)
    assessed = (mapped_m2 > 0) & (sampled_pixels > 0)
    sizes = np.where(assessed, mapped_m2, 0.0)
    in_stratum = assessed[matrix.col]  # a unit in a stratum without mapped area (outside the mask) is no unit
    unit_field, unit_class, unit_pixels = matrix.row[in_stratum], matrix.col[in_stratum], matrix.data[in_stratum]
    fields_used, psu = np.unique(unit_field, return_inverse=True)
    sample = Sample(cell=unit_class * k + ref[unit_field], stratum=unit_class.astype(np.int64),
                    psu=psu.astype(np.int64), pixels=unit_pixels.astype(np.float64),
                    weight=np.ones(len(unit_field)), psu_stratum=majority[fields_used].astype(np.int64),
                    fpc=np.ones(k), n_cells=k * k, center=False)
    lin = prepare(sample, sizes)
    em = ErrorMatrix.of(lin, k)
    est = em.estimates()
    n_fields = np.bincount(unit_class, minlength=k)
    n_pixels = np.bincount(unit_class, weights=unit_pixels, minlength=k).astype(np.int64)
    n_reference = np.bincount(ref[fields_used], minlength=k)
    lonely = np.bincount(majority[fields_used], minlength=k) == 1
    per_class = ClassSample(mapped_m2=mapped_m2, assessed=assessed, n_fields=n_fields, n_pixels=n_pixels,
                            n_reference=n_reference, lonely=lonely)
    table = _assessment_table(est, catalogue, per_class, level=level)
    design = {
        "assumption": DESIGN_ASSUMPTION,
        "population": "valid map pixels" + (" inside the AOI mask" if in_population is not None else ""),
        "strata": "map classes",
        "primary_units": "ground-truth fields",
        "estimator": "stratified ratio estimator (Stehman 2014), Taylor-linearised, fields as primary units",
        "finite_population_correction": False,
        "n_fields": len(fields_used),
        "n_pixels": int(unit_pixels.sum()),
        "fields_left_out": dropped,
        "mapped_ha": round(float(mapped_m2.sum()) / 1e4, 2),
        "assessed_ha": round(float(sizes.sum()) / 1e4, 2),
        "not_assessed": {names[i]: round(float(mapped_m2[i]) / 1e4, 2) for i in np.flatnonzero(
            (mapped_m2 > 0) & ~assessed)},
        "one_field_strata": [names[i] for i in np.flatnonzero(lonely)],
        "level": level,
    }
    return AccuracyAssessment(table=table, error_matrix=_square(est.matrix, names),
                              error_matrix_se=_square(est.matrix_se, names), matrix=em, design=design, level=level)


def pooled(parts: Sequence[AccuracyAssessment], catalogue: Catalogue = U0C, *,
           level: float = LEVEL) -> AccuracyAssessment:
    """The assessment of several AOIs together: the AOIs are independent samples of their own populations, so their
    totals and variances add (strata = AOI x map class); ratios are re-derived from the sums."""
    em = parts[0].matrix
    for part in parts[1:]:
        em = em + part.matrix
    est = em.estimates()
    names = list(catalogue.names)
    tables = [p.table.set_index("crop") for p in parts]

    def summed(column: str) -> np.ndarray:
        return np.sum([t[column].reindex(names, fill_value=0).to_numpy(float) for t in tables], axis=0)

    mapped_m2 = summed("mapped_ha") * 1e4
    assessed = est.mapped > 0
    lonely = np.zeros(len(names), bool)
    per_class = ClassSample(mapped_m2=mapped_m2, assessed=assessed, n_fields=summed("n_fields").astype(np.int64),
                            n_pixels=summed("n_pixels").astype(np.int64),
                            n_reference=summed("n_reference_fields").astype(np.int64), lonely=lonely)
    table = _assessment_table(est, catalogue, per_class, level=level)
    design = {key: parts[0].design[key] for key in ("assumption", "population", "strata", "primary_units",
                                                    "estimator", "finite_population_correction")}
    design.update({
        "strata": "AOI x map class",
        "n_fields": int(sum(p.design["n_fields"] for p in parts)),
        "n_pixels": int(sum(p.design["n_pixels"] for p in parts)),
        "mapped_ha": round(float(sum(p.design["mapped_ha"] for p in parts)), 2),
        "assessed_ha": round(float(sum(p.design["assessed_ha"] for p in parts)), 2),
        "level": level,
    })
    return AccuracyAssessment(table=table, error_matrix=_square(est.matrix, names),
                              error_matrix_se=_square(est.matrix_se, names), matrix=em, design=design, level=level)


@dataclass(frozen=True)
class ClassSample:
    """Per class of the catalogue (catalogue order): the map's area and what the sample holds of the class."""

    mapped_m2: np.ndarray
    assessed: np.ndarray  # mapped and sampled: in the assessed population
    n_fields: np.ndarray  # sampled fields, by map class
    n_pixels: np.ndarray  # sampled pixels, by map class
    n_reference: np.ndarray  # sampled fields whose label is the class
    lonely: np.ndarray  # strata of one field (their variance cannot be estimated)


def _assessment_table(est: Estimates, catalogue: Catalogue, per_class: ClassSample, *, level: float) -> pd.DataFrame:
    """accuracy_assessment.csv: per class seen (mapped, or in the sample), areas in ha, then the overall row."""
    mapped_m2, assessed, lonely = per_class.mapped_m2, per_class.assessed, per_class.lonely
    n_fields, n_pixels, n_reference = per_class.n_fields, per_class.n_pixels, per_class.n_reference
    z = z_value(level)
    to_ha = 1e-4
    area, area_se = est.area * to_ha, est.area_se * to_ha
    notes = np.full(len(catalogue.names), "", dtype=object)
    notes[(mapped_m2 > 0) & ~assessed] = "not_assessed"  # mapped, but no sampled pixel: left out of the population
    notes[assessed & lonely] = "one_field"
    notes[(mapped_m2 == 0) & (est.area > 0)] = "never_mapped"  # in the GT, no mapped pixel: UA undefined
    table = pd.DataFrame({
        "crop": list(catalogue.names),
        "class_id": np.asarray(catalogue.ids, dtype=np.int64),
        "mapped_ha": mapped_m2 * to_ha,
        "adjusted_ha": np.where(assessed | (est.area > 0), area, np.nan),
        "adjusted_ha_se": np.where(assessed | (est.area > 0), area_se, np.nan),
        "users_accuracy": est.ua, "users_accuracy_se": np.where(np.isfinite(est.ua), est.ua_se, np.nan),
        "producers_accuracy": est.pa, "producers_accuracy_se": np.where(np.isfinite(est.pa), est.pa_se, np.nan),
        "n_fields": n_fields.astype(np.int64),
        "n_pixels": n_pixels.astype(np.int64),
        "n_reference_fields": n_reference.astype(np.int64),
        "note": notes,
    })
    table["adjusted_ha_ci_low"] = np.maximum(table["adjusted_ha"] - z * table["adjusted_ha_se"], 0.0)
    table["adjusted_ha_ci_high"] = table["adjusted_ha"] + z * table["adjusted_ha_se"]
    for name in ("users_accuracy", "producers_accuracy"):
        table[f"{name}_ci_low"] = np.clip(table[name] - z * table[f"{name}_se"], 0.0, 1.0)
        table[f"{name}_ci_high"] = np.clip(table[name] + z * table[f"{name}_se"], 0.0, 1.0)
    seen = (mapped_m2 > 0) | (n_fields > 0) | (n_reference > 0)
    table = table.loc[seen]
    overall = {
        "crop": OVERALL, "class_id": pd.NA, "mapped_ha": float(mapped_m2.sum()) * to_ha,
        "adjusted_ha": est.total * to_ha, "adjusted_ha_se": 0.0,
        "adjusted_ha_ci_low": est.total * to_ha, "adjusted_ha_ci_high": est.total * to_ha,
        "users_accuracy": est.oa, "users_accuracy_se": est.oa_se,
        "users_accuracy_ci_low": float(np.clip(est.oa - z * est.oa_se, 0, 1)),
        "users_accuracy_ci_high": float(np.clip(est.oa + z * est.oa_se, 0, 1)),
        "producers_accuracy": est.oa, "producers_accuracy_se": est.oa_se,
        "producers_accuracy_ci_low": float(np.clip(est.oa - z * est.oa_se, 0, 1)),
        "producers_accuracy_ci_high": float(np.clip(est.oa + z * est.oa_se, 0, 1)),
        "n_fields": int(n_fields.sum()), "n_pixels": int(n_pixels.sum()),
        "n_reference_fields": int(n_reference.sum()),
        "note": "overall accuracy (in both accuracy columns); adjusted_ha: the assessed population",
    }
    out = pd.concat([table, pd.DataFrame([overall])], ignore_index=True)
    out["class_id"] = out["class_id"].astype("Int64")
    return out[list(ASSESSMENT_COLUMNS)]


def _square(values: np.ndarray, names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(values, index=names, columns=names)
    frame.index.name, frame.columns.name = "map", "reference"
    return frame


def _is_sparse(frame: pd.DataFrame) -> bool:
    return len(frame.columns) > 0 and all(isinstance(t, pd.SparseDtype) for t in frame.dtypes)


@dataclass(frozen=True)
class SimpleCounts:
    """A pixel sample as Olofsson's papers tabulate it: counts n_ij (map rows x reference columns) and the mapped
    area of each map class; `sample()` gives it as one-pixel units (every pixel its own primary unit)."""

    counts: np.ndarray
    mapped: np.ndarray
    labels: tuple[str, ...] = field(default=())

    def sample(self) -> Sample:
        k = len(self.mapped)
        i, j = np.nonzero(self.counts)
        reps = self.counts[i, j].astype(np.int64)
        strata = np.repeat(i, reps)
        refs = np.repeat(j, reps)
        n = len(strata)
        return Sample(cell=strata * k + refs, stratum=strata, psu=np.arange(n), pixels=np.ones(n),
                      weight=np.ones(n), psu_stratum=strata, fpc=np.ones(k), n_cells=k * k)
