"""Outputs, written atomically: a staging directory swapped in on success; the per-field GeoPackage and GeoParquet
files streamed batch by batch; JSON and CSV writers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropmon import errors
from cropmon.io.paths import gdal_warnings_logged
from cropmon.io.vector import FIELD_BATCH_ROWS, FieldSource

log = logging.getLogger(__name__)


@dataclass
class StagedOutput:
    """A staging directory whose content replaces `final` only when the run succeeds."""

    final: Path
    staging: Path
    written: list[str] = field(default_factory=list)

    def path(self, name: str) -> Path:
        self.written.append(name)
        return self.staging / name


@contextlib.contextmanager
def atomic_output_dir(final: str | Path) -> Iterator[StagedOutput]:
    """Write a run's outputs into a hidden sibling directory and swap it in on success.

    On any failure or interrupt (including KeyboardInterrupt) the staging directory is removed and the previous
    outputs stay as they were. The swap is two renames on one file system; a leftover `.NAME.previous-*` from a
    crash between them is restored on the next run.
    """
    final = Path(final).resolve()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _restore_interrupted_swap(final)
        staging = final.parent / f".{final.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise errors.OutputError(
            f"cannot create the output directory ({exc.strerror})", path=final, fix="choose a writable --out"
        ) from exc
    staged = StagedOutput(final=final, staging=staging)
    try:
        yield staged
        previous = final.parent / f".{final.name}.previous-{os.getpid()}"
        if final.exists():
            final.rename(previous)
        staging.rename(final)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _restore_interrupted_swap(final: Path) -> None:
    for leftover in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    previous = sorted(final.parent.glob(f".{final.name}.previous-*"))
    if previous and not final.exists():
        previous[-1].rename(final)
        log.warning("restored the outputs of an interrupted run into %s", final)
    for stale in final.parent.glob(f".{final.name}.previous-*"):
        shutil.rmtree(stale, ignore_errors=True)


def check_writable(out_dir: str | Path) -> None:
    """Fail before any work when the output directory cannot be written."""
    out_dir = Path(out_dir).resolve()
    parent = out_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise errors.OutputError(
            f"the output directory cannot be written ({parent} is not a writable directory)",
            path=out_dir,
            fix="choose a writable --out",
        )


def write_csv(frame: pd.DataFrame, path: Path, *, decimals: int | dict[str, int] = 2, index: bool = False) -> None:
    """CSV with floats rounded like the reference (1.0 is written '1', 0.99 '0.99')."""
    frame.round(decimals).to_csv(path, index=index, float_format="%.10g")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if value is pd.NA:
        return None
    return str(value)




def write_field_outputs(
    table: pd.DataFrame,
    class_counts: pd.DataFrame,
    source: FieldSource,
    fids: np.ndarray,
    staged: StagedOutput,
    *,
    batch_rows: int = FIELD_BATCH_ROWS,
) -> None:
    """fields.gpkg (layer `fields`), fields.parquet (GeoParquet 1.0) and field_class_counts.parquet.

    The input polygons (the fields' own CRS) stream from `source` in batches of `batch_rows` rows, so writing
    holds one batch of polygons at a time, whatever the AOI's size. The GeoPackage is written in one session
    from a stream of Arrow batches (its spatial index is built once at the end: appending batch by batch would
    update it feature by feature), and each batch goes to the two Parquet files on its way.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyogrio
    import shapely
    from pyproj import CRS

    def counts_of(start: int) -> pd.DataFrame:
        """field_id + the 32 histogram columns of one batch, dense (the engine keeps them sparse)."""
        part = class_counts.iloc[start : start + batch_rows]
        part = part.sparse.to_dense() if hasattr(part, "sparse") else part.copy()
        part.insert(0, "field_id", table["field_id"].iloc[start : start + batch_rows].to_numpy())
        return part

    attr_schema = pa.Schema.from_pandas(table, preserve_index=False)
    field_schema = attr_schema.append(pa.field("geometry", pa.binary()))
    # OGR takes plain columns: categoricals (Arrow dictionaries) go to the GeoPackage as their values.
    gpkg_schema = pa.schema(
        [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in field_schema]
    )
    counts_schema = pa.Schema.from_pandas(counts_of(0), preserve_index=False)
    geo = GeoParquetMetadata(source.crs)

    def batches(fields_out, counts_out) -> Iterator[pa.RecordBatch]:
        geometries = source.iter_geometries(fids, batch_rows=batch_rows)
        for start, geometry in zip(range(0, len(table), batch_rows), geometries, strict=True):
            attrs = pa.Table.from_pandas(table.iloc[start : start + batch_rows], schema=attr_schema,
                                         preserve_index=False)
            batch = attrs.append_column("geometry", pa.array(shapely.to_wkb(geometry), pa.binary()))
            fields_out.write_table(batch)
            geo.add(geometry)
            counts_out.write_table(pa.Table.from_pandas(counts_of(start), schema=counts_schema, preserve_index=False))
            yield from batch.cast(gpkg_schema).to_batches()

    with pq.ParquetWriter(staged.path("fields.parquet"), field_schema) as fields_out, \
            pq.ParquetWriter(staged.path("field_class_counts.parquet"), counts_schema) as counts_out:
        stream = pa.RecordBatchReader.from_batches(gpkg_schema, batches(fields_out, counts_out))
        with gdal_warnings_logged(staged.staging / "fields.gpkg"):  # e.g. a line in a polygon layer
            pyogrio.write_arrow(stream, staged.path("fields.gpkg"), layer="fields", driver="GPKG",
                                geometry_name="geometry", geometry_type=source.geometry_type,
                                crs=CRS.from_user_input(source.crs).to_wkt())
        fields_out.add_key_value_metadata({"geo": json.dumps(geo.as_dict())})


# shapely's geometry type ids -> GeoParquet's geometry type names
GEOPARQUET_TYPES = {0: "Point", 1: "LineString", 2: "LineString", 3: "Polygon", 4: "MultiPoint",
                    5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}


@dataclass
class GeoParquetMetadata:
    """The GeoParquet 1.0 `geo` metadata of a WKB geometry column, accumulated batch by batch."""

    crs: str
    types: set[int] = field(default_factory=set)
    bbox: list[float] = field(default_factory=lambda: [np.inf, np.inf, -np.inf, -np.inf])

    def add(self, geometry: np.ndarray) -> None:
        import shapely

        present = geometry[~shapely.is_missing(geometry) & ~shapely.is_empty(geometry)]
        if len(present):
            self.types.update(np.unique(shapely.get_type_id(present)).tolist())
            minx, miny, maxx, maxy = shapely.total_bounds(present)
            self.bbox = [min(self.bbox[0], minx), min(self.bbox[1], miny), max(self.bbox[2], maxx),
                         max(self.bbox[3], maxy)]

    def as_dict(self) -> dict[str, Any]:
        from pyproj import CRS

        names = sorted({GEOPARQUET_TYPES[t] for t in self.types})
        column: dict[str, Any] = {"encoding": "WKB", "geometry_types": names,
                                  "crs": CRS.from_user_input(self.crs).to_json_dict()}
        if np.isfinite(self.bbox).all():
            column["bbox"] = [float(v) for v in self.bbox]
        return {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
