"""The class catalogue: the u0c default, JSON and CSV files, and every bad file refused with the file and the fix."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cropmon.catalogue import U0C, Catalogue, as_catalogue, fold, read_catalogue
from cropmon.config import build_config
from cropmon.errors import BadCatalogue, MissingFile
from cropmon.labels import CROP_NAMES, LABELS_DICT


def _u0c_class_of(label: object) -> int | None:
    """The oracle: the position in LABELS_DICT of the crop one of whose aliases equals `label`, folded by hand."""
    if not isinstance(label, str):
        return None
    for position, aliases in enumerate(LABELS_DICT.values()):
        if any(alias.strip().casefold() == label.strip().casefold() for alias in aliases):
            return position
    return None


def test_the_default_is_the_u0c_catalogue():
    assert U0C.names == CROP_NAMES and U0C.ids == tuple(range(32)) and as_catalogue(None) is U0C
    labels = ["wheat_winter", " Beets ", "SORGHUM", "radish", None, 3, "orchards"]
    expected = [_u0c_class_of(v) for v in labels]
    got = U0C.label_classes(labels)
    assert [None if pd.isna(v) else int(v) for v in got] == expected == [7, 23, 14, None, None, None, 30]
    assert U0C.is_exact_alias("beets") and not U0C.is_exact_alias(" Beets ")


def test_json_in_the_shape_of_labels_dict(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"Wheat": ["wheat_winter", "wheat_spring"], "Barley": ["barley"], "Other": []}))
    catalogue = read_catalogue(path)
    assert (catalogue.names, catalogue.ids) == (("Wheat", "Barley", "Other"), (0, 1, 2))
    assert catalogue.source == str(path) and catalogue.describe() == f"3 classes (ids 0..2) from {path}"
    assert list(catalogue.label_classes(["Wheat_Spring ", "barley", "other"]).astype(object).fillna(-1)) == [0, 1, -1]
    assert as_catalogue(LABELS_DICT) == U0C


def test_csv_with_gaps_in_the_ids(tmp_path):
    path = tmp_path / "model.csv"
    path.write_text("class_id,crop,aliases\n5,Maize,corn_grain; corn_silage\n1,Wheat,wheat_winter\n2,Fallow,\n")
    catalogue = read_catalogue(path)
    assert (catalogue.names, catalogue.ids) == (("Wheat", "Fallow", "Maize"), (1, 2, 5))
    assert catalogue.aliases == (("wheat_winter",), (), ("corn_grain", "corn_silage"))
    assert list(catalogue.positions([0, 1, 2, 3, 5, 6, -4])) == [-1, 0, 1, -1, 2, -1, -1]
    assert list(catalogue.names_of([5, 1])) == ["Maize", "Wheat"]
    with pytest.raises(ValueError, match="not in the catalogue"):
        catalogue.names_of([3])


BAD_FILES = [
    ("two.json", '{"Wheat": ["wheat"], "Spring Wheat": [" Wheat"]}', "the label ' Wheat' matches two classes"),
    ("twice.json", '{"Wheat": ["a"], "Wheat": ["b"]}', "the crop 'Wheat' is listed twice"),
    ("broken.json", '{"Wheat": ["a"', "not valid JSON"),
    ("list.json", '["Wheat", "Barley"]', "not an object"),
    ("flat.json", '{"Wheat": "wheat"}', "the aliases of 'Wheat' are not a list"),
    ("empty.json", "{}", "the class list is empty"),
    ("dup_id.csv", "class_id,crop,aliases\n0,Wheat,wheat\n0,Barley,barley\n", "class id 0 is given twice"),
    ("dup_crop.csv", "class_id,crop,aliases\n0,Wheat,wheat\n1,Wheat,barley\n", "the crop 'Wheat' is listed twice"),
    ("label.csv", "class_id,crop,aliases\n0,Wheat,wheat;barley\n1,Barley,BARLEY\n", "'BARLEY' matches two classes"),
    ("text_id.csv", "class_id,crop,aliases\nzero,Wheat,wheat\n", "line 2: class_id 'zero' is not an integer"),
    ("negative.csv", "class_id,crop,aliases\n-1,Wheat,wheat\n", "class id -1 is not an integer in 0..32767"),
    ("columns.csv", "id,name\n0,Wheat\n", "no column class_id, crop, aliases"),
    ("nameless.csv", "class_id,crop,aliases\n0,,wheat\n", "a crop name is empty"),
    ("model.yaml", "Wheat: [wheat]\n", "unknown class list format '.yaml'"),
]


@pytest.mark.parametrize(("name", "text", "problem"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_with_the_file_the_problem_and_the_fix(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BadCatalogue) as info:
        read_catalogue(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message and "Fix:" in message and "\n" not in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(MissingFile, match=r"nope\.csv: class list does not exist"):
        read_catalogue(tmp_path / "nope.csv")


def test_the_setting_comes_from_a_flag_a_file_or_a_toml_table(tmp_path):
    classes = tmp_path / "classes.json"
    classes.write_text('{"Wheat": ["wheat"], "Barley": ["barley"]}')
    assert build_config({"classes": str(classes)}, environ={}).catalogue().names == ("Wheat", "Barley")
    config_file = tmp_path / "run.toml"
    config_file.write_text(f'classes = "{classes}"\n')
    assert build_config({}, config_file=str(config_file), environ={}).catalogue().source == str(classes)
    config_file.write_text('[classes]\nWheat = ["wheat"]\n"Winter Oats" = ["oats_winter"]\n')
    catalogue = build_config({}, config_file=str(config_file), environ={}).catalogue()
    assert catalogue.names == ("Wheat", "Winter Oats") and catalogue.source == f"{config_file} [classes]"
    assert build_config({}, environ={"CROPMON_CLASSES": str(classes)}).catalogue().n == 2
    assert build_config({}, environ={}).catalogue() is U0C
    bad = tmp_path / "bad.json"
    bad.write_text('{"A": ["x"], "B": ["X"]}')
    with pytest.raises(BadCatalogue, match=r"bad\.json: the label 'X' matches two classes"):
        build_config({"classes": str(bad)}, environ={})  # refused up front, before any work


names = st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 300), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_lookups_agree_with_a_plain_dictionary(ids, data):
    crops = data.draw(st.lists(names, min_size=len(ids), max_size=len(ids), unique=True))
    aliases = data.draw(st.lists(names, max_size=20, unique_by=fold))
    owner = data.draw(st.lists(st.integers(0, len(ids) - 1), min_size=len(aliases), max_size=len(aliases)))
    rows = [(i, c, [a for a, o in zip(aliases, owner, strict=True) if o == k]) for k, (i, c) in
            enumerate(zip(ids, crops, strict=True))]
    catalogue = Catalogue.from_rows(rows)
    by_id = {i: c for i, c, _ in rows}
    assert list(catalogue.ids) == sorted(ids) and list(catalogue.names) == [by_id[i] for i in sorted(ids)]
    values = np.array(data.draw(st.lists(st.integers(-3, 310), max_size=30)), dtype=np.int64)
    positions = catalogue.positions(values)
    for value, position in zip(values, positions, strict=True):
        assert (catalogue.ids[position] == value) if value in by_id else position == -1
    folded = {fold(a): i for i, _, group in rows for a in group}
    labels = [*aliases, *(a.upper() + " " for a in aliases), "no such label", None]
    got = catalogue.label_classes(labels)
    assert [None if pd.isna(v) else int(v) for v in got] == [folded.get(fold(v)) for v in labels]
