"""The held-back evaluation set as a probability sample: drawn first (before the fields to label, so the plan never
shapes it), with a known inclusion probability for every field, sized from a target standard error.

The design: a stratified two-stage sample with spatial blocks as primary units.
1. Stage 1: `n_blocks` of the B blocks (`block_km` squares) that hold clean GT fields, drawn by simple random
   sampling (a seeded random order of the blocks). No field to label lies in an evaluation block or within
   `buffer_km` of one (select.spatial_split).
2. Stage 2: within the evaluation blocks, the fields are stratified by the current model's map class (a field's
   majority class) and n_h are drawn at random in stratum h: n_h = min(N_h in the blocks, max(eval_min_per_stratum,
   ceil(n x W_h))), W_h the stratum's share of the frame's pixels. A field's inclusion probability is written as
   (n_blocks / B) x (n_h / N_h in the blocks): its block's probability times its conditional probability within
   the drawn blocks, the inverse of its Horvitz-Thompson weight in a two-stage design (tested: the weights add up
   to each stratum's frame on average over draws), with its block (its primary unit) in evaluation_fields.csv.

Why blocks and not fields scattered over the AOI: every held-back field keeps the fields to label `buffer_km` away,
and scattered fields put that buffer everywhere. On the full twin (benchmarks/eval_design.py, 100 draws each,
benchmarks/results/eval-design-latest.md) a scattered stratified sample of 1,042 fields took 29.5 % of the clean
fields (32.3 % of the informative ones, which the plan labels) out of the label pool; this design's 40 blocks with
1,750 fields took 10.8 % (10.9 %) out, at the same precision (SD of the overall-accuracy estimate 0.0071 against
0.0069; the twin's intra-block correlation of right/wrong is 0.024). Held-back fields cost no labelling (they are
labelled already): only the label pool they remove does. Blocks cost precision where neighbouring fields are alike,
which the sizing below accounts for with the correlation measured on the frame.

Sizing (`eval_target_se`, Olofsson et al. 2014, eq. 13): n = (sum_h W_h S_h / SE)^2 fields, S_h the standard
deviation of stratum h's per-field linearised value for pixel-level overall accuracy, from the current model's
results: sqrt(U_h (1 - U_h)) times sqrt(mean(m^2)) / mean(m) (fields of m pixels are clusters; U_h the share of the
stratum's fields whose map class is right). With blocks the variance of the overall accuracy is about
S^2 / n x (1 + (m_bar - 1) rho), rho the intra-block correlation of right/wrong (measured on the frame),
m_bar = n / n_blocks: no number of fields reaches the target with fewer than n_srs x rho blocks. The design takes
`BLOCK_BALANCE` times that many blocks (at least `MIN_EVAL_BLOCKS`, at most `eval_max_share` of B) and the n that
then meets the target, 1 / (1 / n_srs - rho / n_blocks); when the cap makes the target unreachable it takes every
field of the blocks and reports the standard error it expects.

Pure pandas/numpy; the estimator that reads the sample is diagnosis/compare.py (Stehman 2014 with blocks as primary
units, the current model's classes as strata: another model's map is not its strata).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cropmon.diagnosis.blocks import block_keys, seeded_hash
from cropmon.diagnosis.settings import DiagnosisSettings

MIN_EVAL_BLOCKS = 10  # fewer primary units give a variance with too few degrees of freedom to trust
BLOCK_BALANCE = 2.0  # evaluation blocks: twice the fewest that could reach the target with whole blocks
STRATUM_COLUMNS: tuple[str, ...] = (
    "stratum", "frame_fields", "frame_pixel_share", "users_accuracy", "sd", "fields_in_blocks", "sampled",
    "inclusion_probability",
)  # fmt: skip


@dataclass(frozen=True)
class EvaluationDesign:
    """What the draw decided and why: the numbers behind evaluation_fields.csv's inclusion probabilities."""

    target_se: float
    n_srs: int  # Olofsson's n for stratified random sampling of fields
    rho: float  # intra-block correlation of the current model's right/wrong fields
    blocks_in_frame: int
    blocks: int
    n_needed: int  # fields that meet the target with `blocks` blocks
    n_sampled: int
    expected_se: float  # of overall accuracy, for the current model, under the design
    strata: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(STRATUM_COLUMNS)))

    @property
    def block_fraction(self) -> float:
        return self.blocks / self.blocks_in_frame if self.blocks_in_frame else 0.0

    def as_manifest(self) -> dict[str, object]:
        return {"design": "stratified two-stage: SRS of blocks, then SRS of fields by map class within them",
                "target_se": self.target_se, "n_srs": self.n_srs, "intra_block_correlation": round(self.rho, 4),
                "blocks_in_frame": self.blocks_in_frame, "blocks": self.blocks, "n_needed": self.n_needed,
                "n_sampled": self.n_sampled, "expected_se": round(self.expected_se, 5)}


def intra_block_correlation(values: np.ndarray, blocks: np.ndarray) -> float:
    """The ANOVA estimator of the intra-class correlation of `values` within `blocks` (unequal sizes), in [0, 1]."""
    values = np.asarray(values, dtype=float)
    codes, sizes = np.unique(blocks, return_inverse=True, return_counts=True)[1:]
    n, k = len(values), len(sizes)
    if k < 2 or n <= k:
        return 0.0
    means = np.bincount(codes, weights=values, minlength=k) / sizes
    grand = values.mean()
    between = float((sizes * (means - grand) ** 2).sum() / (k - 1))
    within = float(((values - means[codes]) ** 2).sum() / (n - k))
    m0 = (n - float((sizes**2).sum()) / n) / (k - 1)
    denom = between + (m0 - 1) * within
    return float(np.clip((between - within) / denom, 0.0, 1.0)) if denom > 0 else 0.0


def strata_of(candidates: pd.DataFrame) -> pd.DataFrame:
    """Per map class of the frame (the clean GT fields): fields, pixel share W_h, field-level user's accuracy U_h
    and S_h (see the module docstring), sorted by stratum name."""
    pixels = candidates["n_pixels"].astype(float)
    grouped = pd.DataFrame({"stratum": candidates["predicted"].astype(str), "m": pixels, "m2": pixels**2,
                            "right": candidates["correct"].astype(float)}).groupby("stratum")
    table = grouped.agg(frame_fields=("m", "size"), m=("m", "sum"), m2=("m2", "sum"), right=("right", "mean"))
    u = table["right"]
    size_factor = np.sqrt(table["m2"] / table["frame_fields"]) / (table["m"] / table["frame_fields"])
    return pd.DataFrame({"frame_fields": table["frame_fields"].astype("int64"),
                         "frame_pixel_share": table["m"] / table["m"].sum(),
                         "users_accuracy": u, "sd": np.sqrt(u * (1 - u)) * size_factor})


def olofsson_sample_size(weights: np.ndarray, sds: np.ndarray, target_se: float) -> int:
    """Olofsson et al. 2014, eq. 13: n = (sum_h W_h S_h / S(O))^2 (at least 1)."""
    return max(1, math.ceil((float(np.sum(np.asarray(weights) * np.asarray(sds))) / target_se) ** 2))


def draw_evaluation(candidates: pd.DataFrame, *, settings: DiagnosisSettings,
                    seed: int) -> tuple[pd.Series, pd.DataFrame, EvaluationDesign]:
    """The evaluation sample of the clean GT fields `candidates` (select.candidate_fields, with their seeded
    tie-break `_key`): (in an evaluation block, per candidate; the sampled candidates with `stratum`,
    `inclusion_probability`, `psu` (block key); the design)."""
    keys = block_keys(candidates["block_x"].to_numpy(), candidates["block_y"].to_numpy())
    strata = strata_of(candidates)
    n_srs = olofsson_sample_size(strata["frame_pixel_share"], strata["sd"], settings.eval_target_se)
    rho = intra_block_correlation(candidates["correct"].to_numpy(float), keys)
    frame_blocks = np.unique(keys)
    n_frame = len(frame_blocks)
    cap = math.floor(settings.eval_max_share * n_frame)
    wanted = max(MIN_EVAL_BLOCKS, math.ceil(BLOCK_BALANCE * n_srs * rho))
    n_blocks = min(wanted, cap) if n_frame else 0
    order = frame_blocks[np.argsort(seeded_hash(frame_blocks, seed), kind="stable")]
    chosen = order[:n_blocks]
    in_blocks = np.isin(keys, chosen)
    shortfall = 1 / n_srs - rho / n_blocks if n_blocks else -1.0
    n_needed = math.ceil(1 / shortfall) if shortfall > 0 else int(in_blocks.sum())
    pool = candidates.loc[in_blocks]
    in_pool = pool["predicted"].astype(str).value_counts()
    per_stratum = strata.join(in_pool.rename("fields_in_blocks"), how="left").fillna({"fields_in_blocks": 0})
    share = per_stratum["frame_pixel_share"].to_numpy(float)
    want = np.maximum(settings.eval_min_per_stratum, np.ceil(n_needed * share))
    per_stratum["sampled"] = np.minimum(per_stratum["fields_in_blocks"].to_numpy(), want).astype("int64")
    with np.errstate(invalid="ignore", divide="ignore"):
        within = per_stratum["sampled"] / per_stratum["fields_in_blocks"]
    block_fraction = n_blocks / n_frame if n_frame else 0.0
    per_stratum["inclusion_probability"] = (block_fraction * within).fillna(0.0)
    per_stratum = per_stratum.rename_axis("stratum").reset_index()
    # stage 2: the first n_h fields of each stratum in the seeded order of their ids (a simple random sample)
    ranked = pool.assign(_stratum=pool["predicted"].astype(str)).sort_values(["_stratum", "_key"])
    rank = ranked.groupby("_stratum").cumcount()
    quota = ranked["_stratum"].map(per_stratum.set_index("stratum")["sampled"])
    sample = ranked.loc[rank.to_numpy() < quota.to_numpy()]
    probability = sample["_stratum"].map(per_stratum.set_index("stratum")["inclusion_probability"])
    sample = sample.assign(stratum=sample["_stratum"], inclusion_probability=probability,
                           psu=keys[candidates.index.get_indexer(sample.index)]).drop(columns="_stratum")
    n_sampled = len(sample)
    s2 = float((share * per_stratum["sd"].to_numpy(float)).sum()) ** 2
    m_bar = n_sampled / n_blocks if n_blocks else 0.0
    expected = math.sqrt(s2 / n_sampled * (1 + max(m_bar - 1, 0) * rho)) if n_sampled else float("nan")
    design = EvaluationDesign(target_se=settings.eval_target_se, n_srs=n_srs, rho=rho, blocks_in_frame=n_frame,
                              blocks=n_blocks, n_needed=n_needed, n_sampled=n_sampled, expected_se=expected,
                              strata=per_stratum[list(STRATUM_COLUMNS)])
    return pd.Series(in_blocks, index=candidates.index), sample, design
