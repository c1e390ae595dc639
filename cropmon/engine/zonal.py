"""Per-field class histograms and confidence statistics with flox, chunk by chunk, then per-field summaries.

For each row chunk, flox groups the chunk's pixels by (field, class) and sums four channels: pixel count, count
of valid confidences, sum of confidence, sum of squared confidence. Field ids are made local to the chunk first,
so each chunk's intermediate is (fields touching the chunk x 34 classes), never (all fields x 34): memory follows
the chunk, not the AOI. Each field is then finished by the chunk that owns it (its first row), which adds the
partials of the few following chunks its pixels reach. The mode is the histogram's argmax (flox's `mode` has no
chunked version), which also gives purity and the runner-up class at no extra read. A tie between classes with the
same pixel count goes to the class whose pixels are the more confident (larger confidence sum), then to the lowest
id (`TIE_BREAKS`); the lowest-id rule alone, which rasterstats uses, favours low class ids whatever the pixels say.

Class slots follow the model's catalogue (`class_ids`, ascending): slot i = the class with id class_ids[i], slot n =
a value that is no class of the catalogue (counted, not a class; its values are tallied per chunk so the run can
name them), slot n + 1 = nodata (excluded). For the u0c model: 0..31, 32 and 33.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from cropmon.engine.mapped import MappedPixels, count_mapped
from cropmon.engine.rasterize import BlockExtras, FieldShapes, Overlaps
from cropmon.engine.settings import TIE_BREAK_CHOICES

log = logging.getLogger(__name__)

CHANNELS = ("pixels", "conf_count", "conf_sum", "conf_sq_sum")
PIXEL_RULES = np.array(["centre", "all_touched", "none"], dtype=object)  # indexed: shared strings, not copies
TIE_BREAKS = TIE_BREAK_CHOICES  # declared once, as the TieBreak type (engine/settings.py)


@dataclass(frozen=True)
class SparseSums:
    """Histogram sums as one entry per (field, class slot) that has pixels: a field covers ~2 of the 34 slots."""

    zones: np.ndarray  # int64 zone of each entry
    slots: np.ndarray  # int8 class slot of each entry
    values: np.ndarray  # (4 channels, entries) int64

    @classmethod
    def from_dense(cls, zones: np.ndarray, sums: np.ndarray) -> SparseSums:
        """From (4, fields, 34) sums of the fields `zones`; a (field, slot) without pixels has no entry."""
        field, slot = np.nonzero(sums[0])
        return cls(zones[field].astype(np.int64), slot.astype(np.int8), sums[:, field, slot])

    def add_into(self, total: np.ndarray, first: int, last: int) -> None:
        """Add the entries of zones first..last into (4, last - first + 1, 34) `total`."""
        sel = (self.zones >= first) & (self.zones <= last)
        if sel.any():  # (zone, slot) pairs are unique within one chunk's sums: fancy-index addition is exact
            total[:, self.zones[sel] - first, self.slots[sel]] += self.values[:, sel]


@dataclass(frozen=True)
class ZoneCounts:
    """A count per zone, for the zones that have one (e.g. pixels a field shares with another)."""

    zones: np.ndarray  # int64, unique
    counts: np.ndarray  # int64

    @classmethod
    def of(cls, zones: np.ndarray) -> ZoneCounts:
        unique, counts = np.unique(zones, return_counts=True)
        return cls(unique.astype(np.int64), counts.astype(np.int64))

    def add_into(self, total: np.ndarray, first: int, last: int) -> None:
        """Add the counts of zones first..last into `total` (index 0 = zone `first`)."""
        sel = (self.zones >= first) & (self.zones <= last)
        total[self.zones[sel] - first] += self.counts[sel]


@dataclass(frozen=True)
class ChunkPartial:
    """What one chunk adds to the fields touching it: centre-rule sums (shared pixels counted in every field that
    contains them), all-touched fallback sums, each field's pixels shared with another field, and the values outside
    the catalogue seen in its fields' pixels (value, pixels)."""

    sums: SparseSums
    fallback: SparseSums  # fields with no pixel centre anywhere, on their all-touched pixels
    shared: ZoneCounts
    invalid_values: np.ndarray  # (2, k) int64: raster values that are no class, and their pixels in fields
    mapped: MappedPixels | None = None  # every pixel of the chunk, inside fields or not (engine/mapped.py)


@dataclass(frozen=True)
class ClassSlots:
    """The histogram slots of a catalogue's class ids (ascending): a class's slot is its position."""

    lookup: np.ndarray  # slot of each raster value 0..max id (`invalid` where it is no class)
    n_classes: int
    identity: bool  # ids are 0..n-1 (the u0c catalogue): a value is its own slot, no lookup needed

    @classmethod
    def of(cls, class_ids: np.ndarray) -> ClassSlots:
        class_ids = np.asarray(class_ids, dtype=np.int64)
        lookup = np.full(int(class_ids.max()) + 1, len(class_ids), dtype=np.int64)
        lookup[class_ids] = np.arange(len(class_ids))
        return cls(lookup, len(class_ids), bool(np.array_equal(class_ids, np.arange(len(class_ids)))))

    @property
    def invalid(self) -> int:
        return self.n_classes

    @property
    def nodata(self) -> int:
        return self.n_classes + 1

    @property
    def n_slots(self) -> int:
        return self.n_classes + 2

    def of_pixels(self, classes: np.ndarray, confidence: np.ndarray, nodata: float | None) -> np.ndarray:
        """Histogram slot of each pixel: its class's, `invalid` for a value that is no class, `nodata`."""
        slots = classes.astype(np.int64, copy=True)
        outside = (slots < 0) | (slots >= len(self.lookup))
        if not self.identity:
            slots[outside] = 0
            slots = self.lookup[slots]
        slots[outside] = self.invalid
        if nodata is not None and not np.isnan(nodata):
            slots[(classes == nodata) | (confidence == nodata)] = self.nodata
        return slots


def invalid_value_counts(classes: np.ndarray, slots: np.ndarray, invalid: int) -> np.ndarray:
    """(2, k): the raster values that are no class among `classes`, and how many pixels hold each."""
    bad = slots == invalid
    if not bad.any():
        return np.zeros((2, 0), np.int64)
    values, counts = np.unique(classes[bad].astype(np.int64), return_counts=True)
    return np.stack([values, counts.astype(np.int64)])


def _flox_sums(values: np.ndarray, keys: np.ndarray, n_keys: int) -> np.ndarray:
    """flox: sum each row of `values` by integer key 0..n_keys-1."""
    from flox import groupby_reduce

    sums, *_ = groupby_reduce(
        values,
        keys,
        func="sum",
        expected_groups=pd.RangeIndex(n_keys),
        axis=-1,
        fill_value=0,
        dtype=np.int64,
        engine="numpy",
    )
    return sums


def _grouped_sums(classes: np.ndarray, confidence: np.ndarray, codes: np.ndarray, n_groups: int, nodata,
                  slots_of: ClassSlots) -> tuple[np.ndarray, np.ndarray]:
    """The four channels summed by (local field code, class slot). Pixels with code < 0 are ignored.

    One combined (field, slot) key, because flox factorizes a single RangeIndex faster than two `by` arrays. The
    count of valid confidences equals the pixel count unless some confidence is out of 0..100 or nodata, so
    flox sums three channels and, only when needed, counts the bad confidences in a second, small call. Also
    returns the tally of the values that are no class (`invalid_value_counts`) among the pixels kept.
    """
    keep = codes >= 0
    codes, classes, confidence = codes[keep], classes[keep], confidence[keep].astype(np.int64)
    n_slots = slots_of.n_slots
    out = np.zeros((len(CHANNELS), n_groups, n_slots), dtype=np.int64)
    if len(codes) == 0:
        return out, np.zeros((2, 0), np.int64)
    slots = slots_of.of_pixels(classes, confidence, nodata)
    invalid = invalid_value_counts(classes, slots, slots_of.invalid)
    keys = codes * n_slots + slots
    conf_ok = (confidence >= 0) & (confidence <= 100) & (slots != slots_of.nodata)
    conf = np.where(conf_ok, confidence, 0)
    sums = _flox_sums(np.stack([np.ones_like(conf), conf, conf * conf]), keys, n_groups * n_slots)
    out[0], out[2], out[3] = (s.reshape(n_groups, n_slots) for s in sums)
    out[1] = out[0]
    if not conf_ok.all():
        bad = ~conf_ok
        out[1] -= _flox_sums(np.ones((1, int(bad.sum())), np.int64), keys[bad], n_groups * n_slots)[0].reshape(
            n_groups, n_slots
        )
    return out, invalid


def chunk_partial(
    bands: np.ndarray, grid: np.ndarray, extras: BlockExtras, touching: np.ndarray, nodata: float | None,
    class_ids: np.ndarray, *, row_area_m2: np.ndarray | None = None, inside: np.ndarray | None = None,
) -> ChunkPartial:
    """Sums of one chunk. `bands` is (2, rows, cols): class then confidence; `grid` holds the zones;
    `class_ids` the catalogue's ids (ascending). The tally of values that are no class covers the pixel centres of
    the chunk's fields (the all-touched fallback pixels are left out of it).

    With `row_area_m2` (each row's pixel area), the chunk's mapped area is counted too, over all its pixels
    (`inside`: the AOI mask, None for all): engine/mapped.count_mapped."""
    slots_of = ClassSlots.of(class_ids)
    classes = bands[0].ravel()
    confidence = bands[1].ravel()
    zones = grid.ravel()
    mapped = None
    if row_area_m2 is not None:
        mapped = count_mapped(bands[0], bands[1], row_area_m2, slots_of, nodata=nodata, inside=inside)
    if len(touching) == 0:
        empty = SparseSums.from_dense(touching, np.zeros((len(CHANNELS), 0, slots_of.n_slots), dtype=np.int64))
        return ChunkPartial(empty, empty, ZoneCounts.of(np.empty(0, np.int64)), np.zeros((2, 0), np.int64), mapped)
    lo, hi = int(touching[0]), int(touching[-1])
    lookup = np.full(hi - lo + 2, -1, dtype=np.int64)  # last slot: zones outside [lo, hi] (0 = no field)
    lookup[touching - lo] = np.arange(len(touching))

    def local_codes(of_zones: np.ndarray) -> np.ndarray:
        index = of_zones.astype(np.int64) - lo
        index[(index < 0) | (index > hi - lo)] = hi - lo + 1
        return lookup[index]

    sums, invalid = _grouped_sums(classes, confidence, local_codes(zones), len(touching), nodata, slots_of)
    shared = extras.shared
    if len(shared):  # the claims on shared pixels that the grid does not hold: counted in their fields too
        other = shared.zones != zones[shared.pixels]
        pixels = shared.pixels[other]
        more, _ = _grouped_sums(classes[pixels], confidence[pixels], local_codes(shared.zones[other]),
                                len(touching), nodata, slots_of)
        sums += more

    fallback = extras.fallback
    fb_zones, fb_codes = np.unique(fallback.zones, return_inverse=True)
    fb_sums, _ = _grouped_sums(
        classes[fallback.pixels], confidence[fallback.pixels], fb_codes.astype(np.int64), len(fb_zones), nodata,
        slots_of,
    )
    return ChunkPartial(SparseSums.from_dense(touching, sums), SparseSums.from_dense(fb_zones, fb_sums),
                        ZoneCounts.of(shared.zones), invalid, mapped)


@dataclass(frozen=True)
class FieldStatistics:
    """Per-field results of the histogram sums (`summarize_histograms`), one value per field; every attribute but
    `class_counts` is the per-field table's column of the same name."""

    n_pixels: np.ndarray
    n_invalid: np.ndarray
    n_nodata: np.ndarray
    majority_crop: np.ndarray  # class id, NaN without pixels
    purity: np.ndarray
    runner_up_crop: np.ndarray
    runner_up_share: np.ndarray
    vote_margin: np.ndarray
    tie: np.ndarray
    confidence_score: np.ndarray
    confidence_std: np.ndarray
    confidence_majority: np.ndarray
    n_conf_invalid: np.ndarray
    class_counts: np.ndarray  # int32 (fields x classes) pixel histograms, in slot order

    def columns(self) -> dict[str, np.ndarray]:
        """The per-field table's columns by name (all but the histograms)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "class_counts"}


@dataclass(frozen=True)
class OwnedFields:
    """The fields a chunk owns (zones first..last), finished: their statistics and what travels with them."""

    zone: np.ndarray  # int64 field numbers in the zone grid, first..last
    statistics: FieldStatistics
    pixel_rule: np.ndarray  # per field, one of PIXEL_RULES (shared strings)
    n_pixels_shared: np.ndarray  # per field, its pixel centres inside another field too
    invalid_values: np.ndarray  # (2, values): raster value that is no class, pixels of the owning chunk holding it
    mapped: MappedPixels | None  # the owning chunk's whole map, counted once (None: no map counted)
    overlaps: Overlaps  # the owning chunk's overlapping pairs
    n_shared_pixels_in_chunk: int
    shapes: FieldShapes | None  # geometry status and point of each owned field (None: the chunk read no shapes)


def finish_owned_fields(
    first: int, last: int, partials: list[ChunkPartial], class_ids: np.ndarray, extras: BlockExtras | None = None,
    *, tie_break: str = "confidence",
) -> OwnedFields:
    """Add the partials of zones first..last (the chunk's own fields) and summarise them.

    `partials[0]` is the owning chunk's own: its tally of values outside the catalogue and its mapped area travel
    with the summary.
    `extras` (the owning chunk's rasterization) adds each field's geometry status and point, and the chunk's
    overlapping pairs (so every chunk's extras are released with its own summary).
    """
    n = max(last - first + 1, 0)
    slots_of = ClassSlots.of(class_ids)
    total = np.zeros((len(CHANNELS), n, slots_of.n_slots), dtype=np.int64)
    fallback = np.zeros_like(total)
    shared = np.zeros(n, dtype=np.int64)
    for part in partials:
        part.sums.add_into(total, first, last)
        part.fallback.add_into(fallback, first, last)
        part.shared.add_into(shared, first, last)
    has_centre = total[0].sum(axis=1) > 0
    use_fallback = ~has_centre & (fallback[0].sum(axis=1) > 0)
    total[:, use_fallback] = fallback[:, use_fallback]
    zone = np.arange(first, last + 1, dtype=np.int64)
    shapes = extras.shapes if extras is not None else None
    if shapes is not None and not np.array_equal(shapes.zones, zone):
        raise RuntimeError(f"chunk owning zones {first}..{last} read other fields ({len(shapes.zones)})")
    return OwnedFields(
        zone=zone,
        statistics=summarize_histograms(total, class_ids, tie_break=tie_break),
        pixel_rule=PIXEL_RULES[np.where(has_centre, 0, np.where(use_fallback, 1, 2))],
        n_pixels_shared=shared,
        invalid_values=partials[0].invalid_values if partials else np.zeros((2, 0), np.int64),
        mapped=partials[0].mapped if partials else None,
        overlaps=extras.overlaps if extras is not None else Overlaps.empty(),
        n_shared_pixels_in_chunk=extras.shared.n_pixels() if extras is not None else 0,
        shapes=shapes,
    )


def top_class(counts: np.ndarray, conf_sums: np.ndarray, *, tie_break: str) -> np.ndarray:
    """Per row, the slot with the most pixels; among tied slots, the larger confidence sum, then the lowest slot
    (`tie_break="confidence"`), or the lowest slot alone (`"lowest_id"`; slots follow ascending class ids). Rows
    without pixels give slot 0."""
    if tie_break == "lowest_id":
        return counts.argmax(axis=1)  # the first maximum
    if tie_break != "confidence":
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    tied = counts == counts.max(axis=1, keepdims=True)
    return np.where(tied, conf_sums, -1).argmax(axis=1)  # the first maximum among the tied: the lowest id


def summarize_histograms(total: np.ndarray, class_ids: np.ndarray, *,
                         tie_break: str = "confidence") -> FieldStatistics:
    """Per-field results from the (4, fields, n + 2) sums: majority (ties: `top_class`), purity, runner-up, means.

    Majority and runner-up are class ids (`class_ids[slot]`); the histograms stay in slot order.
    """
    class_ids = np.asarray(class_ids, dtype=np.int64)
    n_classes = len(class_ids)
    pixels = total[0]
    class_counts = pixels[:, :n_classes]
    class_conf = total[2, :, :n_classes]
    n_pixels = class_counts.sum(axis=1)
    has = n_pixels > 0
    rows = np.arange(len(n_pixels))
    majority = top_class(class_counts, class_conf, tie_break=tie_break)
    top = class_counts[rows, majority]
    rest = class_counts.copy()
    rest[rows, majority] = -1
    runner = top_class(rest, class_conf, tie_break=tie_break)
    second = np.maximum(rest[rows, runner], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_n = total[1, :, :n_classes].sum(axis=1)
        conf_sum = total[2, :, :n_classes].sum(axis=1)
        conf_sq = total[3, :, :n_classes].sum(axis=1)
        mean = conf_sum / conf_n
        std = np.sqrt(np.maximum(conf_sq / conf_n - mean**2, 0.0))
        majority_conf = total[2][rows, majority] / total[1][rows, majority]
        purity = top / n_pixels
        runner_share = second / n_pixels
    return FieldStatistics(
        n_pixels=n_pixels,
        # copies: a column view would keep the whole (4, fields, slots) sums alive while the summary waits on its
        # worker for the table's assembly
        n_invalid=pixels[:, n_classes].copy(),
        n_nodata=pixels[:, n_classes + 1].copy(),
        majority_crop=np.where(has, class_ids[majority], np.nan),
        purity=np.where(has, purity, np.nan),
        runner_up_crop=np.where(has & (second > 0), class_ids[runner], np.nan),
        runner_up_share=np.where(has, runner_share, np.nan),
        vote_margin=np.where(has, purity - runner_share, np.nan),
        tie=has & (second == top),
        confidence_score=np.where(has & (conf_n > 0), mean, np.nan),
        confidence_std=np.where(has & (conf_n > 0), std, np.nan),
        confidence_majority=np.where(has & (total[1][rows, majority] > 0), majority_conf, np.nan),
        n_conf_invalid=(total[0, :, :n_classes].sum(axis=1) - conf_n),
        class_counts=class_counts.astype(np.int32),
    )


def warm_up() -> None:
    """Run the per-chunk steps once on a 4 x 4 raster with one field (imports, first calls into flox and numpy)."""
    import pyogrio.raw  # noqa: F401  (the chunk tasks read their polygons with it)
    import shapely
    from affine import Affine

    import cropmon.engine.fields  # noqa: F401
    from cropmon.engine.rasterize import PolygonBatch, rasterize_block

    batch = PolygonBatch.from_geometries(np.array([shapely.box(0.5, -3.5, 3.5, -0.5)], dtype=object), np.array([1]))
    grid, extras = rasterize_block(batch, transform=Affine(1, 0, 0, 0, -1, 0), row_start=0, rows=4, width=4, height=4)
    bands = np.stack([np.full((4, 4), 7, np.int16), np.full((4, 4), 80, np.int16)])
    class_ids = np.arange(32)
    finish_owned_fields(1, 1, [chunk_partial(bands, grid, extras, np.array([1]), None, class_ids)], class_ids)

