"""The facts of a run's manifest (run.json, `run_info`) that the report words, read once into a typed object.

The report is also made from partial or older manifests (a Python caller's `run_info`, a run of an earlier
version), so every fact has a value meaning "not recorded" (None, False, 0 or empty) instead of a KeyError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _at(info: object, *keys: str) -> Any:
    """info[k1][k2]..., or None when a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(info, Mapping) or key not in info:
            return None
        info = info[key]
    return info


def _path(value: object) -> str | None:
    """A manifest input: a path, or a mapping with a path; None when there is no non-empty path."""
    path = value.get("path") if isinstance(value, Mapping) else value
    return path if isinstance(path, str) and path else None


@dataclass(frozen=True)
class RunFacts:
    """What the report reads of run.json (manifest.py writes it)."""

    raster_path: str | None = None  # inputs.raster(.path)
    fields_path: str | None = None  # inputs.fields(.path)
    raster_crs: str | None = None  # inputs.raster.crs
    digital_twin: bool = False  # inputs.digital_twin
    no_labels: bool = False  # settings.no_labels: the run was told to read no label
    label_column_absent: bool = False  # inputs.fields.label_column recorded as None: the file had no label column
    label_column: str | None = None  # settings.label_column
    tie_break: str | None = None  # settings.tie_break
    class_names: tuple[str, ...] | None = None  # inputs.classes.names
    null_field_ids: list[str] = field(default_factory=list)  # fields.examples.field_id_null
    invalid_class_values: dict[str, int] = field(default_factory=dict)  # fields.invalid_class_values
    engine_counts: dict[str, Any] = field(default_factory=dict)  # fields.counts: the engine's field report
    overlapping_pairs: int = 0  # fields.overlapping_pairs
    duplicate_geometry_pairs: int = 0
    shared_pixels: int = 0

    @classmethod
    def of(cls, run_info: Mapping[str, Any]) -> RunFacts:
        fields_input = _at(run_info, "inputs", "fields")
        names = _at(run_info, "inputs", "classes", "names")
        counts = _at(run_info, "fields", "counts")
        tie_break = _at(run_info, "settings", "tie_break")
        label_column = _at(run_info, "settings", "label_column")
        return cls(
            raster_path=_path(_at(run_info, "inputs", "raster")),
            fields_path=_path(fields_input),
            raster_crs=_at(run_info, "inputs", "raster", "crs"),
            digital_twin=_at(run_info, "inputs", "digital_twin") is True,
            no_labels=_at(run_info, "settings", "no_labels") is True,
            label_column_absent=(isinstance(fields_input, Mapping) and "label_column" in fields_input
                                 and fields_input["label_column"] is None),
            label_column=label_column if isinstance(label_column, str) else None,
            tie_break=tie_break if isinstance(tie_break, str) else None,
            class_names=tuple(names) if isinstance(names, list) else None,
            null_field_ids=list(_at(run_info, "fields", "examples", "field_id_null") or []),
            invalid_class_values=dict(_at(run_info, "fields", "invalid_class_values") or {}),
            engine_counts=dict(counts) if isinstance(counts, Mapping) else {},
            overlapping_pairs=_at(run_info, "fields", "overlapping_pairs") or 0,
            duplicate_geometry_pairs=_at(run_info, "fields", "duplicate_geometry_pairs") or 0,
            shared_pixels=_at(run_info, "fields", "shared_pixels") or 0,
        )
