"""Synthetic per-field tables with known answers, for the diagnosis tests (metrics, diagnose, select, plots, report).

`field(gt, pred, ...)` describes one field the way a person would (its GT crop, its majority class, its confidence);
`make_table(rows)` turns the rows into the engine's contract: a table with `schema.FIELD_TABLE_COLUMNS` and the
matching `class_counts` histograms.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import box

from cropmon.diagnosis import metrics, pooled
from cropmon.diagnosis.diagnose import diagnose_run
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.labels import CLASS_IDS, CROP_NAMES, LABELS_DICT
from cropmon.schema import FIELD_TABLE_COLUMNS

UNKNOWN = "radish"  # a real label of the u0c GT that is in no class


def field(
    gt: str | None,
    pred: str | None,
    *,
    conf: float = 80.0,
    n_pixels: int = 50,
    purity: float = 1.0,
    runner_up: str | None = None,
    x: float = 2.0,
    y: float = 50.0,
    area_m2: float = 20_000.0,
    pixel_rule: str | None = None,
    label: str | None = None,
    field_id: str | None = None,
) -> dict:
    """One field: GT crop (None = the unknown label `radish`) and majority class (None = no pixel at all)."""
    return {
        "gt": gt,
        "pred": pred,
        "conf": conf,
        "n_pixels": n_pixels if pred is not None else 0,
        "purity": purity,
        "runner_up": runner_up,
        "x": x,
        "y": y,
        "area_m2": area_m2,
        "pixel_rule": pixel_rule or ("centre" if pred is not None else "none"),
        "label": label if label is not None else (LABELS_DICT[gt][0] if gt is not None else UNKNOWN),
        "field_id": field_id,
    }


def _histogram(spec: dict) -> np.ndarray:
    """Pixel counts per class: the majority class gets round(purity * n), the runner-up the rest."""
    counts = np.zeros(len(CROP_NAMES), dtype="int64")
    if spec["pred"] is None:
        return counts
    n, major = spec["n_pixels"], CLASS_IDS[spec["pred"]]
    top = round(spec["purity"] * n)
    counts[major] = top
    if top < n:
        other = spec["runner_up"] or (spec["gt"] if spec["gt"] not in (None, spec["pred"]) else None)
        counts[CLASS_IDS[other] if other else (major + 1) % len(CROP_NAMES)] = n - top
    return counts


def _row(i: int, spec: dict, counts: np.ndarray) -> dict:
    """The contract's columns for one field, derived from its spec and histogram."""
    n = int(counts.sum())
    gt_class = CLASS_IDS[spec["gt"]] if spec["gt"] is not None else pd.NA
    order = np.argsort(-counts, kind="stable")
    major = float(order[0]) if n else np.nan
    runner = float(order[1]) if n and counts[order[1]] > 0 else np.nan
    purity = counts[order[0]] / n if n else np.nan
    runner_share = counts[order[1]] / n if n else 0.0
    has_pred = n > 0
    return {
        "field_id": spec["field_id"] or f"f{i:05d}",
        "area_m2": spec["area_m2"],
        "normalized_label": spec["label"],
        "year": 2022,
        "majority_crop": major,
        "confidence_score": spec["conf"] if has_pred else np.nan,
        "majority_crop_label": CROP_NAMES[int(major)] if has_pred else "",
        "gt_label": spec["gt"] or "",
        "gt_ml_match": int(spec["gt"] == spec["pred"]) if has_pred and spec["gt"] else pd.NA,
        "gt_class": gt_class,
        "label_status": "ok" if spec["gt"] is not None else "unknown",
        "n_pixels": n,
        "n_invalid": 0,
        "n_nodata": 0,
        "purity": purity,
        "runner_up_crop": runner,
        "runner_up_share": runner_share,
        "vote_margin": purity - runner_share if has_pred else np.nan,
        "tie": False,
        "confidence_std": 5.0 if has_pred else np.nan,
        "confidence_majority": spec["conf"] if has_pred else np.nan,
        "n_conf_invalid": 0,
        "n_pixels_shared": 0,
        "pixel_rule": spec["pixel_rule"],
        "geometry_status": "ok" if has_pred else "outside",
        "duplicate_id": False,
        "x": spec["x"],
        "y": spec["y"],
    }


def make_table(specs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-field table (contract columns and dtypes) and its class_counts, from `field(...)` specs."""
    hist = [_histogram(spec) for spec in specs]
    fields = pd.DataFrame([_row(i, spec, h) for i, (spec, h) in enumerate(zip(specs, hist, strict=True))])
    fields = fields.reindex(columns=list(FIELD_TABLE_COLUMNS))
    fields = fields.astype(
        {"gt_ml_match": "Int8", "gt_class": "Int16", "n_pixels": "int64", "tie": "bool", "duplicate_id": "bool"}
    )
    counts = pd.DataFrame(np.array(hist).reshape(len(specs), len(CROP_NAMES)), columns=list(CROP_NAMES))
    return fields, counts


def as_geo(fields: pd.DataFrame, *, half_size: float = 0.0005) -> gpd.GeoDataFrame:
    """The table as a GeoDataFrame of small squares around (x, y), EPSG:4326, as the engine hands it over."""
    squares = [
        box(x - half_size, y - half_size, x + half_size, y + half_size) for x, y in zip(fields.x, fields.y, strict=True)
    ]
    return gpd.GeoDataFrame(fields, geometry=squares, crs="EPSG:4326")


def hand_example() -> list[dict]:
    """The small AOI whose per-crop table is computed by hand in test_metrics.

    Winter Wheat 6 fields (4 right, 1 -> Winter Barley, 1 -> Grassland Cultivated); Winter Barley 4 (2 right,
    1 -> Winter Wheat, 1 -> Spring Barley); Spring Barley 5 (1 right, 4 -> Winter Barley); Grain Corn 2 (both ->
    Silage Corn); Silage Corn 2 (1 right, 1 -> Grain Corn); plus an unknown label and a field without pixels.
    """
    ww, wb, sb, gc, sc = "Winter Wheat", "Winter Barley", "Spring Barley", "Grain Corn", "Silage Corn"
    rows = [
        *[field(ww, ww, conf=90.0, area_m2=40_000.0, x=2.0 + 0.01 * i) for i in range(4)],
        field(ww, wb, conf=50.0, area_m2=20_000.0, purity=0.6),
        field(ww, "Grassland Cultivated", conf=40.0, area_m2=20_000.0, purity=0.5),
        *[field(wb, wb, conf=70.0) for _ in range(2)],
        field(wb, ww, conf=60.0),
        field(wb, sb, conf=40.0, purity=0.7),
        field(sb, sb, conf=50.0),
        *[field(sb, wb, conf=65.0, purity=0.8) for _ in range(4)],
        *[field(gc, sc, conf=55.0) for _ in range(2)],
        field(sc, sc, conf=75.0),
        field(sc, gc, conf=45.0),
        field(None, ww),
        field(ww, None),
    ]
    return rows


def table_from_confusion(
    confusion: pd.DataFrame,
    *,
    seed: int = 0,
    extent: tuple[float, float, float, float] = (1.40625, 2.8125, 49.21875, 50.625),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A per-field table with one clean field per count of a GT x predicted confusion matrix (crop names).

    Vectorised (the real u0c matrix has 153,771 fields): pure fields (purity 1, 30 pixels), confidence 80 when
    right and 45 when wrong, 2 ha, uniformly spread over `extent` (left, right, bottom, top; default the u0c cell).
    """
    rng = np.random.default_rng(seed)
    m = confusion.reindex(index=list(CROP_NAMES), columns=list(CROP_NAMES), fill_value=0).to_numpy()
    gt, pred = np.nonzero(m)
    reps = m[gt, pred]
    gt, pred = np.repeat(gt, reps), np.repeat(pred, reps)
    n = gt.size
    right = gt == pred
    names = np.array(CROP_NAMES, dtype=object)
    fields = pd.DataFrame(
        {
            "field_id": [f"r{i:06d}" for i in range(n)],
            "area_m2": np.full(n, 20_000.0),
            "normalized_label": [LABELS_DICT[c][0] for c in names[gt]],
            "year": 2022,
            "majority_crop": pred.astype(float),
            "confidence_score": np.where(right, 80.0, 45.0),
            "majority_crop_label": names[pred],
            "gt_label": names[gt],
            "gt_ml_match": right.astype(int),
            "gt_class": gt,
            "label_status": "ok",
            "n_pixels": 30,
            "n_invalid": 0,
            "n_nodata": 0,
            "purity": 1.0,
            "runner_up_crop": np.nan,
            "runner_up_share": 0.0,
            "vote_margin": 1.0,
            "tie": False,
            "confidence_std": 5.0,
            "confidence_majority": np.where(right, 80.0, 45.0),
            "n_conf_invalid": 0,
            "n_pixels_shared": 0,
            "pixel_rule": "centre",
            "geometry_status": "ok",
            "duplicate_id": False,
            "x": rng.uniform(extent[0], extent[1], n),
            "y": rng.uniform(extent[2], extent[3], n),
        }
    ).astype({"gt_ml_match": "Int8", "gt_class": "Int16"})
    counts = np.zeros((n, len(CROP_NAMES)), dtype="int64")
    counts[np.arange(n), pred] = 30
    return fields[list(FIELD_TABLE_COLUMNS)], pd.DataFrame(counts, columns=list(CROP_NAMES))


def overall_of(fields: pd.DataFrame, counts: pd.DataFrame) -> dict[str, float]:
    """metrics.overall of a table, from its per-crop table and pixel confusion."""
    return metrics.overall(metrics.crop_metrics(fields, counts), metrics.pixel_confusion_matrix(fields, counts))


def aoi_summary(fields: pd.DataFrame, counts: pd.DataFrame, *, settings: DiagnosisSettings | None = None,
                seed: int = 0) -> pooled.AOISummary:
    """One AOI's summary the way a run makes it (the tail's aoi-summary task): diagnosis.pooled.summarise_diagnosis
    of the AOI's diagnosis."""
    settings = settings or DiagnosisSettings()
    return pooled.summarise_diagnosis(diagnose_run(fields, counts, settings=settings, seed=seed), settings=settings,
                                      seed=seed)
