"""Paths as GDAL and the OS see them: local files are checked up front, GDAL virtual paths pass through."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cropmon import errors

log = logging.getLogger(__name__)


def is_gdal_virtual(path: str | Path) -> bool:
    """GDAL virtual file systems (/vsis3/, /vsicurl/, /vsizip/ ...) and URLs: GDAL, not the OS, opens them."""
    text = str(path)
    return text.startswith("/vsi") or "://" in text


def as_path(path: str | Path) -> str | Path:
    """A Path for a local file; GDAL virtual paths stay strings (Path would fold the '//' of a URL), and an
    object-storage URL becomes GDAL's path for it (s3://bucket/key -> /vsis3/bucket/key; io/store.py)."""
    from cropmon.io.store import gdal_path

    return str(gdal_path(path)) if is_gdal_virtual(path) else Path(path)


def size_bytes(path: str | Path) -> int | None:
    return None if is_gdal_virtual(path) else Path(path).stat().st_size


def require_file(path: str | Path, what: str) -> None:
    if is_gdal_virtual(path):
        from cropmon.io.store import require_credentials

        require_credentials(path)
        return
    path = Path(path)  # a local file: what as_path gives it
    if not path.exists():
        raise errors.MissingFile(f"{what} does not exist", path=path, fix=f"check the path of the {what}")
    if path.is_dir() and path.suffix.lower() not in {".gdb", ".parquet"}:
        raise errors.MissingFile(f"{what} is a directory, not a file", path=path, fix=f"pass the {what} file itself")
    if not os.access(path, os.R_OK):
        raise errors.MissingFile(f"{what} is not readable", path=path, fix="fix its permissions")


def vector_opens(path: str) -> bool:
    """Whether GDAL opens the vector file `path` in this process (a worker's check of a /vsis3/ path)."""
    import pyogrio

    try:
        pyogrio.read_info(path)
    except Exception:  # pyogrio's DataSourceError and friends: the reason is told by the run's own reading
        return False
    return True


def pyogrio_errors_in_this_thread() -> None:
    """Have pyogrio turn GDAL's messages into exceptions and warnings in this thread too.

    pyogrio registers its GDAL error handler where it is imported; in another thread (a Dask worker's task thread)
    GDAL prints its messages to stderr itself ("ERROR 1: sqlite3_exec(COMMIT) failed: database or disk is full",
    four such lines before the one-line error of a full disk) and its warnings never reach gdal_warnings_logged.
    The registration is pyogrio's own (private) function; without it nothing changes but those printed lines."""
    try:
        from pyogrio._err import _register_error_handler
    except ImportError:
        return
    _register_error_handler()


@contextlib.contextmanager
def gdal_warnings_logged(path: str | Path) -> Iterator[None]:
    """Turn GDAL's warnings (which pyogrio raises as RuntimeWarning) into log lines naming the file."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        yield
    for warning in caught:
        log.warning("%s: %s", path, warning.message)


@dataclass(frozen=True)
class Filesystem:
    """The file system holding a path: its device (e.g. /dev/sdb1, tmpfs), mount point, and space in bytes."""

    device: str
    mount: str
    free: int
    total: int


def _mounts() -> list[tuple[str, str, str]]:
    """(major:minor, mount point, source) of every mount this process sees (Linux /proc/self/mountinfo; [] else)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) >= 5 and len(extra) >= 2:
            # mountinfo escapes space, tab, newline and backslash as octal (\040 ...)
            mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            out.append((fields[2], mount, extra[1]))
    return out


def is_mount_point(path: str | Path) -> bool:
    """Whether `path` is where a file system is mounted (a Docker volume, a tmpfs, a bind mount). os.path.ismount
    misses a bind mount of a directory of the same file system; mountinfo lists it."""
    path = Path(path).resolve()
    return os.path.ismount(path) or any(mount == str(path) for _, mount, _ in _mounts())


def filesystem_of(path: str | Path) -> Filesystem:
    """The file system holding `path` (its nearest existing ancestor), for messages about space."""
    import shutil

    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    dev = os.stat(path).st_dev
    key = f"{os.major(dev)}:{os.minor(dev)}"
    candidates = [(mount, source) for k, mount, source in _mounts()
                  if k == key and (path == Path(mount) or Path(mount) in path.parents)]
    mount, device = max(candidates, key=lambda c: len(c[0])) if candidates else (str(path), f"device {key}")
    return Filesystem(device=device, mount=mount, free=usage.free, total=usage.total)


def tree_bytes(path: str | Path, *, skip: Callable[[str], bool] = lambda name: False) -> int:
    """Bytes of the files under `path` (0 when it is absent); top-level entries whose name `skip` accepts are left
    out."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size if path.is_file() else 0
    total = 0
    for entry in path.iterdir():
        if skip(entry.name):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                total += sum(p.stat().st_size for p in entry.rglob("*") if p.is_file() and not p.is_symlink())
            elif entry.is_file():
                total += entry.stat().st_size
        except OSError:  # a file removed while counting
            continue
    return total
