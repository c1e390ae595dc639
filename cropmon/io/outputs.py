"""Outputs, written atomically: a staging directory swapped in on success; the per-field GeoPackage and GeoParquet
files streamed batch by batch; JSON and CSV writers.

Where the bytes go (`Destination`, `produce`): the files of a run are written by tasks on the Dask workers. When
every worker sees the client's staging directory at the same path (a local cluster; docker compose, whose workers
mount /outputs like the job), each task writes into a scratch directory inside it and renames its files into place.
On a cluster that shares no filesystem with the client, each task hands its files back as bytes and the client
pulls them in pieces of PIECE_BYTES and writes them: its memory holds one piece, whatever the file's size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropmon import errors
from cropmon.io.paths import gdal_warnings_logged
from cropmon.io.vector import FIELD_BATCH_ROWS, FieldSource

log = logging.getLogger(__name__)


PARTS = ".parts"  # scratch directories of the tasks writing into a shared staging directory
PIECE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Destination:
    """Where the files a task writes go: renamed into `shared` (a staging directory every worker sees), or, when
    `shared` is None, returned as bytes for the client to write."""

    shared: str | None


@dataclass(frozen=True)
class Product:
    """The files one task wrote (name -> size in bytes), and their bytes when the client has to write them."""

    files: dict[str, int]
    data: dict[str, bytes] | None = None


def produce(write: Callable[..., Any], *args: Any, destination: Destination, **kwargs: Any) -> Product:
    """Run `write(*args, out_dir=SCRATCH, **kwargs)` in a fresh scratch directory and deliver what it wrote.

    A rerun (a worker killed mid-task) writes into another scratch directory and renames the same files over the
    first run's: the outputs are the same, and a killed task's scratch is removed with PARTS before the swap.
    """
    if destination.shared:
        scratch = Path(tempfile.mkdtemp(dir=Path(destination.shared) / PARTS))  # never creates the staging dir
    else:
        scratch = Path(tempfile.mkdtemp(prefix="cropmon-product-"))
    try:
        write(*args, out_dir=scratch, **kwargs)
        files = {p.name: p.stat().st_size for p in sorted(scratch.iterdir()) if p.is_file()}
        if destination.shared:
            for name in files:
                os.replace(scratch / name, Path(destination.shared) / name)
            return Product(files)
        return Product(files, {name: (scratch / name).read_bytes() for name in files})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def product_files(product: Product) -> dict[str, int]:
    """A product's file names and sizes (what the client fetches; never the bytes)."""
    return product.files


def product_piece(product: Product, name: str, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of file `name` of a product that carries its bytes."""
    if product.data is None:
        raise ValueError(f"{name} was written into the shared staging directory, not returned")
    return product.data[name][start:stop]


def prepare_parts(staging: Path) -> None:
    """The scratch directory of the tasks that write into a shared staging directory."""
    (staging / PARTS).mkdir(exist_ok=True)


def remove_parts(staging: Path) -> None:
    """Remove the tasks' scratch (and what a killed task left in it) before the staging directory is swapped in."""
    shutil.rmtree(staging / PARTS, ignore_errors=True)


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




FIELD_FILES = ("fields.gpkg", "fields.parquet", "field_class_counts.parquet")


def write_field_outputs(
    table: pd.DataFrame,
    class_counts: pd.DataFrame,
    source: FieldSource,
    fids: np.ndarray,
    staged: StagedOutput,
    *,
    batch_rows: int = FIELD_BATCH_ROWS,
) -> None:
    """fields.gpkg (layer `fields`), fields.parquet (GeoParquet 1.0) and field_class_counts.parquet: the
    GeoPackage and the Parquet files, which a run writes in two tasks side by side."""
    write_fields_gpkg(table, source, fids, staged.path("fields.gpkg"), batch_rows=batch_rows)
    write_fields_parquet(table, class_counts, source, fids, staged.path("fields.parquet"),
                         staged.path("field_class_counts.parquet"), batch_rows=batch_rows)


def _field_batches(table: pd.DataFrame, source: FieldSource, fids: np.ndarray, *, batch_rows: int, schema=None):
    """(start, Arrow table of the attributes + WKB `geometry`) batch by batch: the input polygons (the fields' own
    CRS, their WKB copied as read) stream from `source`, so one batch of polygons is in memory at a time."""
    import pyarrow as pa

    schema = schema or pa.Schema.from_pandas(table, preserve_index=False)
    for start, wkb in zip(range(0, len(table), batch_rows), source.iter_wkb(fids, batch_rows=batch_rows),
                          strict=True):
        attrs = pa.Table.from_pandas(table.iloc[start : start + batch_rows], schema=schema, preserve_index=False)
        yield start, attrs.append_column("geometry", pa.array(wkb, pa.binary()))


def write_fields_gpkg(table: pd.DataFrame, source: FieldSource, fids: np.ndarray, path: Path, *,
                      batch_rows: int = FIELD_BATCH_ROWS) -> None:
    """fields.gpkg (layer `fields`), written in one GDAL session from a stream of Arrow batches: its spatial index
    is built once at the end (appending batch by batch would update it feature by feature)."""
    import pyarrow as pa
    import pyogrio
    from pyproj import CRS

    attr_schema = pa.Schema.from_pandas(table, preserve_index=False)
    # OGR takes plain columns: categoricals (Arrow dictionaries) go to the GeoPackage as their values.
    gpkg_schema = pa.schema(
        [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
         for f in attr_schema.append(pa.field("geometry", pa.binary()))]
    )

    def batches() -> Iterator[pa.RecordBatch]:
        for _, batch in _field_batches(table, source, fids, batch_rows=batch_rows, schema=attr_schema):
            yield from batch.cast(gpkg_schema).to_batches()

    stream = pa.RecordBatchReader.from_batches(gpkg_schema, batches())
    with gdal_warnings_logged(path):  # e.g. a line in a polygon layer
        pyogrio.write_arrow(stream, path, layer="fields", driver="GPKG", geometry_name="geometry",
                            geometry_type=source.geometry_type, crs=CRS.from_user_input(source.crs).to_wkt())


def write_fields_parquet(table: pd.DataFrame, class_counts: pd.DataFrame, source: FieldSource, fids: np.ndarray,
                         fields_path: Path, counts_path: Path, *, batch_rows: int = FIELD_BATCH_ROWS) -> None:
    """fields.parquet (GeoParquet 1.0: WKB geometry and its `geo` metadata) and field_class_counts.parquet
    (field_id + the 32 histogram columns, dense per batch: the engine keeps them sparse)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def counts_of(start: int) -> pd.DataFrame:
        part = class_counts.iloc[start : start + batch_rows]
        part = part.sparse.to_dense() if hasattr(part, "sparse") else part.copy()
        part.insert(0, "field_id", table["field_id"].iloc[start : start + batch_rows].to_numpy())
        return part

    field_schema = pa.Schema.from_pandas(table, preserve_index=False).append(pa.field("geometry", pa.binary()))
    counts_schema = pa.Schema.from_pandas(counts_of(0), preserve_index=False)
    geo = GeoParquetMetadata(source.crs)
    present = np.zeros(len(table), dtype=bool)
    with pq.ParquetWriter(fields_path, field_schema) as fields_out, \
            pq.ParquetWriter(counts_path, counts_schema) as counts_out:
        for start, batch in _field_batches(table, source, fids, batch_rows=batch_rows):
            fields_out.write_table(batch)
            present[start : start + batch_rows] = geo.add_wkb(batch.column("geometry"))
            counts_out.write_table(pa.Table.from_pandas(counts_of(start), schema=counts_schema, preserve_index=False))
        geo.bbox = source.total_bounds(fids[present])
        fields_out.add_key_value_metadata({"geo": json.dumps(geo.as_dict())})


# WKB geometry type codes (ISO; EWKB flags masked, Z/M variants folded) -> GeoParquet's geometry type names
GEOPARQUET_TYPES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
                    6: "MultiPolygon", 7: "GeometryCollection"}


def wkb_kinds(wkb) -> np.ndarray:
    """The geometry type (GEOPARQUET_TYPES code) of each WKB of an Arrow array, 0 where it is null or empty, read
    from the WKB's header without parsing the coordinates (the header: byte order, type, then the element count)."""
    import pyarrow as pa

    wkb = wkb.combine_chunks() if isinstance(wkb, pa.ChunkedArray) else wkb
    kinds = np.zeros(len(wkb), dtype=np.int64)
    if len(wkb) == 0 or wkb.null_count == len(wkb):
        return kinds
    offsets = np.frombuffer(wkb.buffers()[1], dtype=np.int32)[wkb.offset : wkb.offset + len(wkb) + 1]
    data = np.frombuffer(wkb.buffers()[2], dtype=np.uint8)
    valid = ~np.asarray(wkb.is_null()) & (np.diff(offsets) >= 9)
    start = offsets[:-1][valid].astype(np.int64)
    header = data[start[:, None] + np.arange(1, 9)].astype(np.uint32)  # type (4 bytes), count (4 bytes)
    weights = np.where((data[start] == 1)[:, None], 1 << (8 * np.arange(4)), 1 << (8 * np.arange(3, -1, -1)))
    kind = ((header[:, :4] * weights).sum(axis=1) & 0x0FFFFFFF) % 1000
    count = (header[:, 4:] * weights).sum(axis=1)
    kinds[valid] = np.where((kind == 1) | (count > 0), kind, 0)  # a point has no count (empty: NaN coordinates)
    return kinds


@dataclass
class GeoParquetMetadata:
    """The GeoParquet 1.0 `geo` metadata of a WKB geometry column, accumulated batch by batch."""

    crs: str
    types: set[int] = field(default_factory=set)
    bbox: list[float] | None = None

    def add_wkb(self, wkb) -> np.ndarray:
        """Take the types of a batch's WKB; returns which of its geometries are present (not null, not empty)."""
        kinds = wkb_kinds(wkb)
        self.types.update(np.unique(kinds[kinds > 0]).tolist())
        return kinds > 0

    def as_dict(self) -> dict[str, Any]:
        from pyproj import CRS

        names = sorted({GEOPARQUET_TYPES[t] for t in self.types if t in GEOPARQUET_TYPES})
        column: dict[str, Any] = {"encoding": "WKB", "geometry_types": names,
                                  "crs": CRS.from_user_input(self.crs).to_json_dict()}
        if self.bbox is not None and np.isfinite(self.bbox).all():
            column["bbox"] = [float(v) for v in self.bbox]
        return {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
