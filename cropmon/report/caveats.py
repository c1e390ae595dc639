"""The report's caveats: what limits the numbers (fields left out, odd labels, ties, overlaps), one sentence each,
built from the diagnosis and the run's manifest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cropmon.diagnosis.diagnose import Diagnosis
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.report.document import Block, Bullets, Heading, names
from cropmon.report.run_facts import RunFacts


def caveats_section(d: Diagnosis, run_info: Mapping[str, Any], s: DiagnosisSettings) -> list[Block]:
    c, facts = d.caveats, RunFacts.of(run_info)
    items = []
    if c["no_pixel"]:
        where = ", ".join(f"{k}: {v:,}" for k, v in c["no_pixel_by_geometry"].items())
        items.append(f"{c['no_pixel']:,} fields got no pixel and are not scored ({where}).")
    if c["unknown_label"]:
        examples = ", ".join(f"'{k}' ({v})" for k, v in c["unknown_label_examples"].items())
        items.append(f"{c['unknown_label']:,} fields carry a label that is in no class and are not scored: {examples}.")
    if c["null_label"] and d.has_labels:  # without any label the headline says so
        items.append(f"{c['null_label']:,} fields have no label and are not scored.")
    if c["variant_label"]:
        items.append(f"{c['variant_label']:,} labels matched a class only after case/space folding.")
    if c["all_touched"]:
        items.append(
            f"{c['all_touched']:,} fields are so small or thin that no pixel centre falls inside: scored from the"
            " pixels they touch (all-touched fallback), never picked for labelling."
        )
    if c["tiny"]:
        items.append(f"{c['tiny']:,} scored fields have fewer than {s.min_pixels} pixels: never picked for labelling.")
    if c["ties"]:
        items.append(_ties_sentence(c, facts.tie_break, by_crop=d.has_labels))
    overlaps = _overlaps_sentence(facts)
    if overlaps:
        items.append(overlaps)
    if c["repaired_geometry"]:
        items.append(f"{c['repaired_geometry']:,} field geometries were invalid and repaired before use.")
    if c["duplicate_id"]:
        items.append(f"{c['duplicate_id']:,} fields share their field_id with another: scored, never picked.")
    if c.get("null_id"):
        fids = facts.null_field_ids
        seen = f" ({', '.join(fids[:5])} in the fields file)" if fids else ""
        items.append(f"{c['null_id']:,} fields have no field_id{seen}: scored, never picked, since nobody could"
                     " trace them back to the ground truth.")
    if c["never_predicted"]:
        items.append(f"Never predicted for any field: {names(c['never_predicted'])}.")
    extra = [crop for crop in c["never_right"] if crop not in c["never_predicted"]]
    if extra:
        items.append(f"Predicted, but never for one of its own fields: {names(extra)}.")
    if c["predicted_not_in_gt"]:
        absent = [f"{k} ({v:,} fields)" for k, v in c["predicted_not_in_gt"].items()]
        items.append(f"Predicted although absent from the GT: {names(absent)}.")
    if c["too_few_fields"]:
        items.append(f"Fewer than {s.min_fields} GT fields (noisy numbers): {names(c['too_few_fields'])}.")
    if c["invalid_class_pixels"] or c["invalid_confidence_pixels"]:
        values = facts.invalid_class_values
        seen = (": " + ", ".join(f"{k} ({v:,} px)" for k, v in list(values.items())[:8])) if values else ""
        items.append(
            f"{c['invalid_class_pixels']:,} pixels held a class value that is no class of the"
            f" {d.catalogue.describe()}{seen}, and {c['invalid_confidence_pixels']:,} a confidence outside 0..100;"
            " they are counted, not used."
        )
    dropped = facts.engine_counts
    if dropped:
        counts = ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in dropped.items())
        items.append(f"The engine reported: {counts}.")
    return [Heading("Caveats"), Bullets(items or ["None: every field was scored and every label matched a class."])]


def _overlaps_sentence(facts: RunFacts) -> str | None:
    """Overlapping and duplicated fields, from the engine's report in run.json (None when there are none)."""
    pairs = facts.overlapping_pairs
    if not pairs:
        return None
    same, shared = facts.duplicate_geometry_pairs, facts.shared_pixels
    inside = facts.engine_counts.get("fully_inside_other_fields", 0)
    return (f"{pairs:,} pairs of fields overlap: {shared:,} pixels lie in more than one field, {same:,} pairs are the"
            f" same polygon twice and {inside:,} fields lie wholly inside others. Each field is scored on every pixel"
            " centre inside it, so a shared pixel counts in each field that holds it (as exactextract and rasterstats"
            " count it); run.json names the pairs sharing the most pixels.")


TIE_RULES = {
    "confidence": "to the tied class with the larger confidence sum (then the lowest class id)",
    "lowest_id": "to the lowest class id (tie_break = lowest_id)",
}


def _ties_sentence(c: Mapping[str, Any], rule: object, *, by_crop: bool = True) -> str:
    """How many fields had a tied majority, how the ties were broken, and (with GT) how many of each crop's."""
    broken = TIE_RULES.get(str(rule), "by the run's tie_break setting")
    text = f"{c['ties']:,} fields had a tied majority (several classes with the top pixel count), broken {broken}"
    if not by_crop:
        return text + "; the acquisition score ranks a tie among the least sure (margin 0)."
    crops = ", ".join(f"{crop or 'no known crop'} {n:,}" for crop, n in c["ties_by_crop"].items())
    return f"{text}; by ground-truth crop: {crops}."
