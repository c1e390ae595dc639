"""What the inputs carry is taken strictly: settings of the wrong type exit 2 naming the key, AOI names that
collide with outputs are refused up front, fields without an id are counted and never picked, and report.md
shows crop names, labels and field ids as text (checked by rendering it with markdown-it, a CommonMark parser)."""

from __future__ import annotations

import json
import re
import string
from html.parser import HTMLParser

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from conftest import pixel_to_lonlat, write_fields, write_prediction_raster
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

import cropmon
from cropmon import errors
from cropmon.cli import EXIT_INPUT, EXIT_OK, main
from cropmon.config import build_config
from cropmon.diagnosis.diagnose import diagnose_run
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.engine.job import analyse_fields
from cropmon.io import outputs
from cropmon.report.caveats import caveats_section
from cropmon.report.document import Bullets, Heading, Paragraph, Table, render_markdown, strong

# -- settings of the wrong type --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "key"), [
    ("chunk_rows = 2.5", "chunk_rows"),  # was silently 2
    ("workers = true", "workers"),  # was 1
    ('layer = ["a", "b"]', "layer"),  # was the list's string form
    ("tie_break = 1", "tie_break"),
    ("no_worker_timeout = true", "no_worker_timeout"),
    ("twin_scale = false", "twin_scale"),
    ('[[aoi]]\nname = 3\nraster = "a.tif"\nfields = "b.gpkg"', "name"),
])  # fmt: skip
def test_a_wrong_type_in_the_config_file_exits_2_naming_the_key(tmp_path, capsys, line, key):
    config = tmp_path / "cropmon.toml"
    config.write_text(line + "\n")
    code = main(["run", "--config", str(config), "--progress", "off"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("cropmon: error:")]
    assert code == EXIT_INPUT and len(lines) == 1 and "Traceback" not in err, err
    assert str(config) in lines[0] and key in lines[0] and "Fix:" in lines[0]


def test_types_that_fit_still_pass(tmp_path):
    config = tmp_path / "cropmon.toml"
    config.write_text('chunk_rows = 512\nno_worker_timeout = 5\nconnect_timeout = 2.5\nlayer = "2022"\n')
    built = build_config({}, config_file=str(config), environ={})
    assert (built.chunk_rows, built.no_worker_timeout, built.connect_timeout, built.layer) == (512, 5.0, 2.5, "2022")
    assert build_config({"workers": np.int64(2)}, environ={}).workers == 2  # numpy's integers are integers


@pytest.mark.parametrize(("variable", "value"), [("CROPMON_CHUNK_ROWS", "2.5"), ("CROPMON_WORKERS", "true"),
                                                 ("CROPMON_NO_WORKER_TIMEOUT", "soon")])
def test_a_wrong_environment_variable_names_it(variable, value):
    with pytest.raises(errors.ConfigError, match=variable):
        build_config({}, environ={variable: value})


def test_a_wrong_flag_exits_2_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--chunk-rows", "2.5"])
    assert exit_.value.code == EXIT_INPUT and "--chunk-rows" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("chunk_rows", 2.5), ("workers", True), ("memory_limit", ["2GB"])])
def test_a_wrong_api_argument_names_it(option, value):
    with pytest.raises(errors.ConfigError, match=rf"{option} = .* is not"):
        cropmon.run(**{option: value})


# -- AOI names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["report.html", "run.json", "RUN.JSON", "f1_by_aoi.png", ".parts", ".hidden"])
def test_an_aoi_named_like_an_output_is_refused_up_front(tmp_path, capsys, name):
    """Was: IsADirectoryError after all the work (report.html, run.json), or an AOI's outputs silently gone
    (.parts, removed as the tasks' scratch before the swap)."""
    code = main(["run", "--aoi", f"{name}=missing.tif,missing.gpkg", "--aoi", "b=missing.tif,missing.gpkg",
                 "--out", str(tmp_path / "out"), "--progress", "off"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and name in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_the_reserved_names_are_the_pooled_view_s_files(tmp_path):
    from diagnosis_fixtures import aoi_summary
    from test_pooled import SB, WB, WW, _aoi

    from cropmon.report.pooled import write_pooled

    a = _aoi({(SB, SB): 30, (SB, WB): 30, (WB, WB): 50, (WW, WW): 50}, seed=1)
    written = write_pooled({"a": aoi_summary(*a)}, tmp_path, settings=DiagnosisSettings(), seed=0)
    assert sorted(written) == sorted(outputs.POOLED_FILES)
    assert set(outputs.reserved_names()) == {*outputs.POOLED_FILES, "run.json"}


# -- fields without an id ----------------------------------------------------------------------------------------


def test_fields_without_an_id_are_counted_with_their_feature_ids(tmp_path):
    rng = np.random.default_rng(2)
    classes = rng.choice([5, 7], size=(20, 30)).astype(np.int16)
    raster = write_prediction_raster(tmp_path / "p.tif", classes, np.full((20, 30), 70, dtype=np.int16))
    boxes = []
    for i in range(5):
        (x0, x1), (y0, y1) = pixel_to_lonlat(np.array([1 + 5 * i, 5 + 5 * i]), np.array([10, 2]))
        boxes.append(shapely.box(x0, y0, x1, y1))
    ids = ["a", None, "", "  ", "b"]
    gdf = gpd.GeoDataFrame({"field_id": ids, "area_m2": 1.0, "normalized_label": "wheat_winter", "year": 2022},
                           geometry=boxes, crs="EPSG:4326")
    result = analyse_fields(raster, write_fields(tmp_path / "f.gpkg", gdf))
    assert len(result.table) == 5 and result.table["n_pixels"].gt(0).all(), "scored like any field"
    assert result.report.counts["field_id_null"] == 3
    fids = result.fids[[1, 2, 3]]
    assert result.report.examples["field_id_null"] == [f"fid {fid}" for fid in fids]
    assert "duplicate_field_id" not in result.report.counts, "blank ids are missing ids, not duplicates"


def test_fields_without_an_id_are_never_picked_and_the_report_says_so():
    from diagnosis_fixtures import make_table
    from test_report import SETTINGS, aoi_specs

    fields, counts = make_table(aoi_specs())
    clean = diagnose_run(fields, counts, settings=SETTINGS, seed=3)
    picked = pd.concat([clean.selection.picks, clean.selection.evaluation])
    chosen = fields.index[fields["field_id"].isin(picked["field_id"])]
    assert len(chosen) > 20
    nulled = chosen[::2]  # half of the fields the plan chose lose their id: null or blank
    fields.loc[nulled[::2], "field_id"] = None
    fields.loc[nulled[1::2], "field_id"] = " "
    d = diagnose_run(fields, counts, settings=SETTINGS, seed=3)
    for listed in (d.selection.picks, d.selection.evaluation):
        assert len(listed) > 0
        assert listed["field_id"].notna().all() and listed["field_id"].astype(str).str.strip().ne("").all()
        assert not set(listed["field_id"]) & {"None", "nan", " "}
    assert d.caveats["null_id"] == len(nulled)
    assert d.caveats["n_scored"] == clean.caveats["n_scored"], "still scored"
    run_info = {"fields": {"examples": {"field_id_null": ["fid 4", "fid 9"]}}}
    text = " ".join(item for block in caveats_section(d, run_info, SETTINGS) if isinstance(block, Bullets)
                    for item in block.items)
    assert f"{len(nulled):,} fields have no field_id (fid 4, fid 9 in the fields file): scored, never picked" in text


# -- report.md shows the inputs as text ----------------------------------------------------------------------------


class Rendered(HTMLParser):
    """The tags and the visible text of rendered HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[dict] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def rendered(markdown: str) -> Rendered:
    """markdown-it's CommonMark with tables (raw HTML allowed, as viewers do), parsed back."""
    page = Rendered()
    page.feed(MarkdownIt("commonmark").enable("table").render(markdown))
    return page


def squeeze(text: str) -> str:
    return " ".join(text.split())


STRUCTURE = {"h1", "h2", "p", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "em", "strong"}
WORDS = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " \t\néß_", min_size=1,
                max_size=40).filter(str.strip)


@settings(max_examples=300, deadline=None)
@given(name=WORDS, label=WORDS, field_id=WORDS)
def test_any_input_text_shows_as_itself_in_markdown(name, label, field_id):
    """Whatever a crop name, label or field id holds, a CommonMark viewer shows exactly that text: no tag, link,
    emphasis, code, heading or list comes from it; the one bold is the report's own (document.strong)."""
    blocks = [
        Heading(f"About {name}"),
        Paragraph(f"{strong(name)} (high; agreement 0.42 [0.30, 0.55]): {label} is predicted as {name}."),
        Bullets([f"{name} and {label}", label]),
        Table(pd.DataFrame({"field_id": [field_id], "crop": [name]}), f"fields of {name}"),
    ]
    page = rendered(render_markdown(f"Crop diagnosis: {name}", blocks))
    assert set(page.tags) <= STRUCTURE, page.tags
    assert page.tags.count("strong") == 1 and page.tags.count("em") == 1  # the bold name, the table's caption
    expected = [f"Crop diagnosis: {name}", f"About {name}",
                f"{name} (high; agreement 0.42 [0.30, 0.55]): {label} is predicted as {name}.",
                f"{name} and {label}", label, f"fields of {name}", "field_id crop", field_id, name]
    assert squeeze(" ".join(page.text)) == squeeze(" ".join(expected))


HOSTILE = {
    "<b>Wheat</b>": ["wheat_winter"],
    "Corn *x* _y_": ["corn_silage"],
    "[Barley](http://evil.example)": ["barley_winter"],
    "`Beets` & <i>": ["beets"],
}


def test_a_run_s_report_md_shows_hostile_names_labels_and_ids_as_text(tmp_path, capsys):
    """A whole run: crop names from --classes, an unknown label and field ids carrying HTML and Markdown."""
    rng = np.random.default_rng(11)
    side, box = 60, 5
    classes = rng.choice(4, size=(side, side)).astype(np.int16)
    raster = write_prediction_raster(tmp_path / "pred_*x*_.tif", classes, rng.integers(20, 99, size=(side, side),
                                                                                        dtype=np.int16))
    corners = [(r, c) for r in range(0, side - box, box + 1) for c in range(0, side - box, box + 1)]
    polygons = []
    for r, c in corners:
        (x0, x1), (y0, y1) = pixel_to_lonlat(np.array([c, c + box]), np.array([r + box, r]))
        polygons.append(shapely.box(x0, y0, x1, y1))
    labels = [*[a[0] for a in HOSTILE.values()], "<img src=x onerror=alert(1)>"]
    gdf = gpd.GeoDataFrame(
        {"field_id": [f"[f{i}](http://evil.example)" if i % 2 else f"id_*{i}*" for i in range(len(corners))],
         "area_m2": 1e4, "normalized_label": [labels[i % len(labels)] for i in range(len(corners))], "year": 2022},
        geometry=polygons, crs="EPSG:4326")
    fields = write_fields(tmp_path / "fields.gpkg", gdf)
    (tmp_path / "classes.json").write_text(json.dumps(HOSTILE))
    out = tmp_path / "out"
    code = main(["run", "--raster", str(raster), "--fields", str(fields), "--classes", str(tmp_path / "classes.json"),
                 "--out", str(out), "--scheduler", "threads", "--progress", "off"])
    assert code == EXIT_OK, capsys.readouterr().err
    markdown = (out / "report.md").read_text()
    page = rendered(markdown)
    assert not set(page.tags) & {"b", "i", "code", "script"}, sorted(set(page.tags))
    own = {p.name for p in out.glob("*.png")}
    for tag, attrs in zip(page.tags, page.attrs, strict=True):  # the report's own links and pictures only
        assert tag != "a" or attrs["href"].startswith("#"), attrs
        assert tag != "img" or attrs["src"] in own, attrs
    visible = " ".join(page.text)
    for name in HOSTILE:
        assert name in visible, name
    assert "'<img src=x onerror=alert(1)>' (" in visible  # the unknown label, in the caveats
    assert "pred_*x*_.tif" in visible  # the raster's name, in the title
    ids = set(re.findall(r"\[f\d+\]\(http://evil\.example\)|id_\*\d+\*", visible))
    assert ids, "the first fields to label (their ids) are in the report"
