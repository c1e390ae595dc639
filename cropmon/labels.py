"""The 32-class catalogue of the crop model: class id <-> crop name <-> `normalized_label` aliases.

The raster's class value is the position of the crop in `LABELS_DICT` (0 = Grassland Cultivated, 7 = Winter Wheat,
31 = Vineyard). Ground-truth labels are matched to a class case- and whitespace-insensitively; a label that matches
no alias (e.g. `radish`) maps to no class and is kept, counted and reported, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

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
INVALID_CLASS: int = N_CLASSES  # histogram slot for raster values outside 0..31
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CROP_NAMES)}

ALIAS_CLASS: dict[str, int] = {
    alias: CLASS_IDS[name] for name, aliases in LABELS_DICT.items() for alias in aliases
}
_FOLDED_ALIAS_CLASS: dict[str, int] = {_a.strip().casefold(): _c for _a, _c in ALIAS_CLASS.items()}


def label_class(label: object) -> int | None:
    """Class id of a `normalized_label` value (case/whitespace-insensitive); None when unknown or null."""
    if not isinstance(label, str):
        return None
    return _FOLDED_ALIAS_CLASS.get(label.strip().casefold())


def label_classes(labels: Iterable[object]) -> pd.Series:
    """Vectorised `label_class`: a nullable Int16 Series of class ids (<NA> for unknown or null labels)."""
    import pandas as pd

    series = pd.Series(list(labels) if not isinstance(labels, pd.Series) else labels, dtype="object")
    folded = series.map(lambda v: v.strip().casefold() if isinstance(v, str) else None)
    return folded.map(_FOLDED_ALIAS_CLASS).astype("Int16")
