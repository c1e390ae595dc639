"""The ground-truth fields: the file's header checked up front, attributes and bounding boxes read on the client, and
polygons read by feature id where they are used (`FieldSource`), so no process holds all of an AOI's polygons."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cropmon import errors
from cropmon.io.paths import as_path, require_file, size_bytes

log = logging.getLogger(__name__)

FIELD_BATCH_ROWS = 50_000  # polygons read at once when the outputs stream them through


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

    path = as_path(path)
    require_file(path, "fields file")
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


def field_source(path: str | Path, *, layer: str | None = None, label_column: str = "normalized_label"):
    """The fields file as the engine's tasks see it (`FieldSource`), from its header alone, checked as
    `inspect_fields` checks it: the client never reads a feature."""
    import pyogrio

    path = as_path(path)
    layer = inspect_fields(path, layer=layer, label_column=label_column)
    with gdal_warnings_logged(path):
        info = pyogrio.read_info(path, layer=layer)
    return FieldSource(str(path), layer, info["crs"], info.get("geometry_type") or "Unknown")


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

    def total_bounds(self, fids: np.ndarray) -> list[float] | None:
        """minx, miny, maxx, maxy over the features `fids` (GDAL's per-feature envelopes; None when all are null)."""
        import pyogrio

        got, bounds = pyogrio.read_bounds(self.path, layer=self.layer)
        mine = bounds[:, np.isin(got, fids)]
        if mine.shape[1] == 0 or not np.isfinite(mine).any():
            return None
        with np.errstate(invalid="ignore"):
            return [float(np.nanmin(mine[0])), float(np.nanmin(mine[1])), float(np.nanmax(mine[2])),
                    float(np.nanmax(mine[3]))]

    def iter_wkb(self, fids: np.ndarray, *, batch_rows: int) -> Iterator[np.ndarray]:
        """The WKB of `fids` (all features, file order) in batches of `batch_rows`, read sequentially; None where a
        geometry is null. WKB as OGR gives it, never parsed: the outputs copy it as it is."""
        from pyogrio.raw import read

        for start in range(0, len(fids), batch_rows):
            expected = fids[start : start + batch_rows]
            _, got, wkb, _ = read(self.path, layer=self.layer, skip_features=start, max_features=len(expected),
                                  columns=[], return_fids=True)
            if wkb is None:
                wkb = np.full(len(expected), None, dtype=object)
            if not np.array_equal(got, expected):  # sequential reads follow file order; else read by id
                import shapely

                wkb = shapely.to_wkb(self.read_geometries(expected))
            yield wkb

    def iter_geometries(self, fids: np.ndarray, *, batch_rows: int) -> Iterator[np.ndarray]:
        """The geometries of `fids` (all features, file order) in batches of `batch_rows`, read sequentially."""
        for wkb in self.iter_wkb(fids, batch_rows=batch_rows):
            yield _from_wkb(wkb)


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

    path = as_path(path)
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
    table.attrs["source"] = {"path": str(path), "layer": layer, "size_bytes": size_bytes(path)}
    source = FieldSource(str(path), layer, info["crs"], info.get("geometry_type") or "Unknown")
    return FieldTable(table=table, fids=fids, bounds=aligned, source=source)


def _unreadable_layer(path: Path, layer: str, exc: BaseException) -> errors.NotAVectorFile:
    return errors.NotAVectorFile(
        f"layer {layer!r} cannot be read ({errors.first_line(exc)})",
        path=path,
        fix="the file may be truncated or its table broken: re-export it (e.g. ogr2ogr)",
    )

