"""Suspect labels: fields whose ground-truth label disagrees with a prediction that is confident and pure.

Where the model is confident (mean band-4 confidence >= `suspect_min_confidence`) and its pixels agree (purity >=
`suspect_min_purity`, over at least `min_pixels` pixel centres), it is nearly always right: on the full twin the
labelled fields past the defaults (70, 0.9) agree with their GT in 99.90 % of cases (71,007 fields, 71 disagree;
at 60 and 0.8, 98.8 %). The defaults are the loosest floors of that grid where the model's own disagreement falls
to about 1 in 1,000: if even 1 % of the labels are wrong, and wrong labels are spread over confident fields like
the others, label errors then outnumber model errors among the suspects about ten to one. A disagreement there is
worth a look at the label before anyone trains on it (WorldCereal found most of its wheat/maize errors in bad
labels). The twin's labels are right by construction, so its suspects are model errors: the twin can show what the
floors let through, not how many label errors they catch (docs/active-learning.md, benchmarks/acquisition.py).

Each suspect comes with its spatial neighbours: the `suspect_neighbours` nearest other labelled fields (evaluable:
a GT class and a pixel) within `suspect_neighbour_km` (distances in km; lon/lat become km at the AOI's mean
latitude, as for the spatial blocks), and how many of them carry the suspect's *predicted* class as their GT label
(`neighbours_agree`): crops that cluster in farm blocks make such a neighbourhood evidence for the prediction.

Ranked by `suspect_score` = confidence / 100 x purity (how sure the model and its pixels are), then by
`neighbours_agree`, then by a seeded hash of the field id (independent of row order).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis.blocks import BlockGrid, seeded_hash
from cropmon.diagnosis.metrics import truth_and_prediction
from cropmon.diagnosis.settings import DiagnosisSettings

SUSPECT_COLUMNS: tuple[str, ...] = (
    "rank", "field_id", "gt_label", "predicted", "confidence_score", "purity", "n_pixels", "suspect_score",
    "n_neighbours", "neighbours_agree", "x", "y",
)  # fmt: skip


def neighbours_with_label(points_km: np.ndarray, labels: np.ndarray, query: np.ndarray, wanted: np.ndarray, *,
                          k: int, max_km: float) -> tuple[np.ndarray, np.ndarray]:
    """For each query row (a position in `points_km`): how many of its k nearest *other* points lie within max_km,
    and how many of those carry `wanted[row]` as their label (cKDTree: 0.4 s for 154k points, 9 neighbours)."""
    found = np.zeros(len(query), dtype=np.int64)
    agree = np.zeros(len(query), dtype=np.int64)
    if k == 0 or not len(query):
        return found, agree
    tree = cKDTree(points_km)
    _, idx = tree.query(points_km[query], k=list(range(1, k + 2)), distance_upper_bound=max_km)
    other = (idx < len(points_km)) & (idx != query[:, None])  # misses are len(points); a point is not its neighbour
    rank = np.cumsum(other, axis=1)
    other &= rank <= k  # the self match may be missing (another field at distance 0 comes first): keep k at most
    safe = np.where(other, idx, 0)
    found = other.sum(axis=1)
    agree = (other & (labels[safe] == wanted[:, None])).sum(axis=1)
    return found, agree


def suspect_labels(fields: pd.DataFrame, *, settings: DiagnosisSettings, seed: int = 0,
                   catalogue: Catalogue = U0C) -> pd.DataFrame:
    """The suspect fields, ranked (`SUSPECT_COLUMNS`; index = the fields' index; empty with the columns if none)."""
    truth, pred = truth_and_prediction(fields, catalogue)
    ev = fields.loc[truth.index, ["field_id", "confidence_score", "purity", "n_pixels", "x", "y"]]
    conf = ev["confidence_score"].astype(float)
    purity = ev["purity"].astype(float)
    suspect = ((truth != pred) & (conf >= settings.suspect_min_confidence) & (purity >= settings.suspect_min_purity)
               & (ev["n_pixels"] >= settings.min_pixels)).to_numpy()
    if not suspect.any():
        return pd.DataFrame(columns=list(SUSPECT_COLUMNS))
    x, y = ev["x"].to_numpy(float), ev["y"].to_numpy(float)
    located = np.isfinite(x) & np.isfinite(y)
    grid = BlockGrid.for_points(x, y, block_km=settings.block_km)
    points = np.column_stack([x[located] / grid.unit_x, y[located] / grid.unit_y])
    position = np.cumsum(located) - 1  # position of each located field among the points
    labels = truth.to_numpy()[located]
    asked = suspect & located
    found, agree = neighbours_with_label(points, labels, position[asked], pred.to_numpy()[asked],
                                         k=settings.suspect_neighbours, max_km=settings.suspect_neighbour_km)
    out = pd.DataFrame(
        {
            "field_id": ev["field_id"].astype(str),
            "gt_label": truth,
            "predicted": pred,
            "confidence_score": conf,
            "purity": purity,
            "n_pixels": ev["n_pixels"].astype("int64"),
            "suspect_score": conf / 100.0 * purity,
            "n_neighbours": 0,
            "neighbours_agree": 0,
            "x": x,
            "y": y,
        },
        index=ev.index,
    )
    out.loc[out.index[asked], "n_neighbours"] = found
    out.loc[out.index[asked], "neighbours_agree"] = agree
    out = out.loc[suspect].assign(_key=seeded_hash(out.loc[suspect, "field_id"], seed))
    out = out.sort_values(["suspect_score", "neighbours_agree", "_key"], ascending=[False, False, True])
    out["rank"] = np.arange(1, len(out) + 1)
    return out[list(SUSPECT_COLUMNS)]
