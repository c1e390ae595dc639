"""A model's class catalogue: class id (the raster's value) <-> crop name <-> ground-truth label aliases.

The default is the u0c model's 32 classes (`labels.LABELS_DICT`). Another model's classes come from a file
(`--classes FILE`, `classes=` in the API, `classes` in the config file):

- JSON, shaped like LABELS_DICT: `{"Winter Wheat": ["wheat_winter"], ...}`; the raster value is the position;
- CSV with the columns `class_id,crop,aliases`, aliases separated by `;` (ids may have gaps: `1,2,5`).

Ground-truth labels match an alias case- and whitespace-insensitively, so a label that folds to the aliases of two
classes, a class id given twice or a crop named twice is refused with the file and the fix. Every step of a run
takes the catalogue as an object (engine slots, metrics, plan, figures), never a module constant.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropmon.errors import BadCatalogue, MissingFile
from cropmon.labels import LABELS_DICT

if TYPE_CHECKING:
    import pandas as pd

MAX_CLASS_ID = 32767  # class ids are int16 raster values (and the per-field gt_class is Int16)
CSV_COLUMNS = ("class_id", "crop", "aliases")
FORMATS = "a JSON object {crop: [aliases]} (raster value = position) or a CSV class_id,crop,aliases"


def fold(label: object) -> str | None:
    """A label as it is matched: stripped and case-folded; None for anything that is not a text."""
    return label.strip().casefold() if isinstance(label, str) else None


@dataclass(frozen=True)
class Catalogue:
    """The classes of one model, in class-id order: `names[i]` has raster value `ids[i]` and labels `aliases[i]`."""

    names: tuple[str, ...]
    ids: tuple[int, ...]
    aliases: tuple[tuple[str, ...], ...]
    source: str = field(default="u0c (built in)", compare=False)  # where it came from: a file, or a description
    path: str | None = field(default=None, compare=False)  # the file, for error messages

    def __post_init__(self) -> None:
        self._check()

    def _refuse(self, problem: str, fix: str) -> BadCatalogue:
        return BadCatalogue(problem, path=self.path, fix=fix)

    def _check(self) -> None:
        if not self.names:
            raise self._refuse("the class list is empty", f"give at least one class: {FORMATS}")
        if not len(self.names) == len(self.ids) == len(self.aliases):
            raise ValueError("Catalogue: names, ids and aliases must have one entry per class")
        for name in self.names:
            if not isinstance(name, str) or not name.strip():
                raise self._refuse(f"a crop name is empty or not a text ({name!r})", "name every class")
        _refuse_repeats(self.names, lambda crop: self._refuse(
            f"the crop {crop!r} is listed twice", "list every crop once (put all its labels in its aliases)"))
        for class_id in self.ids:
            if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id <= MAX_CLASS_ID:
                raise self._refuse(f"class id {class_id!r} is not an integer in 0..{MAX_CLASS_ID}",
                                   "class ids are the raster's class values (int16, >= 0)")
        _refuse_repeats(self.ids, lambda class_id: self._refuse(
            f"class id {class_id} is given twice", "give every class its own id (the raster value that means it)"))
        if list(self.ids) != sorted(self.ids):
            raise ValueError("Catalogue: ids must ascend (use from_mapping / from_rows)")
        owner: dict[str, str] = {}
        for name, aliases in zip(self.names, self.aliases, strict=True):
            for alias in aliases:
                folded = fold(alias)
                if not folded:
                    raise self._refuse(f"an alias of {name!r} is empty or not a text ({alias!r})",
                                       "aliases are the ground truth's label texts")
                if owner.setdefault(folded, name) != name:
                    raise self._refuse(
                        f"the label {alias!r} matches two classes, {owner[folded]!r} and {name!r} (labels match"
                        " case- and whitespace-insensitively)", "give each ground-truth label to one class only")

    # --- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Iterable[str]], *, source: str = "classes=",
                     path: str | None = None) -> Catalogue:
        """From a LABELS_DICT-shaped mapping: crop name -> aliases; the raster value is the position."""
        if not isinstance(mapping, Mapping):
            raise BadCatalogue(f"the class list is a {type(mapping).__name__}, not an object", path=path,
                               fix=f"give {FORMATS}")
        aliases = []
        for name, values in mapping.items():
            if isinstance(values, str) or not isinstance(values, Iterable):
                raise BadCatalogue(f"the aliases of {name!r} are not a list ({values!r})", path=path,
                                   fix=f'write "{name}": ["label", ...]')
            aliases.append(tuple(values))
        return cls(tuple(mapping), tuple(range(len(aliases))), tuple(aliases), source=source, path=path)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, str, Iterable[str]]], *, source: str = "classes=",
                  path: str | None = None) -> Catalogue:
        """From (class_id, crop, aliases) rows in any order; classes are kept in id order."""
        rows = sorted(rows, key=lambda row: row[0] if isinstance(row[0], int) else -1)
        return cls(tuple(r[1] for r in rows), tuple(r[0] for r in rows), tuple(tuple(r[2]) for r in rows),
                   source=source, path=path)

    # --- lookups --------------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.names)

    @cached_property
    def id_array(self) -> np.ndarray:
        return np.asarray(self.ids, dtype=np.int64)

    @cached_property
    def name_array(self) -> np.ndarray:
        return np.asarray(self.names, dtype=object)

    @cached_property
    def _position_of_id(self) -> np.ndarray:
        lookup = np.full(max(self.ids) + 1, -1, dtype=np.int64)
        lookup[self.id_array] = np.arange(self.n)
        return lookup

    @cached_property
    def _folded(self) -> dict[str, int]:
        return {a.strip().casefold(): i for i, aliases in zip(self.ids, self.aliases, strict=True) for a in aliases}

    @cached_property
    def _exact(self) -> frozenset[str]:
        return frozenset(a for aliases in self.aliases for a in aliases)

    def positions(self, class_ids: Any) -> np.ndarray:
        """Position in the catalogue of each class id (-1 for a value that is no class of it)."""
        values = np.asarray(class_ids, dtype=np.int64)
        inside = (values >= 0) & (values < len(self._position_of_id))
        return np.where(inside, self._position_of_id[np.where(inside, values, 0)], -1)

    def names_of(self, class_ids: Any) -> np.ndarray:
        """Crop name of each class id (object array); raises on an id that is no class."""
        positions = self.positions(class_ids)
        if (positions < 0).any():
            bad = sorted(set(np.asarray(class_ids, dtype=np.int64)[positions < 0].tolist()))
            raise ValueError(f"class id(s) {bad[:5]} are not in the catalogue ({self.source})")
        return self.name_array[positions]

    def is_exact_alias(self, label: object) -> bool:
        return isinstance(label, str) and label in self._exact

    def label_classes(self, labels: Iterable[object]) -> pd.Series:
        """Class id of each label (case/whitespace-insensitive alias match), nullable Int16; <NA> when unknown."""
        import pandas as pd  # here: the CLI reads the catalogue before any work, and importing pandas is slow

        series = labels if isinstance(labels, pd.Series) else pd.Series(list(labels), dtype="object")
        return series.astype("object").map(fold).map(self._folded).astype("Int16")

    def describe(self) -> str:
        """'3 classes (ids 0..2) from classes.csv', for messages and the report."""
        ids = f"ids {self.ids[0]}..{self.ids[-1]}" if self.n > 1 else f"id {self.ids[0]}"
        return f"{self.n} classes ({ids}) from {self.source}"

    def as_manifest(self) -> dict[str, Any]:
        return {"source": self.source, "n_classes": self.n, "ids": list(self.ids), "names": list(self.names)}


def _refuse_repeats(values: Iterable[Any], error) -> None:
    """Raise error(value) for the first value seen twice."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise error(value)
        seen.add(value)


U0C = Catalogue.from_mapping(LABELS_DICT, source="u0c (built in)")


def read_catalogue(path: str | Path) -> Catalogue:
    """The class catalogue in `path`: `.json` (LABELS_DICT shape) or `.csv` (class_id,crop,aliases)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile("class list does not exist", path=path, fix="check --classes")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadCatalogue(f"cannot be read as UTF-8 text ({exc})", path=path, fix=f"give {FORMATS}") from exc
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _from_json(text, str(path))
    if suffix == ".csv":
        return _from_csv(text, str(path))
    raise BadCatalogue(f"unknown class list format {suffix or '(no suffix)'!r}", path=path,
                       fix=f"name it .json or .csv: {FORMATS}")


def _from_json(text: str, path: str) -> Catalogue:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        _refuse_repeats([k for k, _ in pairs], lambda crop: BadCatalogue(
            f"the crop {crop!r} is listed twice", path=path, fix="list every crop once"))
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as exc:
        raise BadCatalogue(f"not valid JSON ({exc})", path=path, fix=f"give {FORMATS}") from exc
    return Catalogue.from_mapping(data, source=path, path=path)


def _from_csv(text: str, path: str) -> Catalogue:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise BadCatalogue(f"no column {', '.join(missing)} (columns: {', '.join(header) or 'none'})", path=path,
                           fix="write the header class_id,crop,aliases (aliases separated by ';')")
    rows = []
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        try:
            class_id = int(row["class_id"])
        except ValueError as exc:
            raise BadCatalogue(f"line {line}: class_id {row['class_id']!r} is not an integer", path=path,
                               fix="class ids are the raster's class values (0, 1, 2 ...)") from exc
        aliases = [a.strip() for a in row["aliases"].split(";") if a.strip()]
        rows.append((class_id, row["crop"], aliases))
    return Catalogue.from_rows(rows, source=path, path=path)


def as_catalogue(classes: Catalogue | Mapping[str, Iterable[str]] | str | Path | None) -> Catalogue:
    """The catalogue meant by `classes`: None = u0c, a Catalogue as is, a mapping (LABELS_DICT shape), or a file."""
    if classes is None:
        return U0C
    if isinstance(classes, Catalogue):
        return classes
    if isinstance(classes, Mapping):
        return Catalogue.from_mapping(classes)
    return read_catalogue(classes)
