"""The Dask graph of one AOI: one rasterize task, one flox partial and one summary per row chunk.

Every chunk task finds its own fields in the AOI's `FieldIndex` (made once on a worker, a dependency of every
chunk task), so the graph names no field: it stays the same size whatever the number of fields. Building it
computes nothing (tested). The client only needs the chunks' owner spans (which later chunks hold pixels of the
fields a chunk owns) to wire each summary to its partials.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cropmon.catalogue import Catalogue
from cropmon.engine.mapped import AOIMask, MappedPixels, chunk_spans, mask_inside, row_pixel_areas
from cropmon.engine.rasterize import BlockExtras, ChunkFields, FieldLayout, Overlaps, RowChunks, rasterize_chunk_fields
from cropmon.engine.scanline import Spans
from cropmon.engine.settings import TieBreak
from cropmon.engine.zonal import PIXEL_RULES, ChunkPartial, chunk_partial, finish_owned_fields
from cropmon.io import raster as raster_io
from cropmon.io import vector

log = logging.getLogger(__name__)

GEOMETRY_STATUSES = ("ok", "repaired", "multipolygon", "empty", "not_polygon", "outside")


@dataclass(frozen=True)
class FieldInputs:
    """What the client knows of one AOI's inputs before the cluster does anything: the raster's header, its
    chunking and lazy bands, the fields file's header, and how to read and score it (engine/job.field_inputs);
    the graph is built from it."""

    raster: raster_io.RasterInfo
    chunks: RowChunks
    bands: Any  # the lazy (2, y, x) class/confidence array (io/raster.open_prediction_bands)
    fields: vector.FieldsHeader
    label_column: str | None  # None: no label is read (a run without ground truth: vector.label_column_to_read)
    tie_break: TieBreak
    scratch_dir: str | None  # where a GeoPackage copy of the fields goes when their format needs one
    catalogue: Catalogue  # the model's classes
    aoi_mask: AOIMask | None = None  # the population of the mapped area and the accuracy assessment (None: all)


@dataclass(frozen=True)
class ChunkRules:
    """What every chunk task of one AOI applies: the raster's nodata, the catalogue's class ids (ascending) and
    how a tied majority is broken."""

    nodata: float | None
    class_ids: np.ndarray  # int64
    tie_break: TieBreak = "confidence"

    @classmethod
    def of(cls, inputs: FieldInputs) -> ChunkRules:
        return cls(inputs.raster.nodata, inputs.catalogue.id_array, inputs.tie_break)


@dataclass(frozen=True)
class FieldIndex:
    """Which fields each chunk reads and owns: the layout and the feature id of every zone."""

    fid_of_zone: np.ndarray  # int64 feature id of zone z at index z - 1
    layout: FieldLayout

    def chunk_fields(self, k: int) -> ChunkFields:
        zones = self.layout.touching(k)
        return ChunkFields(fids=self.fid_of_zone[zones - 1], zones=zones, owned=self.layout.owned(k))

    def owner_spans(self) -> list[tuple[int, int]]:
        """Per chunk, the chunks [k, k_last] that hold pixels of the fields it owns (small: goes to the client)."""
        return [self.layout.owner_span(k) for k in range(self.layout.chunks.n_chunks)]


def rasterize_chunk(source, index: FieldIndex, k: int, **grid) -> tuple[np.ndarray, BlockExtras]:
    """Chunk k's zone grid and extras (engine/rasterize.rasterize_chunk_fields on the chunk's own fields)."""
    return rasterize_chunk_fields(source, index.chunk_fields(k), **grid)


def chunk_partial_of(bands: np.ndarray, grid: np.ndarray, extras: BlockExtras, index: FieldIndex, k: int,
                     rules: ChunkRules, row_area_m2: np.ndarray | None = None,
                     population: Spans | None = None) -> ChunkPartial:
    """Chunk k's sums over the fields touching it and its mapped area (engine/zonal.chunk_partial); `population`:
    the AOI mask's pixel-centre spans in the chunk's rows (engine/mapped.chunk_spans; None: the whole raster)."""
    inside = None
    if population is not None:
        start, stop = index.layout.chunks.rows(k)
        inside = mask_inside(population, row_start=start, rows=stop - start, width=index.layout.chunks.width)
    return chunk_partial(bands, grid, extras, index.layout.touching(k), rules.nodata, rules.class_ids,
                         row_area_m2=row_area_m2, inside=inside)


@dataclass(frozen=True)
class ChunkSummary:
    """The fields chunk k owns, compact for the trip to the assembling worker (engine/assemble.FieldColumns)."""

    zone: np.ndarray  # int64 field numbers in the zone grid that the chunk owns
    columns: dict[str, np.ndarray]  # per-field table columns by name, per zone; pixel_rule and geometry_status
    #                                 as int8 codes into PIXEL_RULES / GEOMETRY_STATUSES
    counts_field: np.ndarray  # the class histograms as sparse triplets: int32 position in `zone`,
    counts_class: np.ndarray  # int8 class slot,
    counts_pixels: np.ndarray  # int32 pixels
    invalid_values: np.ndarray  # (2, values): raster value that is no class, pixels holding it
    overlaps: Overlaps
    n_shared_pixels_in_chunk: int
    mapped: MappedPixels | None


def finish_chunk(index: FieldIndex, k: int, partials: list[ChunkPartial], extras: BlockExtras,
                 rules: ChunkRules) -> ChunkSummary:
    """The summary of the fields chunk k owns, compact for the trip to the assembling worker: text as int8 codes
    into PIXEL_RULES / GEOMETRY_STATUSES, class histograms as sparse (field, class, pixels) triplets."""
    first, last = index.layout.owned(k)
    owned = finish_owned_fields(first, last, partials, rules.class_ids, extras, tie_break=rules.tie_break)
    counts = owned.statistics.class_counts
    field, crop = np.nonzero(counts)
    columns = owned.statistics.columns()
    columns["pixel_rule"] = _codes(owned.pixel_rule, PIXEL_RULES)
    columns["n_pixels_shared"] = owned.n_pixels_shared
    if owned.shapes is not None:
        columns["geometry_status"] = _codes(owned.shapes.status, GEOMETRY_STATUSES)
        columns["x"], columns["y"] = owned.shapes.x, owned.shapes.y
    return ChunkSummary(
        zone=owned.zone, columns=columns, counts_field=field.astype(np.int32), counts_class=crop.astype(np.int8),
        counts_pixels=counts[field, crop].astype(np.int32), invalid_values=owned.invalid_values,
        overlaps=owned.overlaps, n_shared_pixels_in_chunk=owned.n_shared_pixels_in_chunk, mapped=owned.mapped,
    )


def _codes(values: np.ndarray, names: Iterable[str]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(names)}
    return np.fromiter((lookup[v] for v in values), dtype=np.int8, count=len(values))


def field_graph(inputs: FieldInputs, source: vector.FieldSource, index: Any,
                spans: list[tuple[int, int]]) -> list:
    """One delayed summary per chunk of `inputs` (nothing is computed here). `source`: where the workers read the
    polygons; `index`: the AOI's FieldIndex or a future of it, `spans` its owner_spans(). A chunk that owns no field
    still has a summary (empty), which carries its overlapping pairs and its mapped area; the AOI mask's spans
    (engine/mapped.population_spans) restrict the mapped area when `inputs` has one."""
    import dask
    import dask.array as da

    token = uuid.uuid4().hex
    chunks, raster_crs, rules = inputs.chunks, inputs.raster.crs, ChunkRules.of(inputs)
    population = None if inputs.aoi_mask is None else inputs.aoi_mask.spans
    band_blocks = inputs.bands.data.to_delayed().ravel()
    row_areas = row_pixel_areas(chunks.transform, raster_crs, chunks.height)  # one Geod call per row: cheap
    blocks, extras = [], []
    for k in range(chunks.n_chunks):
        start, stop = chunks.rows(k)
        task = dask.delayed(rasterize_chunk, nout=2)(
            source, index, k, raster_crs=raster_crs, transform=chunks.transform, row_start=start, rows=stop - start,
            width=chunks.width, height=chunks.height, dask_key_name=f"rasterize-fields-{token}-{k}",
        )
        blocks.append(da.from_delayed(task[0], shape=(stop - start, chunks.width), dtype=np.int32))
        extras.append(task[1])
    # Unoptimised: optimising would fuse each rasterize task into its block, and the chunk's extras (the same
    # task's second output) would then rasterize the chunk a second time.
    grid_blocks = da.concatenate(blocks, axis=0).to_delayed(optimize_graph=False).ravel()
    partials = [
        dask.delayed(chunk_partial_of)(band_blocks[k], grid_blocks[k], extras[k], index, k, rules,
                                       row_areas[slice(*chunks.rows(k))],
                                       None if population is None else chunk_spans(population, *chunks.rows(k)),
                                       dask_key_name=f"chunk-partial-{token}-{k}")
        for k in range(chunks.n_chunks)
    ]
    summaries = [
        dask.delayed(finish_chunk)(index, k, partials[k0 : k1 + 1], extras[k], rules,
                                   dask_key_name=f"chunk-summary-{token}-{k}")
        for k, (k0, k1) in enumerate(spans)
    ]
    log.debug("%d chunks", chunks.n_chunks)
    return summaries
