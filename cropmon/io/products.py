"""The bytes' journey from the workers to the run's outputs: each task's files (a `Product`) renamed into a shared
staging directory, uploaded into a bucket, or carried back as bytes for the client to write.

Where the bytes go (`Destination`, `produce`): the files of a run are written by tasks on the Dask workers. When
every worker sees the client's staging directory at the same path (a local cluster; docker compose, whose workers
mount /outputs like the job), each task writes into a scratch directory inside it and renames its files into place.
On a cluster that shares no filesystem with the client, each task hands its files back as bytes and the client
pulls them in pieces of PIECE_BYTES and writes them: its memory holds one piece, whatever the file's size.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropmon import errors
from cropmon.io import paths, store

PARTS = ".parts"  # scratch directories of the tasks writing into a shared staging directory
PIECE_BYTES = 16 * 2**20
NEARLY_FULL_BYTES = 2**20  # a write that fails with less than this free failed for want of space


@dataclass(frozen=True)
class Destination:
    """Where the files a task writes go: renamed into `shared` (a staging directory every worker sees), uploaded
    under `store` (the run's prefix in a bucket: io/published.py), or, when both are None, returned as bytes for
    the client to write."""

    shared: str | None
    store: str | None = None


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
    paths.pyogrio_errors_in_this_thread()
    if destination.store:
        return _produce_into_store(write, *args, url=destination.store, **kwargs)
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
    except Exception as exc:
        # SQLite does not always say it: a GeoPackage write on a full disk can fail with "cannot rollback - no
        # transaction is active". A write that fails while its partial file leaves under NEARLY_FULL_BYTES free
        # is taken for what it almost surely is.
        try:
            fs = paths.filesystem_of(scratch)
        except OSError:
            fs = None
        if not (errors.is_disk_full(exc) or (fs is not None and fs.free < NEARLY_FULL_BYTES)):
            raise
        # Said where it happened (this worker's view of the device); the chain stays here: GDAL's errors do not
        # always unpickle on the client.
        where: dict[str, Any] = ({"device": fs.device, "mount": fs.mount, "free": fs.free, "total": fs.total}
                                 if fs else {})
        raise errors.DiskFull(destination.shared or scratch, detail=errors.first_line(exc), **where) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _produce_into_store(write: Callable[..., Any], *args: Any, url: str, **kwargs: Any) -> Product:
    """Write into a local scratch directory of this worker, then upload each file under `url` (a rerun uploads
    the same files again, over the first run's)."""
    scratch = Path(tempfile.mkdtemp(prefix="cropmon-product-"))
    try:
        write(*args, out_dir=scratch, **kwargs)
        files = {p.name: p.stat().st_size for p in sorted(scratch.iterdir()) if p.is_file()}
        target = store.object_url(url)
        for name in files:
            try:
                store.upload(scratch / name, target.join(name))
            except OSError as exc:  # raised outside the chain: pyarrow's errors pickle, but say it in one line
                raise store.problem(target.join(name), exc, what="output location") from None
        return Product(files)
    except Exception as exc:
        if errors.is_disk_full(exc):
            fs = paths.filesystem_of(scratch)
            raise errors.DiskFull(scratch, device=fs.device, mount=fs.mount, free=fs.free, total=fs.total,
                                  detail=errors.first_line(exc)) from None
        raise
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
