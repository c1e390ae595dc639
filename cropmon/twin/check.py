"""An independent reading of a written twin: per-field pixel votes straight from the files, with plain numpy.

It shares no code with the generator or with the engine. Every field counts every pixel centre inside it, whatever
its neighbours (exactextract / rasterstats semantics: a pixel in two fields counts in both), by GDAL's default
pixel-centre rule (rasterio's rasterize). Fields that share no point with each other are burnt together, so the
full twin takes a few rasterize calls per row chunk instead of one per field: shapely's STRtree finds the fields
that intersect another and a greedy colouring puts them in separate layers (any two fields sharing a pixel centre
intersect, so within a layer a pixel belongs to one field at most, and each field's pixels are exactly those it
would burn alone). Band 3 is read row chunk by row chunk; a bincount per (field, class) and an argmax give the
majority (ties go to the lowest class id); fields holding no pixel centre fall back to all-touched. Classes follow
the catalogue given (u0c by default): a raster value that is no class of it is no vote.

Per field it also reports the pixel centres shared with another field, and the pixels the field keeps when every
field is burnt into ONE zone grid in file order (later fields over earlier ones), which is what an engine with a
single zone grid sees. Tests and the fidelity benchmark use it to check the generator's design and to cross-check
the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.features
import shapely
from rasterio.transform import Affine
from rasterio.windows import Window, from_bounds

from cropmon.catalogue import U0C, Catalogue

CHUNK_ROWS = 512
CLASS_BAND, CONF_BAND = 3, 4


@dataclass
class _Tally:
    """Running per-field sums over the raster's row chunks."""

    counts: np.ndarray  # int64 (n, classes): pixel centres per (field, class position in the catalogue)
    conf_sum: np.ndarray  # float64 (n,): band-4 sum over the field's pixel centres
    shared: np.ndarray  # int64 (n,): pixel centres also inside another field
    single_grid: np.ndarray  # int64 (n,): pixels the field keeps in one zone grid burnt in file order


def field_votes(raster_path: str | Path, fields_path: str | Path, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """One row per field: field_id, normalized_label, gt_class, n_pixels, majority, purity, confidence, pixel_rule,
    n_shared_pixels, overlaps, n_single_grid_pixels, match.

    `majority` and `gt_class` are class ids of `catalogue` (-1 for a field without a valid pixel); a raster value
    that is no class of it is no vote."""
    meta, _, wkb, columns = pyogrio.raw.read(str(fields_path), return_fids=False)
    data = dict(zip(meta["fields"], columns, strict=True))
    geoms = shapely.from_wkb(wkb)
    with rasterio.open(raster_path) as src:
        tally = _tally(src, geoms, overlap_layers(geoms), catalogue)
        no_centre = np.flatnonzero(tally.counts.sum(axis=1) == 0)
        for i in no_centre:
            tally.counts[i], tally.conf_sum[i] = _all_touched_votes(src, geoms[i], catalogue)
    counts = tally.counts
    n_pixels = counts.sum(axis=1)
    gt_class = catalogue.label_classes(data["normalized_label"])
    table = pd.DataFrame(
        {
            "field_id": data["field_id"],
            "normalized_label": data["normalized_label"],
            "gt_class": gt_class,
            "n_pixels": n_pixels,
            "majority": np.where(n_pixels > 0, catalogue.id_array[counts.argmax(axis=1)], -1),
            "purity": np.divide(counts.max(axis=1), n_pixels, out=np.zeros(len(geoms)), where=n_pixels > 0),
            "confidence": np.divide(tally.conf_sum, n_pixels, out=np.full(len(geoms), np.nan), where=n_pixels > 0),
            "pixel_rule": "centre",
            "n_shared_pixels": tally.shared,
            "overlaps": tally.shared > 0,
            "n_single_grid_pixels": tally.single_grid,
        }
    )
    table.loc[no_centre, "pixel_rule"] = "all_touched"
    table["match"] = (table["majority"] == table["gt_class"]).astype("boolean").where(table["gt_class"].notna())
    return table


def overlap_layers(geoms: np.ndarray) -> np.ndarray:
    """A layer per field such that no two fields of a layer intersect (greedy colouring; most fields: layer 0)."""
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    other = left != right
    left, right = left[other], right[other]
    order = np.argsort(left, kind="stable")
    left, right = left[order], right[order]
    starts = np.searchsorted(left, np.arange(len(geoms) + 1))
    layer = np.zeros(len(geoms), dtype=np.int64)
    for i in np.unique(left):  # ascending: every neighbour with a lower index already has its layer
        neighbours = right[starts[i] : starts[i + 1]]
        taken = set(layer[neighbours[neighbours < i]].tolist())
        layer[i] = next(k for k in range(len(taken) + 1) if k not in taken)
    return layer


def _tally(src: rasterio.DatasetReader, geoms: np.ndarray, layer: np.ndarray, catalogue: Catalogue) -> _Tally:
    """Per-field counts over row chunks: one zone grid per layer and chunk, holding field index + 1."""
    n, n_classes = len(geoms), catalogue.n
    tally = _Tally(np.zeros((n, n_classes), dtype=np.int64), np.zeros(n), *np.zeros((2, n), dtype=np.int64))
    counts = tally.counts.reshape(-1)  # a view: bincounts of field * n_classes + position land in tally.counts
    bounds = shapely.bounds(geoms)
    top = np.floor((src.transform.f - bounds[:, 3]) / -src.transform.e).astype(np.int64)
    bottom = np.floor((src.transform.f - bounds[:, 1]) / -src.transform.e).astype(np.int64)
    for r0 in range(0, src.height, CHUNK_ROWS):
        window = Window(0, r0, src.width, min(CHUNK_ROWS, src.height - r0))
        cls, conf = src.read((CLASS_BAND, CONF_BAND), window=window).astype(np.int64)
        position = catalogue.positions(cls)
        reach = (top < r0 + window.height) & (bottom >= r0)
        grids = [_burn(geoms, np.flatnonzero(reach & (layer == k)), src.window_transform(window), cls.shape)
                 for k in range(int(layer.max()) + 1)]  # fmt: skip
        coverage = np.count_nonzero(np.stack(grids), axis=0)
        for grid in grids:
            inside = grid > 0
            field, votes = grid[inside] - 1, position[inside] >= 0
            counts += np.bincount(field[votes] * n_classes + position[inside][votes], minlength=n * n_classes)
            tally.conf_sum += np.bincount(field[votes], weights=conf[inside][votes], minlength=n)
            tally.shared += np.bincount(field[coverage[inside] > 1], minlength=n)
        winner = np.maximum.reduce(grids)  # burnt in file order, the field with the highest index wins a pixel
        tally.single_grid += np.bincount(winner[winner > 0] - 1, minlength=n)
    return tally


def _burn(geoms: np.ndarray, which: np.ndarray, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """int32 grid holding field index + 1 at the pixel centres of the chosen (mutually disjoint) fields."""
    if which.size == 0:
        return np.zeros(shape, dtype=np.int32)
    shapes = zip(geoms[which], (which + 1).tolist(), strict=True)
    return rasterio.features.rasterize(shapes, out_shape=shape, transform=transform, dtype="int32")


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
