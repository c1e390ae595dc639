"""Ground-truth fields made fit for rasterization: labels matched, geometries repaired, reprojected, reported.

Messy but usable input is repaired or reported, never dropped silently: every input row stays in the table with a
status, and `FieldReport` counts each case with a few examples for the log, the manifest and the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely

from cropmon import errors
from cropmon.catalogue import U0C, Catalogue
from cropmon.schema import has_field_id, text_column

log = logging.getLogger(__name__)

EXAMPLES = 5


@dataclass
class FieldReport:
    """Counts (and up to five example field ids) of every repair, drop and oddity seen in the fields."""

    n_input: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    overlapping_pairs: int = 0  # pairs of fields sharing pixel centres (found by the rasterization)
    duplicate_geometry_pairs: int = 0  # of which the two polygons are equal
    shared_pixels: int = 0  # pixels inside more than one field (each counted in every field that holds it)
    overlap_examples: list[dict[str, Any]] = field(default_factory=list)  # the pairs sharing the most pixels

    def add(self, case: str, field_ids: pd.Series | np.ndarray) -> None:
        ids = [str(v) for v in np.asarray(field_ids)]
        if ids:
            self.counts[case] = self.counts.get(case, 0) + len(ids)
            self.examples.setdefault(case, []).extend(ids[: EXAMPLES - len(self.examples.get(case, []))])

    def as_manifest(self) -> dict[str, Any]:
        return {
            "n_input": self.n_input,
            "counts": dict(sorted(self.counts.items())),
            "examples": self.examples,
            "unknown_labels": self.unknown_labels,
            "overlapping_pairs": self.overlapping_pairs,
            "duplicate_geometry_pairs": self.duplicate_geometry_pairs,
            "shared_pixels": self.shared_pixels,
            "overlap_examples": self.overlap_examples,
        }


@dataclass
class PreparedFields:
    """One row per input field (input order), its bounding box in the raster's CRS, and where its polygon is.

    The polygons themselves are read, repaired and reprojected by the tasks that rasterize them
    (`prepare_geometries`), so their status (`geometry_status`) and point (x, y) arrive with the results.
    """

    table: pd.DataFrame  # attributes + gt_class, gt_label, label_status, duplicate_id
    fids: np.ndarray  # feature id of each row in the fields file
    raster_bounds: np.ndarray  # (n, 4) bounds in the raster CRS; NaN for null geometries
    source: Any  # io.vector.FieldSource
    report: FieldReport


LABEL_STATUSES = ("ok", "variant", "unknown", "null")


def match_labels(normalized_label: pd.Series, catalogue: Catalogue = U0C) -> pd.DataFrame:
    """gt_class / gt_label / label_status for each label (case- and whitespace-insensitive alias match against
    the catalogue's aliases).

    Labels are matched once per distinct value (a real AOI has a few dozen), not once per field.
    """
    codes, uniques = pd.factorize(normalized_label, use_na_sentinel=True)
    unique_class = catalogue.label_classes(pd.Series(uniques, dtype="object")).to_numpy(dtype=float, na_value=np.nan)
    unique_exact = np.array([catalogue.is_exact_alias(v) for v in uniques], dtype=bool)
    missing = codes < 0
    safe = np.where(missing, 0, codes)
    gt_class = np.where(missing, np.nan, unique_class[safe] if len(uniques) else np.nan)
    exact = ~missing & (unique_exact[safe] if len(uniques) else False)
    known = ~np.isnan(gt_class)
    # Categoricals (one byte a field) rather than a string per field: these columns repeat a few dozen values.
    status = np.where(missing, 3, np.where(~known, 2, np.where(exact, 0, 1))).astype(np.int8)
    position = catalogue.positions(np.nan_to_num(gt_class, nan=-1))
    gt_label = np.where(known, position, catalogue.n).astype(np.int32)
    gt = pd.array(np.where(known, gt_class, 0).astype("int16"), dtype="Int16")
    gt[~known] = pd.NA
    return pd.DataFrame(
        {
            "gt_class": gt,
            "gt_label": pd.Categorical.from_codes(gt_label, categories=[*catalogue.names, ""]),
            "label_status": pd.Categorical.from_codes(status, categories=LABEL_STATUSES),
        },
        index=normalized_label.index,
    )


def repair_geometries(geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repair invalid polygons with make_valid (keeping their polygonal part) and classify every geometry.

    Returns (geometries, status) where status is ok | repaired | multipolygon | empty | not_polygon and the
    geometry is None for empty and non-polygonal input.
    """
    geometry = np.asarray(geometry, dtype=object)
    status = text_column(len(geometry), "ok")
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    type_ids = shapely.get_type_id(geometry)
    polygonal = np.isin(type_ids, [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON])
    status[~missing & ~polygonal] = "not_polygon"
    status[missing] = "empty"
    invalid = polygonal & ~missing & ~shapely.is_valid(geometry)
    if invalid.any():
        repaired = shapely.make_valid(geometry[invalid])
        repaired = np.array([_polygonal_part(g) for g in repaired], dtype=object)
        geometry = geometry.copy()
        geometry[invalid] = repaired
        status[invalid] = np.where(shapely.is_empty(repaired), "empty", "repaired")
    multi = (status == "ok") & (shapely.get_type_id(geometry) == shapely.GeometryType.MULTIPOLYGON)
    status[multi] = "multipolygon"
    usable = np.isin(status, ["ok", "repaired", "multipolygon"])
    out = np.where(usable, geometry, np.array(None, dtype=object))
    return out, status


def _polygonal_part(geom: shapely.geometry.base.BaseGeometry) -> shapely.geometry.base.BaseGeometry:
    """The polygons of a make_valid result (which may be a collection with lines and points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def prepare_geometries(geometry: np.ndarray, *, fields_crs: str, raster_crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Reproject polygons to the raster's CRS (the raster is never warped), then repair and classify them.

    Returns (geometries, status) as `repair_geometries`. Pure and deterministic: the task of every chunk a field
    touches prepares it the same way.
    """
    if len(geometry) and not same_crs(fields_crs, raster_crs):
        import geopandas as gpd

        geometry = gpd.GeoSeries(geometry, crs=fields_crs).to_crs(raster_crs).to_numpy()
    return repair_geometries(np.asarray(geometry, dtype=object))


def same_crs(a: str, b: str) -> bool:
    """The same CRS, whatever the axis order it declares (cropmon always works in x, y order: OGC:CRS84, the
    GeoParquet default, is EPSG:4326 here)."""
    from pyproj import CRS

    return a == b or CRS.from_user_input(a).equals(CRS.from_user_input(b), ignore_axis_order=True)


def field_points(geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A point inside each polygon (x, y; NaN where there is none): where the field is, for maps and blocks."""
    x, y = np.full(len(geometry), np.nan), np.full(len(geometry), np.nan)
    usable = ~shapely.is_missing(geometry)
    points = shapely.point_on_surface(geometry[usable])
    x[usable], y[usable] = shapely.get_x(points), shapely.get_y(points)
    return x, y


def reproject_bounds(bounds: np.ndarray, *, src: str, dst: str, edge_points: int = 21, batch: int = 20_000):
    """(n, 4) bounding boxes from CRS `src` to `dst`, each edge densified (like pyproj's transform_bounds)."""
    from pyproj import Transformer

    transformer = Transformer.from_crs(src, dst, always_xy=True)
    out = np.full_like(bounds, np.nan)
    t = np.linspace(0.0, 1.0, edge_points)
    for start in range(0, len(bounds), batch):
        minx, miny, maxx, maxy = (c[:, None] for c in bounds[start : start + batch].T)
        xs = np.concatenate([minx + (maxx - minx) * t, np.broadcast_to(maxx, (len(maxx), edge_points)),
                             maxx - (maxx - minx) * t, np.broadcast_to(minx, (len(minx), edge_points))], axis=1)
        ys = np.concatenate([np.broadcast_to(miny, (len(miny), edge_points)), miny + (maxy - miny) * t,
                             np.broadcast_to(maxy, (len(maxy), edge_points)), maxy - (maxy - miny) * t], axis=1)
        tx, ty = transformer.transform(xs, ys)
        with np.errstate(invalid="ignore"):
            out[start : start + batch] = np.column_stack([tx.min(1), ty.min(1), tx.max(1), ty.max(1)])
    return out


def prepare_fields(fields, *, raster_crs: str, label_column: str | None = "normalized_label",
                   catalogue: Catalogue = U0C) -> PreparedFields:
    """Match labels to the catalogue, flag duplicate ids, bring the bounding boxes into the raster's CRS (`fields`:
    vector.FieldTable). `label_column` None: no label is read (a run without ground truth): `normalized_label` is
    empty, whatever the file holds under that name.

    Geometry repair and overlaps are found later, where the polygons are read: by the rasterization.
    """
    table = fields.table
    report = FieldReport(n_input=len(table))
    if "field_id" not in table.columns:
        table["field_id"] = [f"row-{i}" for i in range(len(table))]
        report.add("field_id_missing_generated", table["field_id"].head(EXAMPLES))
    if label_column is None:
        table["normalized_label"] = pd.Series(pd.NA, index=table.index, dtype="object")
    elif label_column != "normalized_label":
        table["normalized_label"] = table[label_column]
    # A few dozen distinct labels: one byte a field instead of a string.
    table["normalized_label"] = table["normalized_label"].astype("category")
    if not len(table["normalized_label"].cat.categories):  # no label at all: text, not Arrow's null type (OGR has none)
        table["normalized_label"] = table["normalized_label"].cat.set_categories(pd.Index([], dtype="str"))

    matched = match_labels(table["normalized_label"], catalogue)
    for name in matched.columns:
        table[name] = matched[name]
    if label_column is not None:
        for case in ("unknown", "null", "variant"):
            rows = table["label_status"] == case
            report.add(f"label_{case}", table.loc[rows, "field_id"])
    unknown = table.loc[table["label_status"] == "unknown", "normalized_label"]
    report.unknown_labels = {str(k): int(v) for k, v in unknown.value_counts().items() if v > 0}
    if label_column is not None:
        require_usable_labels(table["label_status"], report.unknown_labels, label_column=label_column,
                              path=fields.table.attrs.get("source", {}).get("path"), catalogue=catalogue)

    bounds = fields.bounds
    if not same_crs(fields.source.crs, raster_crs):
        log.info("reprojecting %d fields from %s to the raster CRS %s", len(table), fields.source.crs, raster_crs)
        report.counts["reprojected_from"] = 1
        report.examples["reprojected_from"] = [crs_name(fields.source.crs)]
        bounds = reproject_bounds(bounds, src=fields.source.crs, dst=raster_crs)

    has_id = has_field_id(table["field_id"])
    duplicated = table["field_id"].duplicated(keep=False).to_numpy() & has_id
    table["duplicate_id"] = duplicated
    report.add("duplicate_field_id", table.loc[duplicated, "field_id"].drop_duplicates())
    report.add("field_id_null", [f"fid {fid}" for fid in np.asarray(fields.fids)[~has_id]])  # traceable by fid
    return PreparedFields(table=table, fids=fields.fids, raster_bounds=bounds, source=fields.source, report=report)


def require_usable_labels(status: pd.Series, unknown: dict[str, int], *, label_column: str, path: str | None,
                          catalogue: Catalogue) -> None:
    """A label column that holds labels but not one of the catalogue is a bad input (NoUsableLabel: the wrong
    column or the wrong class list), not a run without ground truth; one that holds no label at all is such a run
    (logged)."""
    usable = int(status.isin(["ok", "variant"]).sum())
    if usable:
        return
    if unknown:
        seen = ", ".join(f"{label!r} x {n:,}" for label, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:3])
        raise errors.NoUsableLabel(
            f"none of the {sum(unknown.values()):,} labels in column {label_column!r} is a class of the"
            f" {catalogue.describe()} ({seen})", path=path,
            fix="pass the model's class list with --classes FILE, the right column with --label-column, or"
            " --no-labels to analyse without ground truth")
    log.warning("column %r holds no label: the %d fields are analysed without ground truth", label_column,
                len(status))


def crs_name(crs: str) -> str:
    """A CRS as its short name (e.g. EPSG:4326), whatever form the file gave it in (WKT, PROJJSON, ...)."""
    from pyproj import CRS

    return CRS.from_user_input(crs).to_string()


def log_report(report: FieldReport) -> None:
    for case, n in sorted(report.counts.items()):
        if case != "reprojected_from":
            log.info("fields: %s = %d (e.g. %s)", case, n, ", ".join(report.examples.get(case, [])[:3]))
