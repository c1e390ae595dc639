"""Typed errors: every bad input says which file, what is wrong, and how to fix it.

The CLI maps `InputError` to exit code 2 and a one-line message; any other exception is an internal error
(exit code 1, traceback in the log).
"""

from __future__ import annotations


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


class ClusterError(CropmonError):
    """The Dask cluster could not be reached, or lost all its workers mid-run."""
