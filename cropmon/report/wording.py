"""The words of the tables: the underperforming rule, each planned crop's derivation, each picked field's reason,
each (crop, AOI) allocation's derivation. Analysis keeps the parts as numbers; these functions tell them, so the CSV
columns and the report's sentences say the same thing with the same figures."""

from __future__ import annotations

import pandas as pd

from cropmon.analysis.settings import DiagnosisSettings


def rule_text(s: DiagnosisSettings) -> str:
    """The underperforming rule in one paragraph, with this run's numbers."""
    return (
        f"underperforming when agreement < {s.min_agreement:g}, or F1 < {s.min_f1:g}, or mean confidence"
        f" < {s.min_confidence:g}; tier critical when min(agreement, F1) < {s.critical_score:g}, high when"
        f" wrong (agreement or F1 low) and unsure (confidence low), medium when only wrong, low when only unsure;"
        f" one tier down with fewer than {s.min_fields} GT fields"
    )


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
        text = f"{_target_text(row, s)}; {int(row['available'])} informative fields in label blocks -> {capped}"
        if own_budget and int(row["quota"]) < capped:
            text += f"; budget {s.label_budget} -> {int(row['quota'])}"
        texts.append(text)
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
        if binding:
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

