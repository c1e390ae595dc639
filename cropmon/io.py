"""I/O at the edges: open the prediction raster lazily, read the ground-truth fields, write outputs atomically."""

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

log = logging.getLogger(__name__)

# Pixels per chunk when --chunk-rows is not given: 256 rows of the real 5,218-pixel-wide file. A wider AOI gets
# fewer rows per chunk, so a task's memory stays the same whatever the AOI's size.
DEFAULT_CHUNK_PIXELS = 256 * 5218


@dataclass(frozen=True)
class RasterInfo:
    """What cropmon needs to know about the prediction raster, read from its header (no pixel is read)."""

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    nodata: float | None
    block_shape: tuple[int, int]  # rows, cols of the file's internal blocks (strips or tiles)
    interleave: str | None
    compression: str | None
    descriptions: tuple[str | None, ...]
    size_bytes: int | None  # None for GDAL virtual paths (/vsis3/ ...)
    class_band: int  # 1-based
    confidence_band: int  # 1-based

    def as_manifest(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "crs": self.crs,
            "shape": [self.height, self.width],
            "bands": self.count,
            "dtypes": list(dict.fromkeys(self.dtypes)),
            "transform": list(self.transform),
            "nodata": self.nodata,
            "layout": {
                "block_shape": list(self.block_shape),
                "interleave": self.interleave,
                "compression": self.compression,
            },
            "band_descriptions": list(self.descriptions),
            "class_band": self.class_band,
            "confidence_band": self.confidence_band,
        }


def is_gdal_virtual(path: str | Path) -> bool:
    """GDAL virtual file systems (/vsis3/, /vsicurl/, /vsizip/ ...) and URLs: GDAL, not the OS, opens them."""
    text = str(path)
    return text.startswith("/vsi") or "://" in text


def _as_path(path: str | Path) -> str | Path:
    """A Path for a local file; GDAL virtual paths stay strings (Path would fold the '//' of a URL)."""
    return str(path) if is_gdal_virtual(path) else Path(path)


def _size_bytes(path: str | Path) -> int | None:
    return None if is_gdal_virtual(path) else Path(path).stat().st_size


def _require_file(path: str | Path, what: str) -> None:
    if is_gdal_virtual(path):
        return
    path = _as_path(path)
    if not path.exists():
        raise errors.MissingFile(f"{what} does not exist", path=path, fix=f"check the path of the {what}")
    if path.is_dir() and path.suffix.lower() not in {".gdb", ".parquet"}:
        raise errors.MissingFile(f"{what} is a directory, not a file", path=path, fix=f"pass the {what} file itself")
    if not os.access(path, os.R_OK):
        raise errors.MissingFile(f"{what} is not readable", path=path, fix="fix its permissions")


def inspect_raster(path: str | Path, *, class_band: int = 3, confidence_band: int = 4) -> RasterInfo:
    """Validate the prediction raster's header and return its description.

    Raises typed errors for a missing/unreadable file, a file GDAL cannot open as a raster, band indexes out of
    range, a non-integer class band, and a missing CRS.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    path = _as_path(path)
    _require_file(path, "raster")
    try:
        with rasterio.open(path) as src:
            info = RasterInfo(
                path=str(path),
                width=src.width,
                height=src.height,
                count=src.count,
                dtypes=tuple(src.dtypes),
                crs=src.crs.to_string() if src.crs else "",
                transform=tuple(src.transform)[:6],
                nodata=src.nodata,
                block_shape=tuple(src.block_shapes[0]) if src.count else (1, src.width),
                interleave=src.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE"),
                compression=src.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION"),
                descriptions=tuple(src.descriptions),
                size_bytes=_size_bytes(path),
                class_band=class_band,
                confidence_band=confidence_band,
            )
    except RasterioIOError as exc:
        raise errors.NotARaster(
            f"not a readable GeoTIFF/raster ({errors.first_line(exc)})",
            path=path,
            fix="pass the prediction GeoTIFF (is the file truncated or still downloading?)",
        ) from exc
    for name, band in (("class", class_band), ("confidence", confidence_band)):
        if not 1 <= band <= info.count:
            raise errors.MissingBand(
                f"the {name} band {band} does not exist: the raster has {info.count} band(s)",
                path=path,
                fix=f"pass --{name}-band N with 1 <= N <= {info.count} (the real layout has 10 bands, class = 3,"
                " confidence = 4)",
            )
    class_dtype = np.dtype(info.dtypes[class_band - 1])
    if class_dtype.kind not in "iu":
        raise errors.BadBandType(
            f"the class band {class_band} is {class_dtype}, not an integer type",
            path=path,
            fix="pass the band holding integer class ids with --class-band",
        )
    if not info.crs:
        raise errors.MissingCRS(
            "the raster has no CRS",
            path=path,
            fix="set one, e.g. `gdal_edit.py -a_srs EPSG:4326 FILE` (the real predictions are EPSG:4326)",
        )
    return info


def chunk_rows_for(info: RasterInfo, requested: int | None) -> int:
    """Rows per chunk: a multiple of the file's block height, so each task reads whole strips/tiles once.

    By default a chunk holds about DEFAULT_CHUNK_PIXELS pixels (256 rows of the real file).
    """
    block_rows = max(1, info.block_shape[0])
    rows = requested or max(1, DEFAULT_CHUNK_PIXELS // max(info.width, 1))
    rows = max(block_rows, (rows // block_rows) * block_rows)
    log.debug("chunk rows %d (file block %s, requested %s)", rows, info.block_shape, requested)
    return min(rows, max(info.height, 1))


def open_prediction_bands(info: RasterInfo, *, chunk_rows: int):
    """The class and confidence bands as one lazy (2, y, x) xarray DataArray, chunked in full-width row bands.

    Band selection happens before chunking, so each chunk is one `read(indexes=[class, conf], window)` call:
    for a pixel-interleaved striped file the strips are read once for both bands. `lock=False` gives every read
    its own file handle, so reads run in parallel.
    """
    import rioxarray

    arr = rioxarray.open_rasterio(info.path, lock=False, cache=False, masked=False)
    arr = arr.isel(band=[info.class_band - 1, info.confidence_band - 1])
    return arr.chunk({"band": 2, "y": chunk_rows, "x": -1})


GDAL_BLOCK_CACHE_BYTES = 64 * 2**20


def return_freed_memory() -> None:
    """Let pyarrow allocate through the C allocator, which gives freed memory back to the OS.

    pandas' string columns and GDAL's Arrow reads live in Arrow memory; Arrow's own pool (mimalloc) keeps what a
    step frees, so reading the fields' attributes of a 4x AOI left ~100 MB held after the step.
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def limit_gdal_block_cache(max_bytes: int = GDAL_BLOCK_CACHE_BYTES) -> None:
    """Cap GDAL's raster block cache in this process (default: 5 % of RAM).

    cropmon reads every strip exactly once, so cached blocks are never reused; left at its default the cache
    grows with the AOI until it holds ~1.2 GB per worker on a 24 GiB machine.
    """
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(max_bytes))


def read_raster_window(info: RasterInfo, *, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
    """Class and confidence of a small window (2, h, w), for the report's map window."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(info.path) as src:
        return src.read([info.class_band, info.confidence_band], window=Window(col_off, row_off, width, height))


# ---------------------------------------------------------------------------------------------------------------
# fields


@contextlib.contextmanager
def gdal_warnings_logged(path: Path) -> Iterator[None]:
    """Turn GDAL's warnings (which pyogrio raises as RuntimeWarning) into log lines naming the file."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        yield
    for warning in caught:
        log.warning("%s: %s", path, warning.message)


def list_vector_layers(path: Path) -> list[str]:
    import pyogrio

    try:
        with gdal_warnings_logged(path):
            return [str(name) for name in pyogrio.list_layers(path)[:, 0]]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise errors.NotAVectorFile(
            f"not a readable vector file ({errors.first_line(exc)})",
            path=path,
            fix="pass the ground-truth GeoPackage (is it truncated or corrupted?)",
        ) from exc


def inspect_fields(path: str | Path, *, layer: str | None = None, label_column: str = "normalized_label") -> str:
    """Check the fields file's layer, label column and CRS from its header (no feature is read); return the layer."""
    import pyogrio

    path = _as_path(path)
    _require_file(path, "fields file")
    layer = _choose_layer(path, layer)
    try:
        with gdal_warnings_logged(path):
            info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:
        raise _unreadable_layer(path, layer, exc) from exc
    columns = [str(c) for c in info["fields"]]
    if label_column not in columns:
        raise errors.MissingColumn(
            f"label column {label_column!r} is missing; the columns are: {', '.join(columns)}",
            path=path,
            fix="name the ground-truth label column with --label-column",
        )
    if info.get("features") == 0:
        raise errors.EmptyInput(f"layer {layer!r} has no features", path=path, fix="pass a layer with field polygons")
    if not info.get("crs"):
        raise errors.MissingCRS(
            "the fields have no CRS", path=path, fix="assign one, e.g. `ogr2ogr -a_srs EPSG:4326 OUT.gpkg IN.gpkg`"
        )
    return layer


def _choose_layer(path: Path, layer: str | None) -> str:
    layers = list_vector_layers(path)
    if not layers:
        raise errors.LayerError("the file has no layer", path=path, fix="pass a vector file with a polygon layer")
    if layer is None:
        if len(layers) > 1:
            raise errors.LayerError(
                f"the file has {len(layers)} layers ({', '.join(layers[:8])}) and none was chosen",
                path=path,
                fix="choose one with --layer NAME",
            )
        return layers[0]
    if layer not in layers:
        raise errors.LayerError(
            f"layer {layer!r} does not exist (layers: {', '.join(layers[:8])})", path=path, fix="fix --layer"
        )
    return layer


@dataclass(frozen=True)
class FieldSource:
    """The fields file as the engine's tasks see it: polygons are read where they are needed, by feature id.

    No process holds all of an AOI's polygons: the client reads the attributes and bounding boxes, each chunk's
    task reads the polygons of its own fields, and outputs stream the polygons through in batches. Cheap to
    pickle (three strings), so it travels in the graph to workers, which must see the same path as the client.
    """

    path: str
    layer: str
    crs: str
    geometry_type: str = "Unknown"  # the layer's declared type, which the outputs keep

    def read_geometries(self, fids: np.ndarray) -> np.ndarray:
        """Geometries (shapely, None where null) of the features `fids`, in the order given.

        Through GDAL's Arrow stream (one SQL `fid IN (...)` filter): ~3x faster than fetching feature by
        feature, and it returns the features in file order, so they are put back in the order asked.
        """
        import shapely
        from pyogrio.raw import read_arrow

        fids = np.asarray(fids, dtype=np.int64)
        if len(fids) == 0:
            return np.empty(0, dtype=object)
        failure = None
        try:
            meta, table = read_arrow(self.path, layer=self.layer, fids=fids, columns=[], return_fids=True)
        except Exception as exc:  # runs on a worker: say which machine could not open what
            failure = errors.first_line(exc)
        if failure is not None:  # raised outside `except`: GDAL's exception, chained, would not unpickle
            import socket

            raise errors.NotAVectorFile(
                f"the polygons of {len(fids)} fields cannot be read on {socket.gethostname()} ({failure})",
                path=self.path,
                fix="every Dask worker must open the fields file at the same path as the client (shared storage, "
                "or a /vsi path such as /vsis3/...)",
            )
        got = table.column(0).to_numpy()
        position = pd.Index(got).get_indexer(fids)
        if len(got) != len(fids) or (position < 0).any():
            raise errors.NotAVectorFile(
                "the fields file changed while cropmon was reading it (feature ids differ)",
                path=self.path, fix="do not rewrite the fields file during a run",
            )
        wkb = table[meta["geometry_name"]].to_numpy(zero_copy_only=False)
        return shapely.from_wkb(wkb[position])

    def iter_geometries(self, fids: np.ndarray, *, batch_rows: int) -> Iterator[np.ndarray]:
        """The geometries of `fids` (all features, file order) in batches of `batch_rows`, read sequentially."""
        from pyogrio.raw import read

        for start in range(0, len(fids), batch_rows):
            expected = fids[start : start + batch_rows]
            _, got, wkb, _ = read(self.path, layer=self.layer, skip_features=start, max_features=len(expected),
                                  columns=[], return_fids=True)
            # Sequential reads follow file order; a driver that orders differently is read by id instead.
            yield _from_wkb(wkb) if np.array_equal(got, expected) else self.read_geometries(expected)


def _from_wkb(wkb: np.ndarray) -> np.ndarray:
    import shapely

    return shapely.from_wkb(wkb) if wkb is not None else np.full(0, None, dtype=object)


@dataclass
class FieldTable:
    """The fields' attributes (file order, no geometry), their feature ids and bounds, and where the polygons are."""

    table: pd.DataFrame
    fids: np.ndarray  # int64 feature id of each row
    bounds: np.ndarray  # (n, 4) minx, miny, maxx, maxy in the fields' CRS; NaN for null geometries
    source: FieldSource


def read_field_table(path: str | Path, *, layer: str | None = None, label_column: str = "normalized_label"):
    """Read the fields' attributes and bounding boxes (not their polygons), after checking layer, columns and CRS."""
    import pyogrio

    path = _as_path(path)
    layer = inspect_fields(path, layer=layer, label_column=label_column)
    try:
        with gdal_warnings_logged(path):
            table = pyogrio.read_dataframe(path, layer=layer, read_geometry=False, use_arrow=True, fid_as_index=True)
            info = pyogrio.read_info(path, layer=layer)
            bound_fids, bounds = pyogrio.read_bounds(path, layer=layer)
    except Exception as exc:
        raise _unreadable_layer(path, layer, exc) from exc
    if len(table) == 0:  # drivers that cannot count features up front
        raise errors.EmptyInput(f"layer {layer!r} has no features", path=path, fix="pass a layer with field polygons")
    fids = table.index.to_numpy(dtype=np.int64)
    table = table.reset_index(drop=True)
    aligned = np.full((len(fids), 4), np.nan)
    position = pd.Index(fids).get_indexer(bound_fids)  # read_bounds skips null geometries
    aligned[position[position >= 0]] = bounds.T[position >= 0]
    table.attrs["source"] = {"path": str(path), "layer": layer, "size_bytes": _size_bytes(path)}
    source = FieldSource(str(path), layer, info["crs"], info.get("geometry_type") or "Unknown")
    return FieldTable(table=table, fids=fids, bounds=aligned, source=source)


def _unreadable_layer(path: Path, layer: str, exc: BaseException) -> errors.NotAVectorFile:
    return errors.NotAVectorFile(
        f"layer {layer!r} cannot be read ({errors.first_line(exc)})",
        path=path,
        fix="the file may be truncated or its table broken: re-export it (e.g. ogr2ogr)",
    )


# ---------------------------------------------------------------------------------------------------------------
# outputs


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


FIELD_BATCH_ROWS = 50_000


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
