"""The sections of one AOI's report, in reading order: headline, underperforming crops, confusions, figures, the
active-learning plan, caveats and settings. Every sentence is built from the diagnosis's numbers (no fixed prose);
report/single.py assembles them with the figures and writes the files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from cropmon.diagnosis import metrics
from cropmon.diagnosis.diagnose import CERTAINTIES, TIERS, Diagnosis
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.report import active
from cropmon.report.document import Block, Bullets, Heading, Image, Paragraph, Table, names, num, pct, strong
from cropmon.report.wording import CERTAINTY_WORDS, interval_text, rule_text, with_reasons

MAX_SENTENCES = 8  # per section; the tables hold the rest


def headline(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    o, c, m = d.overall, d.caveats, d.metrics
    in_gt = m.loc[m["num_fields"] > 0]
    text = f"{c['n_scored']:,} of {c['n_fields']:,} fields were scored (a known crop label and at least one pixel)."
    if not len(in_gt):
        return [Heading("Headline"), Paragraph(text + " With no scored field there is nothing to diagnose.")]
    text += (
        f" {pct(o['agreement'])} of them are predicted as their ground-truth crop; weighted by area"
        f" {pct(o['area_agreement'])}, by pixel {pct(o['pixel_agreement'])}. Macro F1 over the {len(m)} crops"
        f" seen (in the GT or predicted) is {num(o['macro_f1'])}, support-weighted F1 {num(o['weighted_f1'])}."
    )
    solid = in_gt.loc[in_gt["num_fields"] >= s.min_fields]
    pool = solid if len(solid) else in_gt
    best, worst = pool.iloc[0], pool.sort_values(["weighted_f1_score", "num_fields"], ascending=[True, False]).iloc[0]
    text += (
        f" Best crop: {best['crop']} (agreement {_agreement(best)} over {best['num_fields']:,} fields);"
        f" worst: {worst['crop']} ({_agreement(worst)} over {worst['num_fields']:,})"
        + (f", among crops with at least {s.min_fields} fields." if len(solid) else ".")
        + " Brackets hold 95 % intervals."
    )
    tiers = d.underperforming["severity"].value_counts()
    if len(d.underperforming):
        counts = [f"{tiers[t]} {t}" for t in TIERS if t in tiers]
        text += (f" {len(d.underperforming)} crops are underperforming ({', '.join(counts)}):"
                 f" {_certainty_counts(d.underperforming)}.")
    else:
        text += " No crop falls below the thresholds."
    ranking = active.ranking_sentence(d)
    if ranking:
        text += " " + ranking
    if len(d.suspects):
        text += f" {len(d.suspects):,} GT labels are suspect (the model confidently says otherwise)."
    numbers = pd.DataFrame(
        {
            "measure": [
                "fields scored",
                "agreement (fields)",
                "agreement (area)",
                "agreement (pixels)",
                "macro F1",
                "weighted F1",
                "underperforming crops",
            ],
            "value": [
                f"{c['n_scored']:,}",
                pct(o["agreement"]),
                pct(o["area_agreement"]),
                pct(o["pixel_agreement"]),
                num(o["macro_f1"]),
                num(o["weighted_f1"]),
                str(len(d.underperforming)),
            ],
        }
    )
    return [Heading("Headline"), Paragraph(text), Table(numbers)]


def _agreement(row: pd.Series) -> str:
    """A crop's agreement with its 95 % interval."""
    return interval_text(row["agreement_score"], row["agreement_ci_low"], row["agreement_ci_high"])


def _certainty_counts(flagged: pd.DataFrame) -> str:
    """'19 certainly, 3 possibly, 1 with too few fields to tell'."""
    counts = flagged["certainty"].value_counts()
    with_ = {"too_few_fields": "with "}
    return ", ".join(f"{counts[c]} {with_.get(c, '')}{CERTAINTY_WORDS[c]}" for c in CERTAINTIES if c in counts)


def _crop_sentence(row: pd.Series, m: pd.Series, shares: pd.Series, s: DiagnosisSettings) -> str:
    """One underperforming crop, in words: its numbers and each of its reasons (`shares`: its confusion row)."""
    phrases = []
    for code in row["reasons"].split(";"):
        if code == "never_predicted":
            phrases.append("it is never predicted")
        elif code.startswith("absorbed_by:"):
            other = code.split(":", 1)[1]
            phrases.append(f"{100 * shares[other]:.0f} % of its fields are predicted as {other}")
        elif code == "over_predicted":
            phrases.append(f"it is predicted for {row['n_predicted']:,} fields against {row['num_fields']:,} in the GT")
        elif code == "low_precision":
            share = "none" if row["precision"] == 0 else f"only {pct(row['precision'])}"
            phrases.append(f"{share} of the {row['n_predicted']:,} fields predicted as it are right")
        elif code == "scattered_errors":
            phrases.append(f"its errors are spread (largest: {m['mistaken_for_1']}, {pct(m['mistaken_for_1_share'])})")
        elif code == "low_confidence":
            phrases.append(f"mean confidence {num(row['conf_mean'], 0)} < {s.min_confidence:g}")
        elif code == "too_few_fields":
            n = row["num_fields"]
            phrases.append(f"only {n} GT fields, weak evidence" if n else "it is absent from the GT")
    scores = (f"agreement {_agreement(row)},"
              f" F1 {interval_text(row['f1'], row['f1_ci_low'], row['f1_ci_high'])}")
    return (f"{strong(row['crop'])} ({row['severity']}, {CERTAINTY_WORDS[row['certainty']]}; {scores}):"
            f" {'; '.join(phrases)}.")


def underperforming(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    blocks: list[Block] = [Heading("Underperforming crops"), Paragraph(f"Rule: {rule_text(s)}.")]
    if not len(d.underperforming):
        return [*blocks, Paragraph(f"All {len(d.metrics)} crops pass the rule.")]
    by_crop, shares = d.metrics.set_index("crop"), metrics.row_shares(d.confusion)
    sentences = [
        _crop_sentence(row, by_crop.loc[row["crop"]], shares.loc[row["crop"]], s)
        for _, row in d.underperforming.iterrows()
    ]
    rest = len(sentences) - MAX_SENTENCES
    if rest > 0:
        sentences = [*sentences[:MAX_SENTENCES], f"{rest} more in the table and in underperforming_crops.csv."]
    table = d.underperforming[
        ["crop", "severity", "certainty", "reasons", "num_fields", "n_predicted", "agreement_score",
         "agreement_ci_low", "agreement_ci_high", "f1", "f1_ci_low", "f1_ci_high", "precision", "conf_mean"]
    ]  # fmt: skip
    return [*blocks, Bullets(sentences), Table(table, "underperforming_crops.csv (worst tier first)")]


def _pair_sentence(pair: Any) -> str:
    a, b = pair.crop_a, pair.crop_b
    if pair.mutual:
        return (
            f"{a} and {b} are confused both ways: {pair.a_as_b:,} {a} fields ({pct(pair.a_as_b_share)}) are"
            f" predicted as {b}, {pair.b_as_a:,} {b} fields ({pct(pair.b_as_a_share)}) as {a}."
        )
    back = f"; the other way only {pair.b_as_a:,}" if pair.b_as_a else ", never the other way"
    return f"{pair.a_as_b:,} {a} fields ({pct(pair.a_as_b_share)} of {a}) are predicted as {b}{back}."


def confusions(d: Diagnosis, images: dict[str, Image]) -> list[Block]:
    blocks: list[Block] = [Heading("Confusions")]
    if not len(d.pairs):
        blocks.append(Paragraph("No field is predicted as another crop."))
    else:
        off = int(d.confusion.to_numpy().sum() - np.trace(d.confusion.to_numpy()))
        top = d.pairs.head(3)["fields"].sum()
        blocks.append(
            Paragraph(
                f"{off:,} scored fields are predicted as another crop; the {min(3, len(d.pairs))} largest pairs"
                f" below account for {pct(top / off)} of them ({len(d.pairs)} pairs listed in confusion_pairs.csv)."
            )
        )
        blocks.append(Bullets([_pair_sentence(p) for p in d.pairs.head(MAX_SENTENCES).itertuples()]))
    blocks.append(images["confusion_heatmap.png"])
    return blocks


def figures(d: Diagnosis, images: dict[str, Image]) -> list[Block]:
    blocks: list[Block] = [Heading("Per crop and across the AOI"), images["agreement_by_crop.png"]]
    blocks.append(images["f1_vs_confidence.png"])
    solid = d.blocks.loc[d.blocks["n_fields"] >= 10]
    if len(solid) >= 2:
        worst, best = solid.loc[solid["error_rate"].idxmax()], solid.loc[solid["error_rate"].idxmin()]
        blocks.append(
            Paragraph(
                f"Across the {len(solid)} blocks of {d.selection.grid.block_km:g} km with at least 10 scored fields,"
                f" the error rate runs from {pct(best['error_rate'])} to {pct(worst['error_rate'])} (worst block"
                f" around x={worst['left']:.4g}..{worst['right']:.4g}, y={worst['bottom']:.4g}..{worst['top']:.4g},"
                f" {int(worst['n_fields'])} fields)."
            )
        )
    blocks.append(images["block_error_map.png"])
    if "map_window.png" in images:
        blocks.append(images["map_window.png"])
    return blocks


def plan(d: Diagnosis, s: DiagnosisSettings) -> list[Block]:
    sel = d.selection
    plan, picks, held = sel.plan, sel.picks, sel.evaluation
    blocks: list[Block] = [Heading("Active-learning plan")]
    if not len(plan):
        return [*blocks, Paragraph("Nothing to plan: no crop is underperforming.")]
    groups = plan["group"].nunique()
    text = (
        f"Label {len(picks):,} fields ({picks['area_ha'].sum():,.0f} ha) of {int((plan['quota'] > 0).sum())} crops"
        f" in {groups} group{'s' if groups > 1 else ''}, and hold back {len(held):,} fields"
        f" ({held['area_ha'].sum():,.0f} ha) to measure the next model; no field to label lies within"
        f" {s.buffer_km:g} km of a held-back block."
    )
    if len(held):
        text += (
            f" The current model gets {pct(held['correct'].mean())} of the held-back fields right: the number the"
            " next model has to beat."
        )
    design = sel.design
    if design is not None and design.blocks:
        text += (
            f" The held-back fields are a probability sample, drawn before the plan: {design.blocks} of the"
            f" {design.blocks_in_frame} blocks holding clean fields at random, then fields of each map class at"
            f" random within them (at least {s.eval_min_per_stratum} where the blocks hold them); each field's"
            " inclusion probability is in evaluation_fields.csv, and `cropmon compare` weights by it. Sized for a"
            f" standard error of overall accuracy of {s.eval_target_se:g} (Olofsson 2014's formula gives"
            f" {design.n_srs:,} fields; blocks alike inside, intra-block correlation {design.rho:.3f}, need"
            f" {design.n_needed:,}): expected {design.expected_se:.4f} for the current model."
        )
    derivation = (
        f"How many: an underperforming crop's target is error x ({s.label_base} + {s.label_share_scale:g} x"
        f" sqrt(its share of the scored area)), error = max(1 - agreement, 1 - F1, confidence gap), clamped to"
        f" [{s.label_min}, {s.label_max}]; crops linked by confusion (absorbed_by either way, or mutual) are"
        f" planned together and a linked crop that is fine gets {s.contrast_ratio:g} x the targets of the crops it is"
        f" linked to, as contrast examples. Each quota is capped by the clean informative fields outside the"
        f" held-back blocks and buffers (at most {s.max_per_block} per crop and {s.block_km:g} km block)"
        + (f", and all quotas together by the budget of {s.label_budget:,} fields." if s.label_budget else ".")
    )
    which = (
        f"Which: misclassified fields first, then right but uncertain ones (confidence < {s.uncertain_confidence:g}"
        f" or pixel-vote margin < {s.uncertain_margin:g}), a bonus for fields confused within their group; only"
        f" fields with at least {s.min_pixels} pixel centres, never an all-touched fallback; picked in rounds over"
        " the blocks so that neighbours do not crowd the list."
    )
    absent = plan["num_fields"] == 0
    short = plan.loc[(plan["quota"] < plan["target"]) & ~absent, "crop"].tolist()
    bullets = [derivation, which]
    if short:
        bullets.append(f"Capped by the fields available (or the budget): {names(short)}.")
    for row in plan.loc[absent].itertuples():
        victims = [c for c in row.members.split(" + ") if c != row.crop and d.confusion.at[c, row.crop] > 0]
        where = f"; the fields wrongly predicted as it are {names(victims)} fields, planned with it" if victims else ""
        bullets.append(f"{row.crop} has no GT field in this AOI, so none of it can be labelled here{where}.")
    table = plan[["group", "crop", "role", "severity", "certainty", "agreement_score", "agreement_ci_low",
                  "agreement_ci_high", "target", "available", "quota", "expected_ha", "eval_fields",
                  "eval_ci_half_width"]]
    blocks += [Paragraph(text), Bullets(bullets), Table(table, "label_plan.csv (derivation column: the numbers)")]
    if len(picks):
        top = with_reasons(picks.head(15), s)
        top = top[["rank", "field_id", "crop", "predicted", "confidence_score", "vote_margin", "reason"]]
        blocks.append(Table(top, f"first {len(top)} of {len(picks):,} fields in fields_to_label.csv / .gpkg"))
    return blocks


def _flatten(info: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """('a.b', value as short text) for every leaf of a nested mapping."""
    rows = []
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, prefix=f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            rows.append((name, text if len(text) <= 160 else text[:157] + "..."))
    return rows


def settings_blocks(run_info: Mapping[str, Any], s: DiagnosisSettings, seed: int) -> list[Block]:
    values = {**asdict(s), "seed": seed}
    diag = pd.DataFrame({"setting": list(values), "value": [str(v) for v in values.values()]})
    blocks: list[Block] = [Heading("Settings of this run"), Table(diag, "diagnosis settings")]
    rows = [row for row in _flatten(run_info) if not row[0].startswith("settings.diagnosis.")]  # in the table above
    if rows:
        blocks.append(Table(pd.DataFrame(rows, columns=["key", "value"]), "run information"))
    else:
        blocks.append(Paragraph("The pipeline passed no run information."))
    return blocks
