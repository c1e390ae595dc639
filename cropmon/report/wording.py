"""The words of the tables: the underperforming rule, each planned crop's derivation, each picked field's reason,
each (crop, AOI) allocation's derivation. Analysis keeps the parts as numbers; these functions tell them, so the CSV
columns and the report's sentences say the same thing with the same figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cropmon.diagnosis.settings import DiagnosisSettings


def rule_text(s: DiagnosisSettings) -> str:
    """The underperforming rule in one paragraph, with this run's numbers."""
    return (
        f"underperforming when agreement < {s.min_agreement:g}, or F1 < {s.min_f1:g}, or mean confidence"
        f" < {s.min_confidence:g}; tier critical when min(agreement, F1) < {s.critical_score:g}, high when"
        f" wrong (agreement or F1 low) and unsure (confidence low), medium when only wrong, low when only unsure;"
        f" one tier down with fewer than {s.min_fields} GT fields; certain when the 95 % interval of a failed"
        " measure lies wholly under its threshold (Wilson for agreement and F1, Student t for mean confidence),"
        f" possible when only its point estimate does, too few fields to tell when not certain with fewer than"
        f" {s.min_fields} GT fields"
    )


MEASURE_WORDS = {"low_agreement": "agreement", "low_f1": "F1", "low_confidence": "confidence"}
CERTAINTY_WORDS = {"certain": "certainly", "possible": "possibly", "too_few_fields": "too few fields to tell"}


def interval_text(value: float, low: float, high: float, digits: int = 2) -> str:
    """'0.42 [0.40, 0.43]' ('n/a' without a value; the value alone without an interval)."""
    if pd.isna(value):
        return "n/a"
    if pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def evidence_text(row: pd.Series, s: DiagnosisSettings) -> str:
    """How sure the plan is about a planned crop: its agreement with the 95 % interval, and the certainty."""
    if pd.isna(row.get("agreement_ci_low", np.nan)):
        return ""
    agreement = interval_text(row["agreement_score"], row["agreement_ci_low"], row["agreement_ci_high"])
    text = f"agreement {agreement} over {int(row['num_fields']):,} GT fields"
    if row["role"] != "underperforming":
        return f"{text} (a contrast crop)"
    certainty = row.get("certainty")
    if certainty == "certain":
        measures = [MEASURE_WORDS[m] for m in str(row.get("certainly_failed") or "").split(";") if m]
        return f"{text}: certainly underperforming ({' and '.join(measures)} interval under the threshold)"
    if certainty == "too_few_fields":
        return f"{text}: too few fields to tell, the labels also narrow the interval"
    return f"{text}: possibly underperforming (its interval reaches the thresholds)"


def eval_text(row: pd.Series) -> str:
    """What the held-back fields of a planned crop will measure, with its precision."""
    if int(row.get("eval_fields", 0) or 0) == 0 or pd.isna(row.get("eval_ci_half_width", np.nan)):
        return ""
    return (f"; {int(row['eval_fields'])} held back measure the next model's agreement to"
            f" +-{row['eval_ci_half_width']:.2f} (95 %)")


def with_rule(flagged: pd.DataFrame, s: DiagnosisSettings) -> pd.DataFrame:
    """underperforming_crops with its last column, the rule in words."""
    return flagged.assign(rule=rule_text(s))


def _target_text(row: pd.Series, s: DiagnosisSettings) -> str:
    """How one planned crop's target came about, up to the clamp."""
    if row["role"] == "underperforming":
        why = (f"error {row['error']:.2f} x ({s.label_base} + {s.label_share_scale:g} x"
               f" sqrt({row['area_share']:.4f})) = {row['raw_target']:.1f}")
    else:
        linked = ", ".join(c for c in str(row["linked_to"]).split(";") if c)
        why = f"{s.contrast_ratio:g} x {row['linked_target']:.0f} (targets of {linked}) = {row['raw_target']:.1f}"
    return f"{why} -> target {row['target']:.0f} (clamped to [{s.label_min}, {s.label_max}])"


def plan_derivation(plan: pd.DataFrame, s: DiagnosisSettings, *, own_budget: bool = True) -> pd.Series:
    """Per planned crop: target, cap by the fields available and (with `own_budget`) the AOI's budget, in words."""
    texts = []
    for _, row in plan.iterrows():
        capped = min(int(row["target"]), int(row["available"]))
        evidence = evidence_text(row, s)
        text = (f"{evidence + '; ' if evidence else ''}{_target_text(row, s)};"
                f" {int(row['available'])} informative fields in label blocks -> {capped}")
        if own_budget and int(row["quota"]) < capped:
            text += f"; budget {s.label_budget} -> {int(row['quota'])}"
        texts.append(text + eval_text(row))
    return pd.Series(texts, index=plan.index, dtype=object)


def plan_table(plan: pd.DataFrame, s: DiagnosisSettings) -> pd.DataFrame:
    """label_plan.csv: the plan with its derivation in words after the target, without the derivation's parts."""
    out = plan.drop(columns=["raw_target", "linked_target"])
    out.insert(out.columns.get_loc("target") + 1, "derivation", plan_derivation(plan, s))
    return out


def pick_reason(row: pd.Series, s: DiagnosisSettings) -> str:
    """Why a field is on the list to label, in words with its numbers."""
    group_note = " (same group)" if row["related_to"] == row["predicted"] else ""
    parts = [] if row["correct"] else [f"misclassified as {row['predicted']}{group_note}"]
    if row["confidence_score"] < s.uncertain_confidence:
        parts.append(f"confidence {row['confidence_score']:.0f} < {s.uncertain_confidence:g}")
    if row["vote_margin"] < s.uncertain_margin:
        parts.append(f"vote margin {row['vote_margin']:.2f} < {s.uncertain_margin:g}")
    if row["related_to"] and not group_note:
        parts.append(f"runner-up {row['related_to']} (same group)")
    return "; ".join(parts)


def with_reasons(picks: pd.DataFrame, s: DiagnosisSettings, *, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """Picked fields with `reason` in words where `related_to` was (and without the columns `drop`)."""
    reasons = pd.Series([pick_reason(row, s) for _, row in picks.iterrows()], index=picks.index, dtype=object)
    out = picks.drop(columns=list(drop))
    out.insert(out.columns.get_loc("related_to"), "reason", reasons)
    return out.drop(columns=["related_to"])


def _fine_text(row: pd.Series, s: DiagnosisSettings) -> str:
    """Why a crop gets no label in an AOI where it passes the rule."""
    if row["num_fields"] == 0:
        return "no GT field of the crop in this AOI: no labels here"
    return (
        f"fine here (agreement {row['agreement_score']:.2f} >= {s.min_agreement:g}, F1 {row['f1']:.2f} >="
        f" {s.min_f1:g}, confidence {row['conf_mean']:.0f} >= {s.min_confidence:g}) and no contrast crop: no labels"
    )


def allocation_derivation(allocation: pd.DataFrame, s: DiagnosisSettings) -> pd.Series:
    """Per (crop, AOI): the AOI's own target and cap (no budget of its own), then the one pooled budget."""
    budget = s.label_budget
    total = int(allocation["wanted"].sum())
    binding = budget is not None and total > budget
    texts = []
    for _, row in allocation.iterrows():
        if row["role"] == "fine":
            texts.append(_fine_text(row, s))
            continue
        own = plan_derivation(row.to_frame().T, s, own_budget=False).iloc[0]
        wanted, quota = int(row["wanted"]), int(row["quota"])
        if binding and budget is not None:
            scale = budget / total
            note = f"; pooled budget {budget:,} over {total:,} wanted in all AOIs: {wanted} x {scale:.3f} -> {quota}"
        else:
            note = f"; pooled: {wanted} (all AOIs want {total:,}, within the budget)"
        texts.append(own + note)
    return pd.Series(texts, index=allocation.index, dtype=object)


ALLOCATION_PARTS = ("area_share", "error", "raw_target", "linked_target", "linked_to")


def allocation_table(allocation: pd.DataFrame, s: DiagnosisSettings) -> pd.DataFrame:
    """label_allocation.csv: the allocation with its derivation in words instead of the parts."""
    return allocation.drop(columns=list(ALLOCATION_PARTS)).assign(derivation=allocation_derivation(allocation, s))

