"""cropmon's vectorised pixel-centre fill equals GDAL's (rasterio.features.rasterize) polygon by polygon."""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize

from cropmon.engine.rasterize import PolygonBatch
from cropmon.engine.scanline import fill, ragged_arange

TRANSFORM = Affine(0.00026949458523585647, 0, 1.40622, 0, -0.00026949458523585647, 50.62509)


def gdal_masks(geoms, height, width, transform=TRANSFORM):
    return [rasterize([(g, 1)], out_shape=(height, width), transform=transform, dtype="uint8") > 0 for g in geoms]


def our_masks(geoms, height, width, transform=TRANSFORM):
    batch = PolygonBatch.from_geometries(np.array(geoms, dtype=object), np.arange(1, len(geoms) + 1))
    spans = batch.spans(transform, height=height, width=width)
    masks = []
    for i in range(len(geoms)):
        grid, _ = fill(spans.select(spans.owner == i), batch.zones, row_start=0, rows=height, width=width)
        masks.append(grid > 0)
    return masks


def to_geo(xy: np.ndarray, transform=TRANSFORM) -> np.ndarray:
    """Pixel coordinates -> CRS coordinates."""
    return np.column_stack([transform.c + xy[:, 0] * transform.a, transform.f + xy[:, 1] * transform.e])


@st.composite
def polygons(draw, height: int, width: int):
    """Random polygons in pixel space: star-shaped (concave), with holes, multipart, on half-pixel lattices."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["star", "holed", "multi", "lattice", "box", "lattice_holed"]))
    cx, cy = rng.uniform(-3, width + 3), rng.uniform(-3, height + 3)
    if kind == "lattice":  # vertices on half-pixel steps: cuts through centres, horizontal edges on centre lines
        pts = rng.integers(-4, 2 * max(width, height) + 4, size=(rng.integers(3, 9), 2)) / 2
        geom = shapely.Polygon(pts).convex_hull.buffer(0)
        if geom.geom_type != "Polygon" or geom.is_empty:
            geom = shapely.box(cx, cy, cx + 2.5, cy + 1.5)
    elif kind == "box":
        geom = shapely.box(np.floor(cx) + 0.5, np.floor(cy) + 0.5, np.floor(cx) + 4.5, np.floor(cy) + 3.5)
    elif kind == "lattice_holed":  # edges of the ring and of its hole on centre lines, either ring orientation
        x, y = np.floor(cx) + 0.5, np.floor(cy) + 0.5
        hole = shapely.box(x + 2 + rng.integers(0, 2), y + 2, x + 5, y + 4 + rng.integers(0, 3))
        geom = shapely.box(x, y, x + 8, y + 8).difference(hole)
        if rng.random() < 0.5:
            geom = shapely.Polygon(geom.exterior.coords[::-1], [r.coords[::-1] for r in geom.interiors])
    else:
        n = rng.integers(3, 14)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.3, 8, n)
        geom = shapely.Polygon(np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)]))
        geom = shapely.make_valid(geom)
        if kind == "holed":
            geom = geom.difference(shapely.Point(cx, cy).buffer(rng.uniform(0.2, 3)))
        elif kind == "multi":
            geom = geom.union(shapely.box(cx + 10, cy - 1, cx + 13.3, cy + 2.7))
    geom = shapely.make_valid(geom)
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]
    if not parts:
        geom = shapely.box(cx, cy, cx + 2.2, cy + 2.2)
    else:
        geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return shapely.transform(geom, to_geo)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), height=st.integers(1, 30), width=st.integers(1, 30))
def test_fill_equals_gdal(data, height, width):
    geoms = [data.draw(polygons(height, width)) for _ in range(data.draw(st.integers(1, 6)))]
    for ours, theirs, geom in zip(our_masks(geoms, height, width), gdal_masks(geoms, height, width), geoms,
                                  strict=True):
        assert np.array_equal(ours, theirs), geom.wkt


def test_overlaps_go_to_the_higher_zone_and_every_claim_is_kept():
    a = shapely.transform(shapely.box(1.2, 1.2, 6.8, 6.8), to_geo)
    b = shapely.transform(shapely.box(4.2, 4.2, 9.8, 9.8), to_geo)
    batch = PolygonBatch.from_geometries(np.array([b, a, a], dtype=object), np.array([9, 4, 2]))
    grid, shared = fill(batch.spans(TRANSFORM, height=12, width=12), batch.zones, row_start=0, rows=12, width=12)
    assert (grid[4:7, 4:7] == 9).all() and (grid[1:4, 1:4] == 4).all()
    a_pixels = [r * 12 + c for r in range(1, 7) for c in range(1, 7)]
    in_block = [4 <= p // 12 < 7 and 4 <= p % 12 < 7 for p in a_pixels]
    expected = [(p, zone) for p, b in zip(a_pixels, in_block, strict=True) for zone in ([2, 4, 9] if b else [2, 4])]
    assert list(zip(shared.pixels.tolist(), shared.zones.tolist(), strict=True)) == expected
    assert shared.n_pixels() == 36
    pairs, pixels = shared.pairs()
    assert pairs.tolist() == [[2, 4], [2, 9], [4, 9]] and pixels.tolist() == [36, 9, 9]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), height=st.integers(1, 25), width=st.integers(1, 25), duplicate=st.booleans())
def test_grid_plus_shared_claims_give_every_polygon_its_own_mask(data, height, width, duplicate):
    """Whatever overlaps, each polygon's pixels in (grid + shared claims) are exactly its GDAL mask alone."""
    geoms = [data.draw(polygons(height, width)) for _ in range(data.draw(st.integers(1, 6)))]
    if duplicate:
        geoms.append(geoms[0])
    batch = PolygonBatch.from_geometries(np.array(geoms, dtype=object), np.arange(1, len(geoms) + 1))
    grid, shared = fill(batch.spans(TRANSFORM, height=height, width=width), batch.zones, row_start=0,
                        rows=height, width=width)
    for zone, alone in zip(batch.zones, gdal_masks(geoms, height, width), strict=True):
        mine = (grid.ravel() == zone)
        mine[shared.pixels[shared.zones == zone]] = True
        assert np.array_equal(mine.reshape(height, width), alone), geoms[zone - 1].wkt
    claims_per_pixel = np.bincount(shared.pixels, minlength=height * width)
    all_masks = np.sum(gdal_masks(geoms, height, width), axis=0).ravel()
    np.testing.assert_array_equal(claims_per_pixel, np.where(all_masks > 1, all_masks, 0))


def test_chunked_fill_equals_whole_fill():
    rng = np.random.default_rng(0)
    geoms = [shapely.transform(shapely.Point(*rng.uniform(0, 40, 2)).buffer(rng.uniform(1, 6)), to_geo)
             for _ in range(15)]
    batch = PolygonBatch.from_geometries(np.array(geoms, dtype=object), np.arange(1, 16))
    spans = batch.spans(TRANSFORM, height=40, width=40)
    whole, _ = fill(spans, batch.zones, row_start=0, rows=40, width=40)
    pieces = [fill(spans, batch.zones, row_start=r, rows=min(7, 40 - r), width=40)[0] for r in range(0, 40, 7)]
    assert np.array_equal(np.vstack(pieces), whole)


def test_ragged_arange():
    assert ragged_arange(np.array([2, 0, 3])).tolist() == [0, 1, 0, 1, 2]
    assert ragged_arange(np.array([], dtype=int)).tolist() == []
