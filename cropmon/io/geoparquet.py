"""GeoParquet fields files, read with pyarrow: GDAL's Parquet driver is not in the pyogrio/rasterio wheels (GDAL then
points at a missing DuckDB library), so cropmon reads the `geo` metadata and the row batches itself.

Checked up front (`inspect_geoparquet`): a Parquet file, GeoParquet `geo` metadata, one geometry column, a known
encoding (WKB or a GeoArrow native one), a CRS (absent = OGC:CRS84, as the specification says; null = unknown).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropmon import errors
from cropmon.io import store
from cropmon.io.paths import is_gdal_virtual

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".geoparquet", ".pq")
NATIVE_ENCODINGS = ("point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon")
DEFAULT_CRS = "OGC:CRS84"  # GeoParquet: a column without a "crs" key is in OGC:CRS84


@dataclass(frozen=True)
class GeoParquetInfo:
    """What cropmon needs from a GeoParquet file's footer (no row is read)."""

    geometry_column: str
    encoding: str  # "WKB" or a GeoArrow native encoding
    crs: str  # PROJJSON text, or OGC:CRS84
    columns: tuple[str, ...]  # attribute columns
    n_rows: int
    geometry_type: str  # "Polygon", "MultiPolygon" or "Unknown" (mixed or not declared)


def is_geoparquet(path: str | Path) -> bool:
    """A Parquet file, by its name or (local files) its first bytes."""
    text = str(path)
    if text.lower().endswith(SUFFIXES):
        return True
    if store.is_object_store(text):
        try:
            with store.open_input(text) as f:
                return f.read(4) == b"PAR1"
        except errors.InputError:
            return False  # GDAL's open says what is wrong
    if is_gdal_virtual(text) or not Path(text).is_file():
        return False
    with open(text, "rb") as f:
        return f.read(4) == b"PAR1"


def open_source(path: str | Path):
    """A file pyarrow can read: a local path, an object in a bucket (s3://, gs://, az:// or their /vsi forms), or
    the member of a local zip archive (/vsizip/ARCHIVE.zip/MEMBER)."""
    import pyarrow as pa

    text = str(path)
    if not is_gdal_virtual(text):
        return text
    if store.is_object_store(text):  # pyarrow's own S3/GCS/Azure client: ranged reads of the footer and columns
        return store.open_input(text)
    match = re.match(r"^/vsizip/+(.+?\.zip)/(.+)$", text, flags=re.IGNORECASE)
    if not match:
        raise errors.NotAVectorFile(
            "a GeoParquet file can be read from a local file, a bucket (s3://, gs://, az://) or /vsizip/ only (GDAL's"
            " Parquet driver is not in cropmon's wheels)",
            path=path,
            fix="download the file first, or hand over a GeoPackage or FlatGeobuf (`ogr2ogr -f GPKG out.gpkg IN`)",
        )
    import zipfile

    archive, member = "/" + match.group(1).lstrip("/"), match.group(2)
    try:
        with zipfile.ZipFile(archive) as zf:
            return pa.BufferReader(zf.read(member))
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise errors.MissingFile(f"cannot be read from its archive ({errors.first_line(exc)})", path=path,
                                 fix="check the archive and the file's name inside it") from exc


def inspect_geoparquet(path: str | Path) -> GeoParquetInfo:
    """Check a GeoParquet file's footer and describe it; typed errors name the file, the problem and the fix."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(open_source(path))
    except errors.InputError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError for files that are no Parquet
        raise errors.NotAVectorFile(
            f"not a readable Parquet file ({errors.first_line(exc)})", path=path,
            fix="pass the ground-truth GeoParquet, GeoPackage or another vector file (is it truncated?)",
        ) from exc
    schema = parquet.schema_arrow
    geo = _geo_metadata(path, schema.metadata or {})
    columns = geo.get("columns") or {}
    if len(columns) != 1:
        names = ", ".join(columns) or "none"
        raise errors.GeometryError(
            f"it has {len(columns)} geometry columns ({names}); cropmon needs exactly one, the field polygons",
            path=path,
            fix="keep only the polygon column, e.g. `gdf.drop(columns=[...]).to_parquet(PATH)` in geopandas",
        )
    name, column = next(iter(columns.items()))
    if name not in schema.names:
        raise errors.GeometryError(f"its geo metadata names a geometry column {name!r} that the file lacks",
                                   path=path, fix="re-export the file (e.g. GeoDataFrame.to_parquet)")
    encoding = str(column.get("encoding", ""))
    if encoding.upper() != "WKB" and encoding.lower() not in NATIVE_ENCODINGS:
        raise errors.GeometryError(f"geometry encoding {encoding!r} is not WKB or a GeoArrow encoding", path=path,
                                   fix="re-export it with WKB geometries (GeoDataFrame.to_parquet's default)")
    if "crs" in column and column["crs"] is None:
        raise errors.MissingCRS("the fields have no CRS (the GeoParquet metadata sets crs to null)", path=path,
                                fix="set one, e.g. `gdf.set_crs('EPSG:4326').to_parquet(PATH)` in geopandas")
    crs = column.get("crs", DEFAULT_CRS)
    types = column.get("geometry_types") or []
    return GeoParquetInfo(
        geometry_column=name,
        encoding="WKB" if encoding.upper() == "WKB" else encoding.lower(),
        crs=json.dumps(crs) if isinstance(crs, dict) else str(crs),
        columns=tuple(n for n in schema.names if n != name),
        n_rows=parquet.metadata.num_rows,
        geometry_type=types[0].removesuffix(" Z") if len(types) == 1 else "Unknown",
    )


def _geo_metadata(path: str | Path, metadata: dict[bytes, bytes]) -> dict[str, Any]:
    raw = metadata.get(b"geo")
    if raw is None:
        raise errors.GeometryError(
            "it is a plain Parquet file: it has no GeoParquet `geo` metadata saying which column holds the polygons",
            path=path,
            fix="write it as GeoParquet (geopandas: `GeoDataFrame.to_parquet`), or hand over a GeoPackage",
        )
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.GeometryError("its GeoParquet `geo` metadata is not valid JSON", path=path,
                                   fix="re-export the file (e.g. GeoDataFrame.to_parquet)") from exc


def iter_batches(path: str | Path, info: GeoParquetInfo, *, batch_rows: int) -> Iterator[Any]:
    """The file as pyarrow RecordBatches of `batch_rows` rows, file order: the attribute columns GDAL can store
    (nested ones are left out, with a log line) and the geometry as WKB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(open_source(path))
    kept = [f.name for f in parquet.schema_arrow if f.name == info.geometry_column or not _nested(f.type)]
    dropped = [f.name for f in parquet.schema_arrow if f.name not in kept]
    if dropped:
        log.info("%s: nested columns %s are left out (no vector format stores them)", path, ", ".join(dropped))
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=kept):
        arrays, names = [], []
        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            if name == info.geometry_column:
                array = wkb_array(array, info.encoding)
            elif pa.types.is_dictionary(array.type):
                array = array.cast(array.type.value_type)
            arrays.append(array)
            names.append(name)
        yield pa.RecordBatch.from_arrays(arrays, names=names)


def _nested(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_nested(arrow_type)


def wkb_array(array, encoding: str):
    """A geometry column as a pyarrow binary array of WKB, from WKB or a GeoArrow native encoding."""
    import pyarrow as pa
    import shapely

    if encoding == "WKB":
        return array.cast(pa.binary())
    # geopandas' own GeoArrow decoder (private, but it is what geopandas.read_parquet uses for these encodings)
    from geopandas.io._geoarrow import construct_shapely_array

    geometry = construct_shapely_array(array, f"geoarrow.{encoding}")
    return pa.array(shapely.to_wkb(np.asarray(geometry, dtype=object)), type=pa.binary())

