"""Paths as GDAL and the OS see them: local files are checked up front, GDAL virtual paths pass through."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from cropmon import errors

log = logging.getLogger(__name__)


def is_gdal_virtual(path: str | Path) -> bool:
    """GDAL virtual file systems (/vsis3/, /vsicurl/, /vsizip/ ...) and URLs: GDAL, not the OS, opens them."""
    text = str(path)
    return text.startswith("/vsi") or "://" in text


def as_path(path: str | Path) -> str | Path:
    """A Path for a local file; GDAL virtual paths stay strings (Path would fold the '//' of a URL)."""
    return str(path) if is_gdal_virtual(path) else Path(path)


def size_bytes(path: str | Path) -> int | None:
    return None if is_gdal_virtual(path) else Path(path).stat().st_size


def require_file(path: str | Path, what: str) -> None:
    if is_gdal_virtual(path):
        return
    path = as_path(path)
    if not path.exists():
        raise errors.MissingFile(f"{what} does not exist", path=path, fix=f"check the path of the {what}")
    if path.is_dir() and path.suffix.lower() not in {".gdb", ".parquet"}:
        raise errors.MissingFile(f"{what} is a directory, not a file", path=path, fix=f"pass the {what} file itself")
    if not os.access(path, os.R_OK):
        raise errors.MissingFile(f"{what} is not readable", path=path, fix="fix its permissions")


@contextlib.contextmanager
def gdal_warnings_logged(path: Path) -> Iterator[None]:
    """Turn GDAL's warnings (which pyogrio raises as RuntimeWarning) into log lines naming the file."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        yield
    for warning in caught:
        log.warning("%s: %s", path, warning.message)
