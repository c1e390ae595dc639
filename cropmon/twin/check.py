"""An independent reading of a written twin: per-field pixel votes straight from the files, with plain numpy.

It shares no code with the generator or with the engine: GDAL's default pixel-centre rule (rasterio's rasterize)
on the GeoPackage, band 3 read row chunk by row chunk, a bincount per (field, class) and an argmax (ties go to the
lowest class id); fields holding no pixel centre fall back to all-touched. Tests and the fidelity benchmark use it
to check the generator's design and to cross-check the engine. Classes follow the catalogue given (u0c by
default): a raster value that is no class of it is no vote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.features
import shapely
from rasterio.windows import Window, from_bounds

from cropmon.catalogue import U0C, Catalogue

CHUNK_ROWS = 512
CLASS_BAND, CONF_BAND = 3, 4


def field_votes(raster_path: str | Path, fields_path: str | Path, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """One row per field: field_id, gt_class, n_pixels, majority, purity, confidence, pixel_rule, match.

    `majority` and `gt_class` are class ids of `catalogue` (-1 for a field without a valid pixel)."""
    meta, _, wkb, columns = pyogrio.raw.read(str(fields_path), return_fids=False)
    data = dict(zip(meta["fields"], columns, strict=True))
    geoms = shapely.from_wkb(wkb)
    with rasterio.open(raster_path) as src:
        ids = rasterio.features.rasterize(
            zip(geoms, range(1, len(geoms) + 1), strict=True), out_shape=src.shape, transform=src.transform
        )
        counts, conf_sum = _votes(src, ids, len(geoms), catalogue)
        del ids
        no_centre = np.flatnonzero(counts.sum(axis=1) == 0)
        for i in no_centre:
            counts[i], conf_sum[i] = _all_touched_votes(src, geoms[i], catalogue)
    n_pixels = counts.sum(axis=1)
    majority = catalogue.id_array[counts.argmax(axis=1)]
    gt_class = catalogue.label_classes(data["normalized_label"])
    table = pd.DataFrame(
        {
            "field_id": data["field_id"],
            "normalized_label": data["normalized_label"],
            "gt_class": gt_class,
            "n_pixels": n_pixels,
            "majority": np.where(n_pixels > 0, majority, -1),
            "purity": np.divide(counts.max(axis=1), n_pixels, out=np.zeros(len(geoms)), where=n_pixels > 0),
            "confidence": np.divide(conf_sum, n_pixels, out=np.full(len(geoms), np.nan), where=n_pixels > 0),
            "pixel_rule": "centre",
        }
    )
    table.loc[no_centre, "pixel_rule"] = "all_touched"
    table["match"] = (table["majority"] == table["gt_class"]).astype("boolean").where(table["gt_class"].notna())
    return table


def _votes(src: rasterio.DatasetReader, ids: np.ndarray, n_fields: int,
           catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """Pixels per (field, class position) and the confidence sum per field over the valid votes, in row chunks."""
    n = catalogue.n
    counts = np.zeros((n_fields + 1) * n, dtype=np.int64)
    conf_sum = np.zeros(n_fields + 1)
    for r0 in range(0, src.height, CHUNK_ROWS):
        window = Window(0, r0, src.width, min(CHUNK_ROWS, src.height - r0))
        cls, conf = src.read((CLASS_BAND, CONF_BAND), window=window).astype(np.int64)
        position = catalogue.positions(cls)
        chunk_ids = ids[r0 : r0 + CHUNK_ROWS].astype(np.int64)
        inside = (chunk_ids > 0) & (position >= 0)
        counts += np.bincount(chunk_ids[inside] * n + position[inside], minlength=counts.size)
        conf_sum += np.bincount(chunk_ids[inside], weights=conf[inside], minlength=n_fields + 1)
    return counts.reshape(n_fields + 1, n)[1:], conf_sum[1:]


def _all_touched_votes(src: rasterio.DatasetReader, geom: shapely.Geometry,
                       catalogue: Catalogue) -> tuple[np.ndarray, float]:
    """Class counts and confidence sum of the pixels a field touches (for fields holding no pixel centre)."""
    window = from_bounds(*shapely.bounds(geom), transform=src.transform).round_offsets().round_lengths()
    window = Window(window.col_off - 1, window.row_off - 1, window.width + 3, window.height + 3)
    cls, conf = src.read((CLASS_BAND, CONF_BAND), window=window).astype(np.int64)
    position = catalogue.positions(cls)
    touched = rasterio.features.rasterize(
        [(geom, 1)], out_shape=cls.shape, transform=src.window_transform(window), all_touched=True
    ).astype(bool) & (position >= 0)
    return np.bincount(position[touched], minlength=catalogue.n), float(conf[touched].sum())


def agreement_by_crop(votes: pd.DataFrame, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """Per GT crop: number of fields and the share whose majority class is the GT class."""
    known = votes[votes["gt_class"].notna() & (votes["n_pixels"] > 0)]
    table = known.groupby(known["gt_class"].astype(int))["match"].agg(num_fields="size", agreement="mean")
    table.index = list(catalogue.names_of(table.index.to_numpy()))
    table.index.name = "crop"
    return table
