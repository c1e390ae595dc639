"""The report's side-by-side window (ground truth | prediction | confidence) where the most misclassified fields
are, at the real clip's size: a few hundred polygons read by feature id and burnt as the engine burns them."""

from __future__ import annotations

import numpy as np
from affine import Affine

from cropmon.engine.fields import prepare_geometries
from cropmon.engine.job import FieldResults
from cropmon.engine.rasterize import burn_values
from cropmon.io.raster import read_raster_window
from cropmon.report.plots import MapWindow


def map_window(results: FieldResults, *, rows: int = 240, cols: int = 328) -> MapWindow | None:
    """The window of `rows` x `cols` pixels holding the most misclassified fields (or, with none, the most fields
    with pixels); None when no field has a pixel. Only the polygons whose boxes meet the window are read."""
    info = results.raster
    rows, cols = min(rows, info.height), min(cols, info.width)
    transform = Affine(*info.transform)
    table = results.table
    wrong = (table["gt_ml_match"] == 0).fillna(False).to_numpy(dtype=bool)
    pick = wrong if wrong.any() else (table["n_pixels"] > 0).to_numpy()
    if not pick.any():
        return None
    col_f, row_f = ~transform * (table["x"].to_numpy()[pick], table["y"].to_numpy()[pick])
    counts, row_edges, col_edges = np.histogram2d(
        row_f, col_f, bins=(max(1, info.height // rows), max(1, info.width // cols)),
        range=((0, info.height), (0, info.width)),
    )
    r, c = np.unravel_index(np.argmax(counts), counts.shape)
    row_off = int(min(max(row_edges[r], 0), info.height - rows))
    col_off = int(min(max(col_edges[c], 0), info.width - cols))
    bands = read_raster_window(info, row_off=row_off, col_off=col_off, height=rows, width=cols)
    window_transform = transform @ Affine.translation(col_off, row_off)
    left, top = window_transform * (0, 0)
    right, bottom = window_transform * (cols, rows)
    gt_values = table["gt_class"].to_numpy(dtype=float, na_value=np.nan)
    minx, miny, maxx, maxy = results.raster_bounds.T
    with np.errstate(invalid="ignore"):  # NaN bounds of null geometries compare False
        in_window = (maxx >= left) & (minx <= right) & (maxy >= bottom) & (miny <= top)
    known = np.flatnonzero(~np.isnan(gt_values) & in_window)
    geometry, _ = prepare_geometries(
        results.source.read_geometries(results.fids[known]), fields_crs=results.source.crs, raster_crs=info.crs
    )
    gt = burn_values(geometry, gt_values[known].astype(np.int32) + 1, transform=window_transform,
                     shape=(rows, cols)) - 1
    return MapWindow(gt_class=gt, predicted=bands[0], confidence=bands[1], extent=(left, right, bottom, top),
                     crs=info.crs, catalogue=results.catalogue)
