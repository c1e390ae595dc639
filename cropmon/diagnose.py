"""Which crops underperform, how badly (a severity tier) and why (reason codes), from the per-crop metrics.

The rule, with every threshold in `DiagnosisSettings` (`DiagnosisSettings.rule_text()` spells it out with the
numbers for the CSV and the report):

- a crop is *underperforming* when its agreement < `min_agreement`, or its F1 over all fields < `min_f1`, or the
  mean confidence over its GT fields < `min_confidence`;
- tier: `critical` when min(agreement, F1) < `critical_score`; else `high` when it is both wrong (agreement or F1
  low) and unsure (confidence low); else `medium` when only wrong; `low` when only unsure. A crop with fewer than
  `min_fields` GT fields drops one tier: a handful of fields is weak evidence.

Reason codes, the most telling first: `never_predicted` (no field is predicted as the crop), `absorbed_by:<crop>`
(that crop takes >= `absorbed_share` of its fields), `over_predicted` (predicted >= `over_prediction_ratio` times
as often as it is in the GT), `low_precision` (precision < `min_precision`, or F1 fails while agreement passes),
`scattered_errors` (agreement fails with no single absorber), `low_confidence`, `too_few_fields`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cropmon.errors import ConfigError
from cropmon.metrics import row_shares

TIERS: tuple[str, ...] = ("critical", "high", "medium", "low")
UNDERPERFORMING_COLUMNS: tuple[str, ...] = (
    "crop", "severity", "reason", "reasons", "failed", "num_fields", "n_predicted", "agreement_score", "f1",
    "precision", "conf_mean", "wrong_fields", "false_alarms", "absorbed_by", "absorbed_share",
)  # fmt: skip


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
    eval_fields: int = 100  # held-back evaluation fields per planned crop (30 is too few to see a 0.1 gain)
    eval_max_share: float = 0.3  # at most this share of a crop's clean fields is held back

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_f1", "critical_score", "absorbed_share", "min_precision", "mutual_share"):
            _check(name, getattr(self, name), low=0.0, high=1.0)
        for name in ("uncertain_margin", "eval_max_share", "contrast_ratio"):
            _check(name, getattr(self, name), low=0.0, high=1.0)
        for name in ("min_confidence", "uncertain_confidence"):
            _check(name, getattr(self, name), low=0.0, high=100.0)
        _check("block_km", self.block_km, low=1e-3, high=1e4)
        _check("over_prediction_ratio", self.over_prediction_ratio, low=1.0, high=1e6)
        _check("label_share_scale", self.label_share_scale, low=0.0, high=1e7)
        for name in ("min_fields", "max_confusion_pairs", "min_pixels", "max_per_block", "label_min", "eval_fields"):
            _check(name, getattr(self, name), low=1, high=10**9, integer=True)
        _check("label_base", self.label_base, low=0, high=10**9, integer=True)
        _check("buffer_km", self.buffer_km, low=0.0, high=self.block_km)
        _check("label_max", self.label_max, low=self.label_min, high=10**9, integer=True)
        if self.label_budget is not None:
            _check("label_budget", self.label_budget, low=0, high=10**9, integer=True)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> DiagnosisSettings:
        """Settings from a config table; an unknown key is a ConfigError naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown diagnosis setting(s) {unknown}", fix=f"use one of {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]

    def rule_text(self) -> str:
        """The underperforming rule in one paragraph, with this run's numbers."""
        return (
            f"underperforming when agreement < {self.min_agreement:g}, or F1 < {self.min_f1:g}, or mean confidence"
            f" < {self.min_confidence:g}; tier critical when min(agreement, F1) < {self.critical_score:g}, high when"
            f" wrong (agreement or F1 low) and unsure (confidence low), medium when only wrong, low when only unsure;"
            f" one tier down with fewer than {self.min_fields} GT fields"
        )


def _check(name: str, value: object, *, low: float, high: float, integer: bool = False) -> None:
    """Refuse a setting of the wrong type or outside [low, high], in one line with the fix."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"diagnosis setting {name} = {value!r} is invalid", fix=f"give {kind} in [{low:g}, {high:g}]")


def _absorbers(confusion: pd.DataFrame, share: float) -> dict[str, list[tuple[str, float]]]:
    """For each GT crop, the other crops that take at least `share` of its fields, largest first."""
    shares = row_shares(confusion)
    out: dict[str, list[tuple[str, float]]] = {}
    for crop, row in shares.iterrows():
        row = row.drop(crop)
        big = row[(row > 0) & (row >= share)].sort_values(ascending=False, kind="stable")
        out[str(crop)] = [(str(k), float(v)) for k, v in big.items()]
    return out


def _reasons(
    row: pd.Series, absorbed: list[tuple[str, float]], flags: dict[str, bool], s: DiagnosisSettings
) -> list[str]:
    """Reason codes of one flagged crop, the most telling first."""
    codes = []
    if row["num_fields"] > 0 and row["n_predicted"] == 0:
        codes.append("never_predicted")
    codes += [f"absorbed_by:{crop}" for crop, _ in absorbed]
    if row["n_predicted"] > row["num_fields"] and row["n_predicted"] >= s.over_prediction_ratio * row["num_fields"]:
        codes.append("over_predicted")
    if row["precision"] < s.min_precision or (flags["low_f1"] and not flags["low_agreement"]):
        codes.append("low_precision")  # F1 low while agreement (recall) is fine: precision is what fails
    if flags["low_agreement"] and not absorbed and row["n_predicted"] > 0:
        codes.append("scattered_errors")
    if flags["low_confidence"]:
        codes.append("low_confidence")
    if row["num_fields"] < s.min_fields:
        codes.append("too_few_fields")
    return codes


def _tier(flags: dict[str, bool], score: float, few: bool, s: DiagnosisSettings) -> str:
    """Severity tier of a flagged crop (see the module docstring)."""
    wrong = flags["low_agreement"] or flags["low_f1"]
    if wrong and score < s.critical_score:
        tier = "critical"
    elif wrong:
        tier = "high" if flags["low_confidence"] else "medium"
    else:
        tier = "low"
    return TIERS[min(TIERS.index(tier) + few, len(TIERS) - 1)]


def underperforming_crops(
    metrics_df: pd.DataFrame, confusion_df: pd.DataFrame, settings: DiagnosisSettings
) -> pd.DataFrame:
    """The crops that fail the rule, worst tier first, with severity, reason codes, the numbers and the rule."""
    absorbers = _absorbers(confusion_df, settings.absorbed_share)
    rows = []
    for _, m in metrics_df.iterrows():
        flags = {
            "low_agreement": bool(m["agreement_score"] < settings.min_agreement),
            "low_f1": bool(m["f1"] < settings.min_f1),
            "low_confidence": bool(m["conf_mean"] < settings.min_confidence),
        }
        if not any(flags.values()):
            continue
        absorbed = absorbers.get(m["crop"], [])
        codes = _reasons(m, absorbed, flags, settings)
        score = float(np.nanmin([m["agreement_score"], m["f1"]]))
        rows.append(
            {
                "crop": m["crop"],
                "severity": _tier(flags, score, m["num_fields"] < settings.min_fields, settings),
                "reason": codes[0],
                "reasons": ";".join(codes),
                "failed": ";".join(k for k, v in flags.items() if v),
                "num_fields": int(m["num_fields"]),
                "n_predicted": int(m["n_predicted"]),
                "agreement_score": m["agreement_score"],
                "f1": m["f1"],
                "precision": m["precision"],
                "conf_mean": m["conf_mean"],
                "wrong_fields": int(m["num_fields"] - m["n_correct"]),
                "false_alarms": int(m["n_predicted"] - m["n_correct"]),
                "absorbed_by": absorbed[0][0] if absorbed else None,
                "absorbed_share": absorbed[0][1] if absorbed else np.nan,
            }
        )
    table = pd.DataFrame(rows, columns=list(UNDERPERFORMING_COLUMNS))
    table["rule"] = settings.rule_text()
    table["_tier"] = table["severity"].map(TIERS.index)
    table["_errors"] = table["wrong_fields"] + table["false_alarms"]
    table = table.sort_values(["_tier", "_errors", "crop"], ascending=[True, False, True])
    return table.drop(columns=["_tier", "_errors"]).reset_index(drop=True)
