"""The 32-class catalogue of the crop model: class id <-> crop name <-> `normalized_label` aliases.

The raster's class value is the position of the crop in `LABELS_DICT` (0 = Grassland Cultivated, 7 = Winter Wheat,
31 = Vineyard). The data only: `cropmon.catalogue.U0C` is this catalogue as a `Catalogue`, which matches
ground-truth labels to classes.
"""

from __future__ import annotations

LABELS_DICT: dict[str, list[str]] = {
    "Grassland Cultivated": ["grassland_cultivated"],
    "Grassland Nature": ["grassland_nature"],
    "Clover": ["clover"],
    "Alfalfa": ["alfalfa"],
    "Ryegrass": ["ryegrass"],
    "Winter Barley": ["barley_winter"],
    "Spring Barley": ["barley_spring", "barley_summer"],
    "Winter Wheat": ["wheat_winter"],
    "Triticale": ["triticale_winter", "triticale_spring"],
    "Winter Rye": ["rye_winter"],
    "Spring Rye": ["rye_spring"],
    "Spring Wheat": ["wheat_spring"],
    "Rice": ["rice"],
    "Millet": ["millet"],
    "Sorghum": ["sorghum", "Sorghum"],
    "Spring Oats": ["oats_spring"],
    "Winter Oats": ["oats_winter"],
    "Sunflowers": ["sunflowers", "sunflower"],
    "Flax": ["flax"],
    "Canola": ["canola_spring", "canola_winter"],
    "Grain Corn": ["corn_grain"],
    "Silage Corn": ["corn_silage"],
    "Potatoes": ["potatoes"],
    "Sugarbeets": ["sugarbeets", "beets"],
    "Soybeans": ["soybeans"],
    "Peas": ["peas", "peas_winter"],
    "Beans": ["beans"],
    "Lentils": ["lentils"],
    "Fallow": ["fallow"],
    "Turnips": ["turnips", "turnip"],
    "Trees": ["trees", "orchard", "orchards", "bananas"],
    "Vineyard": ["vineyard"],
}

CROP_NAMES: tuple[str, ...] = tuple(LABELS_DICT)
N_CLASSES: int = len(CROP_NAMES)  # 32
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CROP_NAMES)}
