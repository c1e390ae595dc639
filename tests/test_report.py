"""The files of one AOI, written by the functions a run's tail calls: every file, the reference CSV format, the report
built from the run's numbers, the HTML page."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from diagnosis_fixtures import as_geo, field, hand_example, make_table, overall_of
from matplotlib.image import imread
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cropmon.diagnosis import metrics
from cropmon.diagnosis.diagnose import diagnose_run
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.labels import CROP_NAMES
from cropmon.report.active import write_field_uncertainty
from cropmon.report.images import IMAGE_NAMES, render_image
from cropmon.report.plots import MapWindow
from cropmon.report.run_facts import RunFacts
from cropmon.report.single import write_field_lists, write_images, write_report, write_tables
from cropmon.report.wording import rule_text

FILES = {
    "crop_metrics.csv", "confusion_matrix.csv", "confusion_matrix_pixels.csv", "confusion_pairs.csv",
    "underperforming_crops.csv", "label_plan.csv", "fields_to_label.csv", "fields_to_label.gpkg",
    "evaluation_fields.csv", "evaluation_fields.gpkg", "confusion_heatmap.png", "agreement_by_crop.png",
    "f1_vs_confidence.png", "block_error_map.png", "report.md", "report.html", "suspect_labels.csv",
    "unlabelled_quotas.csv", "unlabelled_to_label.csv", "unlabelled_to_label.gpkg",  # its fields without a label
    "field_uncertainty.parquet",
}  # fmt: skip
SETTINGS = DiagnosisSettings(block_km=2.0, buffer_km=0.5, min_fields=5, eval_min_per_stratum=8)
RUN_INFO = {
    "inputs": {"raster": {"path": "/data/ml_2021-08-01_2022-12-31_u0c.tif", "crs": "EPSG:4326"}, "fields": "/gt.gpkg"},
    "fields": {"counts": {"repaired": 3, "outside_raster": 2}, "examples": {"repaired": ["a", "b"]}},
    "timings_s": {"total": 12.5},
    "cluster": None,
}


def write_aoi_files(fields: pd.DataFrame, counts: pd.DataFrame, out_dir: Path, *, settings: DiagnosisSettings,
                    run_info: dict, map_window: MapWindow | None = None, seed: int = 0) -> dict[str, Path]:
    """What a run's tail (cropmon/tail.py) writes of one AOI's diagnosis, by the same functions: the diagnosis,
    slimmed for the pictures, tables, field lists and report; every field's uncertainty from the whole one. The
    field lists' polygons come from `fields` when it is a GeoDataFrame (a run reads them by feature id)."""
    out_dir = Path(out_dir)
    d = diagnose_run(fields, counts, settings=settings, seed=seed)
    slim = d.without_candidates()
    images = {name: render_image(name, slim, settings, map_window) for name in IMAGE_NAMES}
    geometries = (lambda rows: fields.geometry.loc[rows]) if isinstance(fields, gpd.GeoDataFrame) else None
    crs = map_window.crs if map_window is not None else RunFacts.of(run_info).raster_crs
    names = [*write_tables(slim, settings, out_dir),
             *write_field_lists(slim, settings, out_dir, crs=crs, geometries=geometries),
             *write_images(images, out_dir),
             *write_report(slim, images, out_dir, settings=settings, run_info=run_info, seed=seed),
             *write_field_uncertainty(d, fields, out_dir)]
    return {name: out_dir / name for name in names}


def aoi_specs(seed: int = 0, *, spring_barley_right: float = 0.3) -> list[dict]:
    """A synthetic AOI: Spring Barley mostly taken by Winter Barley, corns confused both ways, a clean wheat."""
    rng = np.random.default_rng(seed)
    plan = [("Winter Wheat", 0.95, "Winter Barley", 300), ("Winter Barley", 0.9, "Winter Wheat", 150),
            ("Spring Barley", spring_barley_right, "Winter Barley", 90), ("Grain Corn", 0.7, "Silage Corn", 80),
            ("Silage Corn", 0.65, "Grain Corn", 80)]  # fmt: skip
    specs = []
    for crop, p_right, other, n in plan:
        for _ in range(n):
            right = rng.random() < p_right
            specs.append(
                field(crop, crop if right else other, conf=float(rng.uniform(60, 95) if right else rng.uniform(30, 65)),
                      n_pixels=int(rng.integers(3, 90)), purity=float(rng.choice([0.6, 0.8, 1.0])),
                      x=float(rng.uniform(1.9, 2.2)), y=float(rng.uniform(49.9, 50.1)),
                      area_m2=float(rng.uniform(5e3, 9e4)), field_id=f"{crop[:2]}{len(specs):04d}")
            )  # fmt: skip
    specs += [field(None, "Winter Wheat", label="radish"), field(None, "Winter Wheat", label="radish")]
    specs += [field("Winter Wheat", None), field("Winter Wheat", "Winter Wheat", n_pixels=1, pixel_rule="all_touched")]
    return specs


def _window() -> MapWindow:
    rng = np.random.default_rng(1)
    gt = np.where(rng.random((40, 60)) < 0.3, -1, rng.choice([5, 6, 7], size=(40, 60)))
    pred = rng.choice([5, 6, 7, 20], size=(40, 60))
    return MapWindow(gt, pred, rng.uniform(10, 99, size=(40, 60)), (1.95, 2.0, 49.95, 49.98), "EPSG:4326")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    fields, counts = make_table(aoi_specs())
    geo = as_geo(fields)
    out = tmp_path_factory.mktemp("diagnosis")
    paths = write_aoi_files(geo, counts, out, settings=SETTINGS, run_info=RUN_INFO, map_window=_window(), seed=3)
    return fields, counts, out, paths


def test_every_file_is_written(run):
    _, _, out, paths = run
    assert set(paths) == FILES | {"map_window.png"}
    assert {p.name for p in out.iterdir()} == set(paths)
    assert all(paths[name] == out / name and paths[name].stat().st_size > 0 for name in paths)


def test_crop_metrics_csv_has_the_reference_format(tmp_path):
    fields, counts = make_table(hand_example())
    write_aoi_files(fields, counts, tmp_path, settings=DiagnosisSettings(min_fields=3), run_info={})
    lines = (tmp_path / "crop_metrics.csv").read_text().splitlines()
    assert lines[0].startswith("crop,num_fields,agreement_score,weighted_f1_score,agreement_ci_low,agreement_ci_high,")
    reference = [",".join(line.split(",")[:4]) for line in lines]
    assert reference == [
        "crop,num_fields,agreement_score,weighted_f1_score",
        "Winter Wheat,6,0.67,0.8",
        "Winter Barley,4,0.5,0.67",
        "Silage Corn,2,0.5,0.67",
        "Spring Barley,5,0.2,0.33",
        "Grain Corn,2,0,0",
        "Grassland Cultivated,0,,",
    ]


def test_confusion_csvs_match_scikit_learn(run):
    fields, _, out, _ = run
    ev = metrics.evaluable(fields)
    y_true = fields.loc[ev, "gt_label"]
    y_pred = fields.loc[ev, "majority_crop_label"]
    written = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert list(written.index) == list(written.columns) == list(CROP_NAMES)
    np.testing.assert_array_equal(written.to_numpy(), sk_confusion_matrix(y_true, y_pred, labels=list(CROP_NAMES)))
    pixels = pd.read_csv(out / "confusion_matrix_pixels.csv", index_col=0)
    assert pixels.to_numpy().sum() == fields.loc[ev, "n_pixels"].sum()
    pairs = pd.read_csv(out / "confusion_pairs.csv")
    assert {"crop_a", "crop_b", "a_as_b", "a_as_b_share", "b_as_a", "b_as_a_share", "mutual"} <= set(pairs.columns)


def test_underperforming_csv_carries_the_rule(run):
    _, _, out, _ = run
    flagged = pd.read_csv(out / "underperforming_crops.csv")
    assert set(flagged["rule"]) == {rule_text(SETTINGS)}
    assert "Spring Barley" in set(flagged["crop"])
    assert flagged.set_index("crop").at["Spring Barley", "reason"] == "absorbed_by:Winter Barley"


def test_field_lists_as_csv_and_geopackage(run):
    *_, out, _ = run
    for name in ("fields_to_label", "evaluation_fields"):
        table = pd.read_csv(out / f"{name}.csv")
        assert len(table) > 0
        assert [tuple(layer) for layer in pyogrio.list_layers(out / f"{name}.gpkg")] == [(name, "Polygon")]
        layer = gpd.read_file(out / f"{name}.gpkg", layer=name)
        assert list(layer["field_id"]) == list(table["field_id"]) and layer.crs.to_epsg() == 4326
    picks = pd.read_csv(out / "fields_to_label.csv")
    assert list(picks["rank"]) == list(range(1, len(picks) + 1))
    assert picks["reason"].str.len().gt(0).all() and picks["score"].notna().all()
    plan = pd.read_csv(out / "label_plan.csv")
    assert plan["quota"].sum() == len(picks)
    assert {"group", "role", "target", "available", "quota", "expected_ha", "eval_fields", "derivation"} <= set(
        plan.columns
    )


def _report(out: Path) -> str:
    return (out / "report.md").read_text()


def test_report_is_built_from_the_numbers(run):
    fields, counts, out, _ = run
    text = _report(out)
    overall = overall_of(fields, counts)
    picks = pd.read_csv(out / "fields_to_label.csv")
    held = pd.read_csv(out / "evaluation_fields.csv")
    assert f"{overall['agreement'] * 100:.1f} %" in text
    assert f"{metrics.evaluable(fields).sum():,} of {len(fields):,} fields were scored" in text
    assert f"Label {len(picks):,} fields" in text and f"hold back {len(held):,} fields" in text
    assert rule_text(SETTINGS) in text
    assert "**Spring Barley**" in text and "are predicted as Winter Barley" in text
    assert "Silage Corn and Grain Corn are confused both ways" in text or "Grain Corn and Silage Corn" in text
    # caveats: the unknown label with its count, the field without pixels, the all-touched fallback
    assert "'radish' (2)" in text and "1 fields got no pixel" in text and "all-touched fallback" in text
    # settings and run information, nested keys flattened
    assert "| block_km | 2.0 |" in text and "| seed | 3 |" in text
    assert "inputs.raster.path" in text and "fields.counts.repaired" in text and "timings_s.total" in text
    assert "# Crop diagnosis: ml_2021-08-01_2022-12-31_u0c.tif" in text
    for name in ("confusion_heatmap.png", "agreement_by_crop.png", "f1_vs_confidence.png", "block_error_map.png",
                 "map_window.png"):  # fmt: skip
        assert f"]({name})" in text


def test_other_numbers_give_other_sentences(tmp_path):
    fields, counts = make_table(aoi_specs(seed=1, spring_barley_right=0.95))
    write_aoi_files(fields, counts, tmp_path, settings=SETTINGS, run_info={})
    text = _report(tmp_path)
    assert "**Spring Barley**" not in text  # now fine
    assert "# Crop diagnosis\n" in text and "The pipeline passed no run information." in text
    overall = overall_of(fields, counts)
    assert f"{overall['agreement'] * 100:.1f} %" in text


def test_nothing_to_plan(tmp_path):
    specs = [field("Winter Wheat", "Winter Wheat", conf=90.0, x=2.0 + 0.001 * i) for i in range(40)]
    fields, counts = make_table(specs)
    paths = write_aoi_files(fields, counts, tmp_path, settings=DiagnosisSettings(), run_info={"inputs": None})
    text = _report(tmp_path)
    assert "No crop falls below the thresholds." in text and "Nothing to plan" in text
    assert "None: every field was scored" in text
    assert pd.read_csv(paths["fields_to_label.csv"]).empty
    # a plain table without any CRS: the layer is still written, empty
    layer = gpd.read_file(paths["fields_to_label.gpkg"], layer="fields_to_label")
    assert layer.empty


def test_a_crop_spread_over_many_absorbers(tmp_path):
    others = ["Winter Barley", "Triticale", "Spring Barley", "Canola"]
    specs = [field("Winter Rye", other, x=2.0 + 0.01 * i) for i, other in enumerate(others * 5)]
    specs += [field(other, other, x=2.1 + 0.001 * i) for i, other in enumerate(others * 10)]
    fields, counts = make_table(specs)
    write_aoi_files(fields, counts, tmp_path, settings=DiagnosisSettings(), run_info={"fields": {"counts": {"x": "y"}}})
    text = _report(tmp_path)
    # 0 of 20 right: Wilson [0, 0.161]; F1 from the same interval on 0 of the 20 fields that are Winter Rye on
    # either side, 2 J / (1 + J) -> [0, 0.28]: certainly under both thresholds.
    high = binomtest(0, 20).proportion_ci(method="wilson").high
    f1_high = 2 * high / (1 + high)
    sentence = (f"**Winter Rye** (critical, certainly; agreement 0.00 [0.00, {high:.2f}],"
                f" F1 0.00 [0.00, {f1_high:.2f}]):")
    assert sentence + " it is never predicted;" in text
    for other in others:
        assert f"25 % of its fields are predicted as {other}" in text


def test_plain_table_gives_point_layers(tmp_path):
    fields, counts = make_table(aoi_specs())
    info = {"inputs": {"raster": {"crs": "EPSG:4326"}, "fields": {"path": "/data/gt.gpkg"}, "digital_twin": True}}
    paths = write_aoi_files(fields, counts, tmp_path, settings=SETTINGS, run_info=info)
    assert "# Crop diagnosis: gt.gpkg (digital twin)" in _report(tmp_path)
    layer = gpd.read_file(paths["fields_to_label.gpkg"], layer="fields_to_label")
    assert len(layer) and set(layer.geom_type) == {"Point"} and layer.crs.to_epsg() == 4326
    np.testing.assert_allclose(layer.geometry.x, pd.read_csv(paths["fields_to_label.csv"])["x"], atol=1e-6)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_with_the_same_pictures(run):
    _, _, out, _ = run
    page = _Page()
    page.feed((out / "report.html").read_text())
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    pngs = sorted(p for p in out.iterdir() if p.suffix == ".png")
    assert len(images) == len(pngs) == 5
    decoded = {base64.b64decode(src.split(",", 1)[1]) for src in images}
    assert decoded == {p.read_bytes() for p in pngs}
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not [a for _, attrs in page.tags for a in attrs.values() if a and re.match(r"(https?:)?//", a)]
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe")]
    assert sum(tag == "table" for tag, _ in page.tags) >= 6


CHROMIUM = shutil.which("chromium") or (Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() else None)
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.tables = document.querySelectorAll('table').length;
});
</script></body>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90, check=True)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is absent (Debian package chromium)")
def test_page_shows_its_tables_and_images_in_chromium(run, tmp_path):
    _, _, out, _ = run
    probed = tmp_path / "probed.html"  # the report itself has no script; the probe goes into a copy
    probed.write_text((out / "report.html").read_text().replace("</body>", PROBE))
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    found = dict(re.findall(r'data-(\w+)="(\d+)"', body))
    assert found == {"images": "5", "decoded": "5", "tables": found["tables"]} and int(found["tables"]) >= 6
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", (out / "report.html").as_uri())
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables, figures


def test_ties_are_told_per_crop_with_the_rule_used(tmp_path):
    specs = [field("Fallow", "Fallow", purity=0.5, x=2.0 + 0.001 * i) for i in range(3)]
    specs += [field("Winter Wheat", "Winter Wheat", purity=0.5, x=2.1)]
    specs += [field("Winter Wheat", "Winter Wheat", x=2.2 + 0.001 * i) for i in range(30)]
    fields, counts = make_table(specs)
    fields.loc[:3, "tie"] = True
    write_aoi_files(fields, counts, tmp_path, settings=DiagnosisSettings(),
                    run_info={"settings": {"tie_break": "lowest_id"}})
    text = _report(tmp_path)
    assert "4 fields had a tied majority" in text and "to the lowest class id (tie_break = lowest_id)" in text
    assert "by ground-truth crop: Fallow 3, Winter Wheat 1." in text


def test_overlaps_are_told_from_the_manifest(tmp_path):
    specs = [field("Winter Wheat", "Winter Wheat", x=2.0 + 0.001 * i) for i in range(30)]
    fields, counts = make_table(specs)
    run_info = {"fields": {"overlapping_pairs": 12, "duplicate_geometry_pairs": 4, "shared_pixels": 1234,
                           "counts": {"fully_inside_other_fields": 7}}}
    write_aoi_files(fields, counts, tmp_path, settings=DiagnosisSettings(), run_info=run_info)
    text = _report(tmp_path)
    assert "12 pairs of fields overlap: 1,234 pixels lie in more than one field, 4 pairs are the same polygon" in text
    assert "7 fields lie wholly inside others" in text and "a shared pixel counts in each field" in text


LAYOUT_PROBE = """<script>
window.addEventListener('load', () => {
  const root = document.documentElement, body = document.body, width = root.clientWidth;
  const inWrap = el => el.parentElement && el.parentElement.closest('.table-wrap');
  const outside = [...body.querySelectorAll('*')].filter(el => !inWrap(el)).filter(el => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && (r.right > width + 1 || r.left < -1);
  });
  const wraps = [...document.querySelectorAll('.table-wrap')];
  const flagged = wraps.find(w => w.getAttribute('aria-label').startsWith('underperforming_crops.csv'));
  const tall = wraps.reduce((a, w) => (w.scrollHeight - w.clientHeight > a.scrollHeight - a.clientHeight ? w : a));
  const wideBefore = flagged.scrollWidth - flagged.clientWidth, tallBefore = tall.scrollHeight - tall.clientHeight;
  flagged.scrollLeft = flagged.scrollWidth;  // scrolled right: the crop names stay in view
  tall.scrollTop = tall.scrollHeight;  // scrolled down: the header stays in view
  const box = flagged.getBoundingClientRect(), tallBox = tall.getBoundingClientRect();
  const links = [...document.querySelectorAll('nav.toc a')];
  Object.assign(body.dataset, {
    viewport: width, page: root.scrollWidth, outside: outside.length,
    wide: wideBefore > 0 ? 1 : 0, tall: tallBefore > 0 ? 1 : 0,
    column: Math.round(flagged.querySelector('tbody td').getBoundingClientRect().left - box.left),
    header: Math.round(tall.querySelector('thead th').getBoundingClientRect().top - tallBox.top),
    numbers: getComputedStyle(flagged.querySelector('tbody td.num')).textAlign,
    words: getComputedStyle(flagged.querySelector('tbody td:not(.num)')).textAlign,
    links: links.length, targets: links.filter(a => document.getElementById(a.hash.slice(1))).length,
  });
});
</script></body>"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is absent (Debian package chromium)")
def test_wide_tables_scroll_in_their_box_at_1300_px(run, tmp_path):
    """No element runs off a 1300 px window: wide tables scroll inside their box, their header and first column
    stay in view when scrolled, numbers align right, and the contents link every section."""
    _, _, out, _ = run
    probed = tmp_path / "layout.html"
    probed.write_text((out / "report.html").read_text().replace("</body>", LAYOUT_PROBE))
    dom = _chromium(tmp_path, "--window-size=1300,2400", "--virtual-time-budget=10000", "--dump-dom",
                    probed.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    found = dict(re.findall(r'data-(\w+)="([^"]*)"', body))
    assert int(found["page"]) == int(found["viewport"]) and 1250 <= int(found["viewport"]) <= 1300, found
    assert found["outside"] == "0", found  # nothing outside the table boxes is wider than the page
    assert found["wide"] == "1" and found["tall"] == "1", found  # the probe did scroll something
    assert 0 <= int(found["column"]) <= 2 and 0 <= int(found["header"]) <= 2, found  # sticky column and header
    assert (found["numbers"], found["words"]) == ("right", "left"), found
    # 10 sections: map accuracy and areas, the uncertainty ranking and suspects, the fields without a label included
    assert found["links"] == found["targets"] == "10", found


def test_a_notebook_fragment_styles_only_the_report():
    """The HTML for a notebook cell is a fragment whose every CSS rule is scoped to the report."""
    from cropmon.report.document import Heading, Paragraph, Table, render_html

    blocks = [Heading("Headline"), Paragraph("x **y**"), Heading("Plan"),
              Table(pd.DataFrame({"crop": ["Flax"], "n": [1234], "share": ["12.5 %"], "why": ["a;b"]}), "t")]
    fragment = render_html("Report", blocks, page=False)
    assert not re.search(r"<(html|head|body|!doctype)", fragment, re.I) and fragment.startswith("<div class='cropmon")
    css = re.search(r"<style>(.*?)</style>", fragment, re.S).group(1)
    selectors = [s.strip() for rule in css.split("}") if "{" in rule for s in rule.split("{")[0].split(",")]
    assert selectors and all(s.startswith(".cropmon-report") for s in selectors), selectors
    assert "<td class='num'>1,234</td>" in fragment and "<td class='num'>12.5 %</td>" in fragment
    assert "<td>a;b</td>" in fragment and "<a href='#plan'>Plan</a>" in fragment and "<h2 id='plan'>" in fragment
    assert render_html("Report", blocks).startswith("<!doctype html>")
