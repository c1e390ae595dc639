"""The run's output directory and its files: a staging directory swapped in atomically on success; the per-field
GeoPackage and GeoParquet files streamed batch by batch; JSON and CSV writers. How the files the workers write reach
the staging directory is io/products.py's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropmon import errors
from cropmon.io import paths, published, store
from cropmon.io.paths import gdal_warnings_logged
from cropmon.io.vector import FIELD_BATCH_ROWS, FieldSource

log = logging.getLogger(__name__)


@dataclass
class StagedOutput:
    """A staging directory whose content replaces `final` only when the run succeeds. `final` in a bucket: the
    run's own prefix is `remote` (io/published.py); the workers upload there, the client's files go from
    `staging`."""

    final: Path | str
    staging: Path
    written: list[str] = field(default_factory=list)
    remote: str | None = None  # the run's prefix in a bucket (s3://bucket/prefix/runs/RUN_ID)
    run_id: str | None = None

    def path(self, name: str) -> Path:
        self.written.append(name)
        return self.staging / name

    def remote_of(self, local_dir: Path) -> str | None:
        """Where the files of `local_dir` (the staging directory or a folder in it) go in the bucket, or None."""
        if self.remote is None:
            return None
        relative = Path(local_dir).relative_to(self.staging).as_posix()
        return store.object_url(self.remote).join("" if relative == "." else relative).url

    def as_manifest(self) -> dict[str, Any] | None:
        """run.json's `output` for a run into a bucket: which run this is and where its pointer is."""
        if self.remote is None:
            return None
        return {"url": str(self.final), "run_id": self.run_id, "run_url": self.remote,
                "pointer": store.object_url(str(self.final)).join(published.POINTER).url}


RESERVED_PREFIX = ".cropmon-"  # hidden entries of an output directory swapped in place: the swap leaves them alone
POOLED_FILES: tuple[str, ...] = (  # report/pooled.write_pooled's files, beside run.json: no AOI may be named so
    "crop_metrics_pooled.csv", "crop_metrics_by_aoi.csv", "aoi_overview.csv", "confusion_matrix_pooled.csv",
    "underperforming_crops_pooled.csv", "label_allocation.csv", "fields_to_label_by_aoi.csv", "f1_by_aoi.png",
    "report.md", "report.html",
)  # fmt: skip


def reserved_names() -> tuple[str, ...]:
    """Names an AOI's folder may not take inside a multi-AOI output directory: the pooled files and run.json."""
    return (*POOLED_FILES, "run.json")


def swaps_in_place(final: str | Path) -> bool:
    """Whether a run into `final` swaps its contents rather than the directory itself: when `final` is a mount
    point (a Docker volume, a tmpfs), which cannot be renamed, or sits in a directory this process cannot write."""
    final = Path(final).resolve()
    if not final.is_dir():
        return False
    return paths.is_mount_point(final) or not os.access(final.parent, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class _Layout:
    """Where the staging directory, the previous outputs during a swap and the lock of one output directory live:
    beside it (`.NAME.staging-*` ...), or inside it when its contents are swapped (`.cropmon-staging-*` ...)."""

    final: Path
    in_place: bool

    def path(self, kind: str) -> Path:
        if self.in_place:
            return self.final / f"{RESERVED_PREFIX}{kind}"
        return self.final.parent / f".{self.final.name}.{kind}"

    def new(self, kind: str) -> Path:
        return Path(f"{self.path(kind)}-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def leftovers(self, kind: str) -> list[Path]:
        base = self.path(kind)
        return sorted(base.parent.glob(f"{base.name}-*"))

    def contents(self) -> list[Path]:
        """The outputs in an in-place directory, run.json first (its presence marks a complete set)."""
        entries = [p for p in self.final.iterdir() if not p.name.startswith(RESERVED_PREFIX)]
        return sorted(entries, key=lambda p: (p.name != "run.json", p.name))


@contextlib.contextmanager
def atomic_output_dir(final: str | Path) -> Iterator[StagedOutput]:
    """Write a run's outputs into a hidden staging directory and swap it in on success.

    One run at a time per output directory: a lock (flock on `.NAME.lock`, released by the kernel when the process
    dies, so a crashed run never leaves it stuck) refuses a second run with OutputBusy. On any failure or interrupt
    (KeyboardInterrupt, SIGTERM) the staging directory is removed and the previous outputs stay as they were.

    The swap: two renames on one file system (the old directory aside, the new one in its place), so a reader sees
    the old run or the new one, never a mix; a leftover `.NAME.previous-*` from a crash between the two is restored
    by the next run. When `final` cannot be renamed (a mount point; see `swaps_in_place`) its contents are swapped
    instead, entry by entry: the old outputs move aside (run.json first), then the new ones in (run.json last),
    under a journal that the next run uses to roll back a swap cut short. A reader may then see an incomplete set
    for the moment of the swap, never files of two runs; run.json is present only when the set is complete.
    SIGINT and SIGTERM wait until the swap is done. A full disk raises DiskFull (one line: device, space).
    """
    if store.is_object_store(final):
        url, run_id = store.url_of(final), published.new_run_id()
        with published.staged_run(url, run_id, deferred=_signals_deferred) as staging:
            yield StagedOutput(final=url, staging=staging, remote=published.run_url(url, run_id), run_id=run_id)
        return
    final = Path(final).resolve()
    with contextlib.ExitStack() as stack:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            layout = _Layout(final, in_place=swaps_in_place(final))
            stack.enter_context(_locked(layout.path("lock"), final))
            _recover(layout)
            staging = layout.new("staging")
            staging.mkdir()
        except OSError as exc:
            if errors.is_disk_full(exc):
                raise _disk_full(final, exc, written=None) from exc
            raise errors.OutputError(
                f"cannot create the output directory ({exc.strerror})", path=final, fix="choose a writable --out"
            ) from exc
        staged = StagedOutput(final=final, staging=staging)
        try:
            yield staged
            with _signals_deferred():
                (_swap_contents if layout.in_place else _swap_directory)(layout, staging)
        except BaseException as exc:
            written = paths.tree_bytes(staging)
            _discard(layout, staging)
            if isinstance(exc, Exception) and errors.is_disk_full(exc):
                raise _disk_full(final, exc, written=written) from exc
            raise
        _discard(layout, staging)  # the empty staging directory of an in-place swap


def _swap_directory(layout: _Layout, staging: Path) -> None:
    final = layout.final
    previous = layout.new("previous")
    if final.exists():
        final.rename(previous)
    try:
        staging.rename(final)
    except BaseException:
        if previous.exists() and not final.exists():
            previous.rename(final)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _swap_contents(layout: _Layout, staging: Path) -> None:
    """Move the old outputs out of `final` and the new ones in, entry by entry (the directory itself stays)."""
    final, journal = layout.final, layout.path("swap.json")
    previous = layout.new("previous")
    _write_journal(journal, staging=staging.name, previous=previous.name, state="out")
    try:
        previous.mkdir()
        for entry in layout.contents():
            entry.rename(previous / entry.name)
        _write_journal(journal, staging=staging.name, previous=previous.name, state="in")
        incoming = sorted(staging.iterdir(), key=lambda p: (p.name == "run.json", p.name))
        for entry in incoming:
            entry.rename(final / entry.name)
    except BaseException:
        _roll_back(layout)
        raise
    journal.unlink()
    shutil.rmtree(previous, ignore_errors=True)


def _write_journal(journal: Path, **state: str) -> None:
    scratch = journal.with_name(journal.name + ".tmp")
    scratch.write_text(json.dumps(state))
    os.replace(scratch, journal)


def _roll_back(layout: _Layout) -> None:
    """Undo an in-place swap cut short (its journal says how far it got): the old outputs go back in place."""
    journal = layout.path("swap.json")
    try:
        state = json.loads(journal.read_text())
    except (OSError, ValueError):
        return
    previous = layout.final / state["previous"]
    if state["state"] == "in":  # the old outputs are all aside: what is in place is part of the new set
        for entry in layout.contents():  # run.json first
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    if previous.is_dir():
        for entry in sorted(previous.iterdir(), key=lambda p: (p.name == "run.json", p.name)):  # run.json last
            entry.rename(layout.final / entry.name)
        previous.rmdir()
    journal.unlink()
    log.warning("restored the outputs of an interrupted swap in %s", layout.final)


def _recover(layout: _Layout) -> None:
    """With the lock held (so no other run is live), undo what a crashed run left: its staging, a swap cut short."""
    if layout.in_place:
        _roll_back(layout)
        layout.path("swap.json.tmp").unlink(missing_ok=True)
    for leftover in [*layout.leftovers("staging"), *layout.leftovers("discard")]:
        shutil.rmtree(leftover, ignore_errors=True)
    previous = layout.leftovers("previous")
    if previous and not layout.in_place and not layout.final.exists():
        previous[-1].rename(layout.final)
        log.warning("restored the outputs of an interrupted run into %s", layout.final)
    for stale in layout.leftovers("previous"):
        shutil.rmtree(stale, ignore_errors=True)


def _discard(layout: _Layout, staging: Path) -> None:
    """Remove a staging directory. It is renamed first, so a worker task still writing into it (a remote cluster's
    task outlives the client) fails on its next path instead of recreating entries while it is removed."""
    target = layout.new("discard")
    try:
        staging.rename(target)
    except FileNotFoundError:
        return
    except OSError:
        target = staging
    for _ in range(5):
        shutil.rmtree(target, ignore_errors=True)
        if not target.exists():
            return
        time.sleep(0.2)
    log.warning("could not remove %s (something is still writing into it); the next run removes it", target)


@contextlib.contextmanager
def _locked(lock: Path, final: Path) -> Iterator[None]:
    """Hold the output directory's lock for the block, or raise OutputBusy naming the run that holds it.

    flock: the kernel releases it when the holder dies, however it dies. The lock file is removed at the end; a run
    that locked a file another run had just removed tries again with the new one."""
    import fcntl
    import socket

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            raise errors.OutputBusy(
                f"{final}: another cropmon run ({holder or 'starting'}) is writing into this output directory. "
                "Fix: wait for it to finish, or pass another --out"
            ) from None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (the swap: a few renames). The run has finished by then, so
    a signal that arrived meanwhile is logged, not raised. Only the main thread can set handlers; elsewhere this
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if caught:
            log.warning("%s arrived while the outputs were swapped in; the run had finished",
                        signal.Signals(caught[0]).name)


def _disk_full(final: Path, exc: BaseException, *, written: int | None) -> errors.DiskFull:
    """The DiskFull of a run into `final`, with the space it needs: the previous outputs' size (a run of the same
    inputs writes about as much, and the previous outputs stay until the new ones are complete)."""
    fs = paths.filesystem_of(final)
    previous = paths.tree_bytes(final, skip=lambda name: name.startswith(RESERVED_PREFIX)) if final.is_dir() else 0
    worker = next((item for item in errors.chain(exc) if isinstance(item, errors.DiskFull)), None)
    if worker is not None and worker.mount != fs.mount:  # a worker's own disk (outputs sent through the client)
        return worker
    return errors.DiskFull(final, device=fs.device, mount=fs.mount, free=fs.free, total=fs.total, written=written,
                           needed=previous or None, detail=errors.first_line(exc))


def check_writable(out_dir: str | Path) -> None:
    """Fail before any work when the output directory cannot be written (in a bucket: no credentials, no bucket,
    or a probe object that cannot be written)."""
    if store.is_object_store(out_dir):
        store.check_bucket(out_dir, writable=True)
        return
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


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """A plain (non-geo) Parquet table, without the index."""
    frame.to_parquet(path, index=False)


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
