"""The per-field table: the contract between the engine (zonal) and everything after it (metrics ... report).

One row per ground-truth field, in the input's order. The reference columns come first, in the reference order
(`../shared/reference/README.md`, section 4); the extra columns follow. A field that got no pixel keeps its row
with `n_pixels == 0` and empty predictions. Class histograms travel beside the table as `class_counts`: a
DataFrame with the same index and one int column per crop name of the model's catalogue, in its order (pixel
counts per predicted class).
"""

from __future__ import annotations

import numpy as np

REFERENCE_COLUMNS: tuple[str, ...] = (
    "field_id",  # str (uuid4 in the real data)
    "area_m2",  # float, as in the input
    "normalized_label",  # str, as in the input (may be unknown or null)
    "year",  # int, as in the input
    "majority_crop",  # float class id with the most pixels (a tie: see `tie`); NaN without pixels
    "confidence_score",  # float, mean of band 4 over the field's pixels; NaN without pixels
    "majority_crop_label",  # str crop name of majority_crop; "" without pixels
    "gt_label",  # str crop name of normalized_label; "" when the label is unknown or null
    "gt_ml_match",  # Int8 0/1; <NA> when undecidable (no pixels, or no gt_label)
)

EXTRA_COLUMNS: tuple[str, ...] = (
    "gt_class",  # Int16 class id of normalized_label; <NA> when unknown or null
    "label_status",  # "ok" | "variant" (matched after case/space folding) | "unknown" | "null"
    "n_pixels",  # int, pixels holding a class of the catalogue (0..31 for u0c; nodata excluded)
    "n_invalid",  # int, pixels whose value is no class of the catalogue (counted, not a class)
    "n_nodata",  # int, pixels under the raster's nodata value (excluded)
    "purity",  # float, majority pixels / n_pixels
    "runner_up_crop",  # float class id of the second-largest class (ties broken as the majority's); NaN if none
    "runner_up_share",  # float, runner-up pixels / n_pixels (0 when none)
    "vote_margin",  # float, purity - runner_up_share: the pixel-vote margin (NOT bands 7-8)
    "tie",  # bool, several classes had the top pixel count: the run's tie_break chose among them (default
    # "confidence": the larger confidence sum of the tied classes, then the lowest id; "lowest_id": the lowest id)
    "confidence_std",  # float, std of band 4 over the field's pixels
    "confidence_majority",  # float, mean band 4 over the pixels of the majority class
    "n_conf_invalid",  # int, pixels whose confidence is outside 0..100 (excluded from the means)
    "n_pixels_shared",  # int, pixel centres of the field that lie in another field too (counted in both)
    "pixel_rule",  # "centre" | "all_touched" (no pixel centre inside: fallback) | "none" (no pixel at all)
    "geometry_status",  # "ok" | "repaired" (make_valid) | "multipolygon" | "empty" | "not_polygon" | "outside"
    "duplicate_id",  # bool, field_id appears more than once in the input (all rows kept)
    "x",  # float, representative point of the field in the raster CRS (for maps and spatial blocks)
    "y",  # float
)

FIELD_TABLE_COLUMNS: tuple[str, ...] = REFERENCE_COLUMNS + EXTRA_COLUMNS


def text_column(n: int, value: str) -> np.ndarray:
    """An object array of `n` references to one string (np.full(n, value, dtype=object) makes n string copies, ~70
    bytes each: 45 MB a column on a 4x AOI)."""
    column = np.empty(n, dtype=object)
    column[:] = value
    return column


def has_field_id(field_id) -> np.ndarray:
    """Which rows carry a usable field_id (a pandas Series of any dtype): not null, not blank. A field without one
    is scored but never picked for labelling or evaluation: nobody could trace it back to the ground truth."""
    present = field_id.notna().to_numpy(dtype=bool, copy=True)
    if field_id.dtype == object or str(field_id.dtype).startswith(("string", "str")):
        present &= field_id.astype(str).str.strip().ne("").to_numpy(dtype=bool)
    return present
