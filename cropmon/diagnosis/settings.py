"""The thresholds of the diagnosis and of the active-learning plan, typed and checked once (`DiagnosisSettings`,
the run config's `[diagnosis]` table)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from cropmon.errors import ConfigError


@dataclass(frozen=True)
class DiagnosisSettings:
    """Thresholds of the diagnosis and of the active-learning plan (the run config's `[diagnosis]` table)."""

    # underperforming crops
    min_agreement: float = 0.7  # share of a crop's GT fields predicted as the crop
    min_f1: float = 0.7  # F1 over all fields (catches over-prediction, which agreement cannot see)
    min_confidence: float = 60.0  # mean band-4 confidence (0..100) over the crop's GT fields
    critical_score: float = 0.3  # min(agreement, F1) below this: the model does not know the crop
    min_fields: int = 20  # fewer GT fields: too_few_fields, one tier down
    absorbed_share: float = 0.2  # one other crop takes this share of a crop's fields: absorbed_by:<crop>
    min_precision: float = 0.6  # below: low_precision
    over_prediction_ratio: float = 1.5  # predicted this many times more often than in the GT: over_predicted
    mutual_share: float = 0.05  # a confusion is mutual when both directions reach this share
    max_confusion_pairs: int = 30  # rows of confusion_pairs.csv
    # fields that are clean enough to label or to evaluate on
    min_pixels: int = 10  # pixel centres inside the field (all_touched fallbacks are never used)
    uncertain_confidence: float = 60.0  # right but below this confidence: worth labelling
    uncertain_margin: float = 0.5  # right but below this pixel-vote margin (purity - runner-up share)
    # spatial blocks
    block_km: float = 5.0  # side of the square blocks that spread the picks and separate the evaluation set
    max_per_block: int = 3  # picks of one crop in one block
    buffer_km: float = 1.0  # no field to label closer than this to an evaluation block (at most block_km)
    # label quotas
    label_base: int = 50  # fields for a crop at error 1, whatever its share of the AOI
    label_share_scale: float = 500.0  # extra fields per unit of sqrt(area share) at error 1
    label_min: int = 10
    label_max: int = 300
    label_budget: int | None = 2000  # all crops together; None = no budget
    contrast_ratio: float = 0.5  # a contrast crop gets this share of the targets of the crops it is confused with
    # the held-back evaluation sample (select.evaluation_design): a probability sample, drawn before the plan
    eval_target_se: float = 0.01  # standard error of overall accuracy it is sized for (Olofsson 2014, eq. 13)
    eval_min_per_stratum: int = 20  # at least this many fields of each map class in it (all it has when fewer)
    eval_max_share: float = 0.3  # at most this share of the blocks holding clean fields are evaluation blocks
    # fields to label without ground truth (diagnosis/unlabelled.py)
    unlabelled_area_power: float = 0.5  # per predicted class, quota ~ (area share) ** power: 1 proportional, 0 equal
    # suspect labels: the GT disagrees with a confident, pure prediction (diagnosis/suspects.py,
    # docs/active-learning.md)
    suspect_min_confidence: float = 70.0  # the field's mean band-4 confidence, at least
    suspect_min_purity: float = 0.9  # share of the field's pixels in the predicted class, at least
    suspect_neighbours: int = 8  # nearest other labelled fields looked at
    suspect_neighbour_km: float = 1.0  # ... within this distance
    exclude_suspects: bool = True  # suspects are neither labelled nor held back for evaluation until reviewed
    # what the uncertainty ranking is worth where there is ground truth (diagnosis/ranking.py): the report's headline
    ranking_k: int = 500  # "the top k uncertain fields hold x % errors, against y % at random"

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_f1", "critical_score", "absorbed_share", "min_precision", "mutual_share"):
            _check(name, getattr(self, name), low=0.0, high=1.0)
        for name in ("uncertain_margin", "eval_max_share", "contrast_ratio"):
            _check(name, getattr(self, name), low=0.0, high=1.0)
        for name in ("min_confidence", "uncertain_confidence"):
            _check(name, getattr(self, name), low=0.0, high=100.0)
        _check("block_km", self.block_km, low=1e-3, high=1e4)
        _check("eval_target_se", self.eval_target_se, low=1e-4, high=0.5)
        _check("over_prediction_ratio", self.over_prediction_ratio, low=1.0, high=1e6)
        _check("label_share_scale", self.label_share_scale, low=0.0, high=1e7)
        for name in ("min_fields", "max_confusion_pairs", "min_pixels", "max_per_block", "label_min",
                     "eval_min_per_stratum"):
            _check(name, getattr(self, name), low=1, high=10**9, integer=True)
        _check("label_base", self.label_base, low=0, high=10**9, integer=True)
        _check("buffer_km", self.buffer_km, low=0.0, high=self.block_km)
        _check("label_max", self.label_max, low=self.label_min, high=10**9, integer=True)
        if self.label_budget is not None:
            _check("label_budget", self.label_budget, low=0, high=10**9, integer=True)
        for name in ("unlabelled_area_power", "suspect_min_purity"):
            _check(name, getattr(self, name), low=0.0, high=1.0)
        _check("suspect_min_confidence", self.suspect_min_confidence, low=0.0, high=100.0)
        _check("suspect_neighbours", self.suspect_neighbours, low=0, high=1000, integer=True)
        _check("suspect_neighbour_km", self.suspect_neighbour_km, low=0.0, high=1e4)
        _check("ranking_k", self.ranking_k, low=1, high=10**9, integer=True)
        if not isinstance(self.exclude_suspects, bool):
            raise ConfigError(f"diagnosis setting exclude_suspects = {self.exclude_suspects!r} is invalid",
                              fix="give true or false")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> DiagnosisSettings:
        """Settings from a config table; an unknown key is a ConfigError naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown diagnosis setting(s) {unknown}", fix=f"use one of {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]


def _check(name: str, value: object, *, low: float, high: float, integer: bool = False) -> None:
    """Refuse a setting of the wrong type or outside [low, high], in one line with the fix."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"diagnosis setting {name} = {value!r} is invalid", fix=f"give {kind} in [{low:g}, {high:g}]")

