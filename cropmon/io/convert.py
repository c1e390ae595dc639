"""A fast local copy of a fields file that cannot be read by feature id efficiently.

Each chunk's task reads its own polygons by feature id (io.vector.FieldSource). GeoPackage answers that with one SQL
query, Shapefile and indexed FlatGeobuf by seeking to each feature; GeoJSON (GDAL parses the whole file on every
open: 1.8 s for 7,500 of 154k fields), FlatGeobuf without a spatial index (a scan per feature: minutes), GeoParquet
(no GDAL driver in the wheels) and the other formats are converted once, streamed batch by batch, into a GeoPackage
in a scratch directory, which the workers then read. The copy is named after the input's path, size and
modification time and reused while they stay the same. On a cluster, the scratch directory must be on storage every
worker sees at the same path (the pipeline's default is beside the output directory), or in a bucket
(`--scratch-dir s3://bucket/prefix`, the default when `--out` is one): the copy is then written locally, uploaded
(it appears whole or not at all), and the workers read it through GDAL's /vsis3/ (or /vsigs/, /vsiaz/).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cropmon import errors
from cropmon.io import store
from cropmon.io.paths import gdal_warnings_logged, is_gdal_virtual

log = logging.getLogger(__name__)

COPY_VERSION = 1  # part of the copy's name: bump when the copy's layout changes
SEEKABLE_DRIVERS = ("GPKG", "ESRI Shapefile", "FlatGeobuf")  # read by feature id without parsing the whole file
COPY_DRIVER = "GPKG"
COPY_LAYER = "fields"


def reads_by_id(driver: str, capabilities: dict[str, bool] | None) -> bool:
    """Whether GDAL reads a feature of this format by id without parsing the whole file (FlatGeobuf only with its
    spatial index, which is what GDAL's `random_read` capability reports)."""
    if driver == "GPKG":
        return True
    return driver in SEEKABLE_DRIVERS and bool((capabilities or {}).get("random_read"))


def default_scratch_dir() -> Path:
    """Where library calls put copies when no directory is given: a local temporary directory."""
    import tempfile

    return Path(tempfile.gettempdir()) / "cropmon-scratch"


def copy_name(path: str, layer: str) -> str:
    """`<stem>-<digest>.gpkg`: the digest covers the path, the layer and, for local files (or the local archive of
    a /vsizip/ path), size and modification time, so a changed input gets a new copy."""
    stamp = _stamp(path) or ""
    key = f"{COPY_VERSION}|{os.path.abspath(path) if not is_gdal_virtual(path) else path}|{layer}|{stamp}"
    stem = Path(path.rstrip("/")).stem or "fields"
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.gpkg"


def _stamp(path: str) -> str | None:
    """Size and modification time of the input (a local file, the local archive of a /vsizip/ path, or an object
    in a bucket), or None when they cannot be known (then a copy is never reused)."""
    stat_path = _local_file_of(path)
    if stat_path is not None:
        st = os.stat(stat_path)
        return f"{st.st_size}:{st.st_mtime_ns}"
    if store.is_object_store(path):
        found = store.info(path)
        return f"{found[0]}:{found[1]}" if found else None
    return None


def _local_file_of(path: str) -> str | None:
    if not is_gdal_virtual(path):
        return path
    if path.lower().startswith("/vsizip/") and ".zip" in path.lower():
        end = path.lower().index(".zip") + 4
        return "/" + path[len("/vsizip/"):end].lstrip("/")
    return None


def fast_copy(path: str, *, layer: str, driver: str, open_batches: Callable[[], Iterator[Any]],
              geometry_name: str | None, geometry_type: str, crs: str, scratch_dir: str | Path | None) -> Path | str:
    """The GeoPackage copy of `path` in `scratch_dir`: reused when it exists, else written from `open_batches()`
    (pyarrow RecordBatches, geometry as WKB in `geometry_name`, or in the column the Arrow schema marks as WKB)
    under a temporary name and renamed when done, so a copy is never seen half-written. A `scratch_dir` in a bucket
    gets the copy uploaded; its GDAL path (/vsis3/...) is returned."""
    if scratch_dir is not None and store.is_object_store(scratch_dir):
        return _fast_copy_to_store(path, layer=layer, driver=driver, open_batches=open_batches,
                                   geometry_name=geometry_name, geometry_type=geometry_type, crs=crs,
                                   scratch=store.object_url(scratch_dir))
    scratch = Path(scratch_dir) if scratch_dir is not None else default_scratch_dir()
    target = scratch / copy_name(path, layer)
    if target.exists() and _local_file_of(path) is not None:
        log.info("%s (%s) is read through its local GeoPackage copy %s (made earlier; reused)", path, driver, target)
        return target
    try:
        scratch.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.OutputError(f"the scratch directory cannot be created ({exc.strerror})", path=scratch,
                                 fix="choose a writable --scratch-dir") from exc
    partial = scratch / f".{target.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial.gpkg"
    started = time.perf_counter()
    try:
        _write_copy(partial, open_batches(), geometry_name=geometry_name, geometry_type=geometry_type, crs=crs)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("%s (%s) cannot be read by feature id efficiently: converted once to the GeoPackage %s in %.1f s; "
             "the workers read their polygons from it", path, driver, target, time.perf_counter() - started)
    return target


def _fast_copy_to_store(path: str, *, layer: str, driver: str, open_batches: Callable[[], Iterator[Any]],
                        geometry_name: str | None, geometry_type: str, crs: str, scratch: store.ObjectURL) -> str:
    target = scratch.join(copy_name(path, layer))
    if _stamp(path) is not None and store.info(target) is not None:
        log.info("%s (%s) is read through its GeoPackage copy %s (made earlier; reused)", path, driver, target)
        return target.gdal
    local = store.local_scratch()
    started = time.perf_counter()
    try:
        partial = local / target.name
        _write_copy(partial, open_batches(), geometry_name=geometry_name, geometry_type=geometry_type, crs=crs)
        try:
            store.upload(partial, target)
        except OSError as exc:
            raise store.problem(target, exc, what="scratch location (--scratch-dir)") from exc
    finally:
        import shutil

        shutil.rmtree(local, ignore_errors=True)
    log.info("%s (%s) cannot be read by feature id efficiently: converted once to the GeoPackage %s in %.1f s; "
             "the workers read their polygons from it", path, driver, target, time.perf_counter() - started)
    return target.gdal


def _write_copy(dst: Path, batches: Iterator[Any], *, geometry_name: str | None, geometry_type: str,
                crs: str) -> None:
    import pyarrow as pa
    import pyogrio
    from pyproj import CRS

    first = next(batches)
    geometry_name = geometry_name or wkb_column(first.schema)

    def stream() -> Iterator[Any]:
        yield first
        yield from batches

    reader = pa.RecordBatchReader.from_batches(first.schema, stream())
    with gdal_warnings_logged(dst):
        # The copy's own FID column gets a name no input uses, so an input column called "fid" stays a column.
        pyogrio.write_arrow(reader, dst, layer=COPY_LAYER, driver=COPY_DRIVER, geometry_name=geometry_name,
                            geometry_type=geometry_type, crs=CRS.from_user_input(crs).to_wkt(),
                            layer_options={"FID": "cropmon_fid"})


def wkb_column(schema: Any) -> str:
    """The name of the column an Arrow schema marks as WKB geometry (GDAL's Arrow streams do)."""
    for f in schema:
        if (f.metadata or {}).get(b"ARROW:extension:name") in (b"ogc.wkb", b"geoarrow.wkb"):
            return f.name
    raise ValueError(f"no WKB geometry column among {schema.names}")
