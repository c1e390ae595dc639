"""Typed errors: every bad input says which file, what is wrong, and how to fix it.

The CLI maps `InputError` to exit code 2 and a one-line message, `ClusterError` to 3, `DiskFull` to 4 and
`OutputBusy` to 5; any other exception is an internal error (exit code 1, traceback in the log). `Terminated` is
the KeyboardInterrupt that SIGTERM raises (exit code 143), so everything that cleans up on Ctrl-C does on SIGTERM.
"""

from __future__ import annotations

import errno


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class CropmonError(Exception):
    """Base class of every error cropmon raises on purpose."""


class InputError(CropmonError):
    """A user-supplied input (file, flag, config value) cannot be used as given."""

    def __init__(self, problem: str, *, path: object | None = None, fix: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        parts = [f"{self.path}: {problem}" if self.path else problem]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))

    def __reduce__(self):
        # Raised on a Dask worker, the error travels pickled: keep its parts, not only its message.
        return _rebuild_input_error, (type(self), self.problem, self.path, self.fix)


def _rebuild_input_error(cls: type[InputError], problem: str, path: str | None, fix: str | None) -> InputError:
    return cls(problem, path=path, fix=fix)


class MissingFile(InputError):
    """The path does not exist or cannot be read."""


class NotARaster(InputError):
    """The file is not a raster GDAL can open (or is truncated / corrupted)."""


class NotAVectorFile(InputError):
    """The file is not a vector dataset GDAL can open (or is truncated / corrupted)."""


class MissingBand(InputError):
    """The raster lacks a band cropmon needs, or a band index is out of range."""


class RotatedRaster(InputError):
    """The raster's grid is rotated or sheared: cropmon needs a north-up grid."""


class BadBandType(InputError):
    """A band has a dtype cropmon cannot use (e.g. a float class band)."""


class MissingColumn(InputError):
    """The fields lack a required column."""


class NoUsableLabel(InputError):
    """The label column holds labels, but none of them is a class of the model's catalogue."""


class GeometryError(InputError):
    """The fields' geometry cannot be used as given: no geometry metadata, several geometry columns, no polygons."""


class MissingCRS(InputError):
    """The raster or the fields have no coordinate reference system."""


class NoOverlap(InputError):
    """The fields and the raster do not overlap."""


class LayerError(InputError):
    """The vector file has no usable layer, several layers and none chosen, or the chosen layer is missing."""


class EmptyInput(InputError):
    """The input holds no features / no pixels."""


class OutputError(InputError):
    """The output directory cannot be created or written."""


class ConfigError(InputError):
    """A setting (flag, config file, environment variable) is invalid."""


class NotComparable(InputError):
    """Two runs cannot be compared as given (other fields, other ground truth, a multi-AOI output ...)."""


class BadCatalogue(InputError):
    """The class list (--classes) cannot be used: bad format, a label in two classes, an id or crop given twice."""


class CatalogueMismatch(InputError):
    """The raster's class values do not fit the class list: most pixels hold values that are no class of it."""


class MissingCredentials(InputError):
    """Object storage (S3, GCS, Azure) is named but no credentials for it can be found."""


class MissingBucket(InputError):
    """The bucket (an Azure container) of an object-storage path does not exist."""


class ObjectStoreError(InputError):
    """Object storage refused or failed an access: access denied, an unreachable endpoint."""


class ClusterError(CropmonError):
    """The Dask cluster could not be reached, or lost all its workers mid-run."""


class OutputBusy(CropmonError):
    """Another run holds the output directory's lock: it is writing into the same --out."""


class DiskFull(CropmonError):
    """The file system that outputs (or a scratch copy) are written to ran out of space.

    `device` and `mount` name the file system, `free` and `total` its space in bytes (measured once the run's
    partial outputs are removed, when the run says so with `written`); `written`: what the run had written when it
    filled; `needed`: what a run of these inputs needs (the previous outputs' size); None when unknown."""

    def __init__(self, path: object, *, device: str = "?", mount: str = "?", free: int | None = None,
                 total: int | None = None, written: int | None = None, needed: int | None = None,
                 detail: str = "") -> None:
        self.path, self.device, self.mount = str(path), device, mount
        self.free, self.total, self.written, self.needed, self.detail = free, total, written, needed, detail
        where = f"{self.path}: the disk is full: {device} (mounted at {mount})"
        if free is None or not total:
            text = f"{where} has no space left"
        elif written is None:
            text = f"{where} has {size_text(free)} free of {size_text(total)}"
        else:
            text = (f"{where} filled after this run had written {size_text(written)}; with its partial outputs"
                    f" removed it has {size_text(free)} free of {size_text(total)}")
        if needed and free is not None:
            text += (f"; a run of these inputs needs about {size_text(needed)} (the previous outputs' size: they stay"
                     f" until the new ones are complete), {size_text(max(needed - free, 0))} more than is free")
        super().__init__(f"{text}. Fix: free space on {mount} or pass --out (and --scratch-dir) on another disk")

    def __reduce__(self):
        # Raised on a Dask worker, the error travels pickled: keep its parts.
        return _rebuild_disk_full, (self.path, self.device, self.mount, self.free, self.total, self.written,
                                    self.needed, self.detail)


def _rebuild_disk_full(path, device, mount, free, total, written, needed, detail) -> DiskFull:
    return DiskFull(path, device=device, mount=mount, free=free, total=total, written=written, needed=needed,
                    detail=detail)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`docker stop`, Kubernetes, systemd) was received: stop as on Ctrl-C."""


# What libraries say when a write fails for want of space: the OS (ENOSPC, EDQUOT) through Python or GDAL, and
# SQLite (GeoPackages) in its own words.
DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "database or disk is full")


def chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during (__cause__, else __context__), outermost first."""
    out: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in out):
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception in its chain, says that a file system is out of space."""
    return any(isinstance(item, DiskFull)
               or (isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT))
               or any(text in str(item).lower() for text in DISK_FULL_TEXTS) for item in chain(exc))


def size_text(n_bytes: float | None) -> str:
    """1536 -> '1.5 KiB', for messages."""
    if n_bytes is None:
        return "?"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
