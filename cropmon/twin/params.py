"""Calibration constants of the u0c digital twin: figures read off the real AOI, written down as parameters.

Every number here was derived once from the real data's description (`u0c_calibration.json`,
`u0c_field_confusion_counts.csv` and the real 328 x 240 window `u0c_clip.tif` with its 7 fields); the generator
needs none of those files at run time. Design choices that are not measurements (the landscape's road network,
the background mix, ...) live next to the code that uses them and say why.
"""

from __future__ import annotations

# --- The raster grid (read off u0c_clip.tif) ---------------------------------------------------------------------
PIXEL_SIZE_DEG: float = 0.00026949458523585647
FULL_SIDE_PX: int = 5218  # the whole geohash cell u0c is ~5,218 x 5,218 pixels
CLIP_ORIGIN_DEG: tuple[float, float] = (1.9390135407719873, 49.93869411713038)  # top-left of the real clip
CLIP_OFFSET_PX: tuple[int, int] = (1977, 2547)  # (columns, rows) of the clip's origin from the cell's top-left
FULL_ORIGIN_DEG: tuple[float, float] = (
    CLIP_ORIGIN_DEG[0] - CLIP_OFFSET_PX[0] * PIXEL_SIZE_DEG,
    CLIP_ORIGIN_DEG[1] + CLIP_OFFSET_PX[1] * PIXEL_SIZE_DEG,
)
BAND_DESCRIPTIONS: tuple[str, ...] = (
    "number_of_cycles",
    "number_of_cycles_confidence",
    "crop_type_1",
    "crop_type_1_confidence",
    "plant_date_1",
    "harvest_date_1",
    "crop_type_2",
    "crop_type_2_confidence",
    "plant_date_2",
    "harvest_date_2",
)

# --- The ground truth (u0c_gt_filtered_2022) -------------------------------------------------------------------------
GT_LAYER: str = "u0c_gt_filtered_2022"
GT_YEAR: int = 2022
N_RADISH_FIELDS: int = 2  # fields labelled `radish` (in no class); kept at every scale so the trap always exists
# Overlapping polygons, measured on the real u0c file (issue 13): in ONE zone grid (all fields burnt together) ~205
# fields get no pixel. The published "170-206 fields with no pixel centre" counted those. Rasterized alone, ~138 of
# them DO hold pixel centres (median 64 px, up to 9.9 ha): they lost every pixel to overlapping polygons (exact
# duplicates of another field, with another field_id and the same or another label; fields lying inside a larger
# field). Only ~67 hold no pixel centre at all (slivers and tiny plots).
REAL_SINGLE_GRID_EMPTY_FIELDS: int = 205
REAL_COVERED_FIELDS: int = 138
REAL_NO_CENTRE_FIELDS: int = 67
NO_CENTRE_FIELDS_AT_SCALE_1: int = REAL_NO_CENTRE_FIELDS
COVERED_FIELDS_AT_SCALE_1: int = REAL_COVERED_FIELDS
# How the covered fields split (a documented choice: the real split is not published). Mostly duplicates; a field
# inside another takes at most 40 % of its container (median ~20 px). The real covered fields are large (median
# 64 px, all fields 42), so duplicates copy a field picked in proportion to its area squared: with this mix the
# covered fields' median lands at the measured 64 px, up to ~10 ha. A third of the duplicates carry another crop's
# label (a re-declaration with a changed crop: pairs of crops drawn in proportion to how often the real model
# confuses them, e.g. grain vs silage corn, winter wheat vs winter barley).
COVERED_FIELD_MIX: dict[str, float] = {"same_label_duplicate": 0.5, "other_label_duplicate": 0.25, "contained": 0.25}
# Neighbours whose polygons overlap by a strip holding pixel centres (not measured: a documented choice). The export
# is not topologically cleaned (~0.09 % of its fields are duplicates or nested), and neighbouring parcels digitised
# separately overlap far more often than whole parcels are re-declared; but a shared strip must be ~10-30 m wide to
# hold the centre of a 19 x 30 m pixel, which sub-metre digitising slivers never are. ~3 pairs per covered field:
# 400 pairs, 0.5 % of the fields.
PARTIAL_OVERLAP_PAIRS_AT_SCALE_1: int = 400
# The no-centre fields' crops (a documented choice): half are remnants of split fields, carrying the crop of the
# field they were cut from (the crop mix of all fields: mostly Winter Wheat); half are tiny plots (the crop mix of
# fields below the real p1 size, FIELD_SIZE_QUANTILES_UTM_PX[0.01], under each crop's own size distribution:
# mostly Fallow, some grass, corn and orchards).
NO_CENTRE_REMNANT_SHARE: float = 0.5
NATIVE_PIXEL_AREA_M2: float = 579.0  # ~19.3 m x 30.0 m at lat 50
# The size quantiles were counted on a UTM-warped ~25 m grid; native pixels = 0.91 x those, so one such pixel
# covers 0.91 x 579 = 527 m2 (which also puts the largest field, 186 px, at the documented ~10 ha).
UTM_PX_AREA_M2: float = 0.91 * NATIVE_PIXEL_AREA_M2
FIELD_SIZE_QUANTILES_UTM_PX: dict[float, float] = {
    0.01: 4.0,
    0.05: 6.0,
    0.10: 10.0,
    0.25: 21.0,
    0.50: 46.0,
    0.75: 86.0,
    0.90: 126.0,
    0.95: 147.0,
    0.99: 168.0,
    1.00: 186.0,
}
MAX_FIELD_AREA_M2: float = FIELD_SIZE_QUANTILES_UTM_PX[1.00] * UTM_PX_AREA_M2  # GT is filtered at ~10 ha

# Median pixels per field per crop (same ~25 m grid); the catalogue's crops absent from GT have no entry.
MEDIAN_PX_UTM: dict[str, float] = {
    "Clover": 28.0, "Alfalfa": 28.0, "Ryegrass": 21.0, "Winter Barley": 51.0, "Spring Barley": 38.0,
    "Winter Wheat": 54.0, "Triticale": 48.0, "Winter Rye": 24.0, "Spring Rye": 13.0, "Spring Wheat": 41.0,
    "Millet": 6.0, "Sorghum": 18.0, "Spring Oats": 18.0, "Winter Oats": 37.0, "Sunflowers": 53.0, "Flax": 69.0,
    "Canola": 56.0, "Grain Corn": 32.0, "Silage Corn": 39.0, "Potatoes": 63.0, "Sugarbeets": 63.0,
    "Soybeans": 48.0, "Peas": 82.0, "Beans": 86.0, "Lentils": 49.5, "Fallow": 9.0, "Turnips": 18.0,
    "Trees": 16.0, "Vineyard": 20.5,
}  # fmt: skip

# How the fields of one class split between its aliases (a documented choice: the real file uses every alias, the
# split is not published). Northern-France agronomy: canola and triticale are mostly winter-sown, spring barley is
# sometimes written `barley_summer`; the rare spellings keep the case-folding and multi-alias paths exercised.
ALIAS_SHARES: dict[str, dict[str, float]] = {
    "Spring Barley": {"barley_spring": 0.9, "barley_summer": 0.1},
    "Triticale": {"triticale_winter": 0.95, "triticale_spring": 0.05},
    "Sorghum": {"sorghum": 0.9, "Sorghum": 0.1},
    "Sunflowers": {"sunflowers": 0.8, "sunflower": 0.2},
    "Canola": {"canola_winter": 0.97, "canola_spring": 0.03},
    "Sugarbeets": {"sugarbeets": 0.85, "beets": 0.15},
    "Peas": {"peas": 0.8, "peas_winter": 0.2},
    "Turnips": {"turnips": 0.7, "turnip": 0.3},
    "Trees": {"trees": 0.6, "orchard": 0.25, "orchards": 0.14, "bananas": 0.01},
}

# --- The model's field-level behaviour ----------------------------------------------------------------------------
REAL_OVERALL_AGREEMENT: float = 0.829
# The real 32 x 32 field-level confusion matrix of u0c (rows GT, columns predicted; class order of labels.py).
REAL_FIELD_CONFUSION: tuple[tuple[int, ...], ...] = (
    (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),  # Grassland Cult.
    (
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ),  # Grassland Nature
    (21, 0, 157, 45, 48, 8, 6, 6, 2, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 7, 0, 3, 24, 2, 3, 4, 0, 0, 43, 0, 0, 0),  # Clover
    (88, 0, 110, 2249, 109, 21, 14, 46, 15, 0, 0, 0, 0, 0, 0, 9, 0, 8, 0, 22, 9, 16, 26, 6, 0, 12, 0, 1, 150, 0, 0, 1),
    (141, 0, 60, 38, 1000, 77, 33, 69, 6, 0, 0, 2, 0, 0, 1, 11, 4, 2, 0, 19, 7, 36, 31, 8, 1, 27, 0, 1, 309, 0, 0, 2),
    (1, 0, 0, 2, 6, 11681, 70, 248, 24, 0, 0, 0, 0, 0, 0, 1, 9, 2, 1, 14, 3, 7, 5, 6, 0, 3, 0, 0, 9, 0, 0, 0),
    (0, 0, 3, 5, 4, 1766, 1759, 331, 31, 0, 0, 0, 0, 0, 0, 139, 3, 1, 11, 34, 9, 8, 27, 13, 0, 11, 0, 0, 35, 0, 0, 0),
    (
        2,
        0,
        4,
        10,
        19,
        1889,
        457,
        55252,
        767,
        0,
        0,
        1,
        0,
        0,
        0,
        49,
        49,
        9,
        10,
        106,
        19,
        30,
        45,
        40,
        0,
        16,
        0,
        0,
        77,
        0,
        0,
        0,
    ),  # Winter Wheat
    (0, 0, 0, 2, 0, 50, 13, 83, 143, 0, 0, 0, 0, 0, 0, 2, 1, 1, 1, 8, 2, 0, 2, 0, 0, 0, 0, 0, 3, 0, 0, 0),
    (0, 0, 0, 0, 2, 64, 0, 39, 56, 0, 0, 0, 0, 0, 2, 0, 0, 1, 1, 6, 1, 14, 2, 0, 1, 2, 0, 0, 2, 0, 0, 0),
    (0, 0, 0, 0, 1, 1, 6, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 5, 0, 0, 0),
    (0, 0, 1, 0, 0, 8, 75, 160, 24, 0, 0, 1, 0, 0, 0, 18, 0, 1, 1, 2, 1, 1, 1, 0, 0, 0, 0, 2, 2, 0, 0, 0),
    (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),  # Rice
    (0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 4),
    (2, 0, 1, 1, 4, 8, 1, 7, 0, 0, 0, 0, 0, 0, 15, 0, 0, 5, 0, 4, 13, 21, 2, 1, 0, 4, 0, 0, 14, 0, 0, 2),
    (1, 0, 3, 3, 5, 51, 415, 159, 3, 0, 0, 3, 0, 0, 0, 346, 23, 2, 5, 23, 7, 6, 43, 9, 0, 7, 0, 4, 13, 0, 0, 0),
    (0, 0, 0, 0, 1, 54, 6, 25, 10, 0, 0, 0, 0, 0, 0, 5, 74, 0, 0, 2, 0, 1, 2, 2, 0, 0, 0, 0, 2, 0, 0, 0),
    (0, 0, 2, 5, 2, 10, 2, 6, 1, 0, 0, 0, 0, 0, 0, 3, 0, 713, 1, 4, 13, 20, 60, 2, 10, 2, 0, 2, 21, 0, 0, 0),
    (0, 0, 0, 0, 0, 27, 674, 18, 0, 0, 0, 0, 0, 0, 0, 137, 0, 0, 2491, 62, 7, 7, 32, 11, 1, 603, 0, 47, 6, 0, 0, 0),
    (0, 0, 0, 0, 0, 14, 17, 17, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 4, 10064, 1, 1, 3, 4, 0, 15, 0, 0, 7, 0, 0, 0),
    (
        0,
        0,
        23,
        14,
        7,
        38,
        46,
        180,
        0,
        0,
        0,
        0,
        0,
        2,
        23,
        13,
        0,
        45,
        2,
        48,
        4763,
        1372,
        83,
        50,
        47,
        36,
        0,
        1,
        111,
        0,
        0,
        11,
    ),  # Grain Corn
    (
        5,
        0,
        11,
        18,
        28,
        69,
        80,
        159,
        2,
        0,
        0,
        0,
        0,
        2,
        13,
        21,
        1,
        69,
        3,
        43,
        3213,
        11808,
        90,
        62,
        105,
        29,
        0,
        7,
        82,
        0,
        0,
        1,
    ),  # Silage Corn
    (0, 0, 18, 6, 1, 4, 13, 17, 0, 0, 0, 0, 0, 0, 1, 3, 0, 248, 0, 6, 21, 27, 5992, 24, 423, 48, 0, 4, 2, 0, 0, 0),
    (0, 0, 5, 18, 1, 8, 9, 30, 0, 0, 0, 0, 0, 0, 0, 2, 1, 40, 0, 8, 13, 19, 130, 10630, 0, 99, 0, 0, 10, 0, 0, 1),
    (0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 6, 0, 22, 0, 0, 1, 0, 0, 0, 0),
    (0, 0, 0, 2, 0, 54, 5, 5, 2, 0, 0, 0, 0, 0, 1, 0, 0, 1, 7, 68, 6, 3, 96, 16, 0, 1834, 0, 9, 3, 0, 0, 0),
    (0, 0, 2, 2, 1, 7, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 72, 0, 1, 7, 31, 173, 1, 14, 19, 0, 1, 3, 0, 0, 0),
    (0, 0, 1, 1, 0, 5, 9, 2, 5, 0, 0, 0, 0, 0, 0, 0, 1, 1, 8, 0, 0, 0, 6, 0, 1, 12, 0, 59, 1, 0, 0, 0),
    (
        358,
        0,
        127,
        178,
        933,
        440,
        150,
        1068,
        88,
        0,
        0,
        7,
        0,
        2,
        3,
        76,
        18,
        88,
        16,
        308,
        491,
        495,
        275,
        125,
        12,
        77,
        0,
        3,
        6421,
        0,
        0,
        26,
    ),  # Fallow
    (0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    (81, 0, 5, 25, 224, 16, 5, 38, 6, 0, 0, 0, 0, 0, 0, 4, 4, 2, 0, 7, 3, 84, 9, 5, 0, 7, 0, 0, 380, 0, 0, 4),
    (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 1, 5, 0, 0, 2, 0, 1, 13, 0, 0, 8),  # Vineyard
)

# Mean over fields of each field's modal band-4 confidence, when the field's majority is right / wrong.
# Crops never (or once) right have no "right" figure: they fall back to the field-weighted mean over the others.
CONF_WHEN_RIGHT: dict[str, float] = {
    "Clover": 58.4, "Alfalfa": 73.5, "Ryegrass": 48.1, "Winter Barley": 82.7, "Spring Barley": 52.9,
    "Winter Wheat": 75.2, "Triticale": 53.0, "Sorghum": 57.8, "Spring Oats": 49.9, "Winter Oats": 51.0,
    "Sunflowers": 75.1, "Flax": 55.5, "Canola": 87.5, "Grain Corn": 57.9, "Silage Corn": 55.6, "Potatoes": 79.7,
    "Sugarbeets": 88.1, "Soybeans": 72.3, "Peas": 69.8, "Lentils": 68.0, "Fallow": 43.7, "Vineyard": 52.5,
}  # fmt: skip
CONF_WHEN_WRONG: dict[str, float] = {
    "Clover": 39.9, "Alfalfa": 41.1, "Ryegrass": 39.5, "Winter Barley": 52.5, "Spring Barley": 55.2,
    "Winter Wheat": 51.5, "Triticale": 46.0, "Winter Rye": 49.5, "Spring Rye": 32.0, "Spring Wheat": 47.3,
    "Millet": 24.0, "Sorghum": 38.2, "Spring Oats": 42.2, "Winter Oats": 45.6, "Sunflowers": 45.1, "Flax": 39.7,
    "Canola": 54.0, "Grain Corn": 47.1, "Silage Corn": 49.1, "Potatoes": 54.5, "Sugarbeets": 49.9,
    "Soybeans": 43.1, "Peas": 48.0, "Beans": 49.2, "Lentils": 39.5, "Fallow": 43.4, "Turnips": 29.8,
    "Trees": 37.6, "Vineyard": 33.8,
}  # fmt: skip
CONF_WHEN_RIGHT_DEFAULT: float = 72.9  # field-weighted mean of CONF_WHEN_RIGHT
CONF_WHEN_WRONG_DEFAULT: float = 46.9  # field-weighted mean of CONF_WHEN_WRONG

# --- Per-pixel value distributions of the bands that are not the crop class (read off u0c_clip.tif) ----------------
CONF_RANGE: tuple[int, int] = (12, 97)  # band 4 observed range
CONF_PIXEL_MEAN: float = 62.9  # band 4 over the clip (used to centre band 2's dependence on it)
CLASS_PIXEL_MEAN: float = 13.3  # band 3 over the clip
# Band 2 ~ -47 - 3.13 x class + 0.985 x confidence + residual (residual std 80); overall mean -27, std 90.
CYCLES_CONF_MEAN: float = -26.9
CYCLES_CONF_PER_CLASS: float = -3.13
CYCLES_CONF_PER_CONF: float = 0.985
CYCLES_CONF_RESIDUAL_STD: float = 80.0
CYCLES_CONF_RANGE: tuple[int, int] = (-336, 295)
# Band 8 ~ 0.639 x band 4 + 33.7 + residual (std 10.1): mean 73.9, corr 0.81 with band 4, higher than it 79 % of
# the time (so it is no top-2 margin).
CROP2_CONF_SLOPE: float = 0.639
CROP2_CONF_INTERCEPT: float = 33.7
CROP2_CONF_RESIDUAL_STD: float = 10.1
CROP2_CONF_RANGE: tuple[int, int] = (18, 97)
# Band 7: share of each second-cycle crop code 0..7.
CROP2_SHARES: tuple[float, ...] = (0.3014, 0.4433, 0.0223, 0.0863, 0.0362, 0.0646, 0.0439, 0.0021)
# Bands 5, 6, 9, 10: day numbers, (mean, std, min, max).
DATE_BANDS: dict[int, tuple[float, float, int, int]] = {
    5: (18627.48, 0.72, 18625, 18630),
    6: (18625.76, 1.10, 18622, 18629),
    9: (18626.87, 0.60, 18624, 18629),
    10: (18626.42, 0.79, 18624, 18630),
}
