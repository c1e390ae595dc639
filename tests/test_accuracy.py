"""Map accuracy and area estimators (diagnosis/accuracy.py) against the papers' worked examples, a brute-force
linearisation, cluster properties and a simulation with a known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cropmon.catalogue import Catalogue
from cropmon.diagnosis import accuracy
from cropmon.diagnosis.accuracy import ErrorMatrix, Sample, SimpleCounts, prepare, variances

# Olofsson et al. 2014 (RSE 148:42-57), section 5 example: sample counts, rows = map (deforestation, forest gain,
# stable forest, stable non-forest), columns = reference; mapped pixels; 30 m pixels (0.09 ha).
OLOFSSON_COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
OLOFSSON_MAPPED_PX = np.array([200_000, 150_000, 3_200_000, 6_450_000])
OLOFSSON_MATRIX = np.array([  # the paper's estimated area proportions, as printed (4 decimals)
    [0.0176, 0.0000, 0.0013, 0.0011],
    [0.0000, 0.0110, 0.0016, 0.0024],
    [0.0019, 0.0000, 0.2967, 0.0213],
    [0.0040, 0.0020, 0.0179, 0.6212],
])
OLOFSSON_AREA_HA = [21_158, 11_686, 285_770, 581_386]  # error-adjusted areas, +- the 95 % half widths below
OLOFSSON_AREA_CI_HA = [6_158, 3_756, 15_510, 16_282]
OLOFSSON_UA = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]

# Stehman 2014 (IJRS 35:4923-4939), section 5 numerical example: 4 strata of 40,000 / 30,000 / 20,000 / 10,000
# pixels, 10 sample pixels each, strata that are not the map classes (the map's label and the reference per pixel).
STEHMAN_STRATA = [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10
STEHMAN_MAP = "AAAAAAABBB" "ABBBBBBBBB" "BBCCCCCCBB" "DDDDDDDDDD"
STEHMAN_REFERENCE = "AAAAACBABC" "ABBBBBAABB" "CCCCCDDBBA" "DDDDDDDCCB"
STEHMAN_SIZES = np.array([40_000, 30_000, 20_000, 10_000])


def _estimates(sample: Sample, sizes, k: int) -> accuracy.Estimates:
    return ErrorMatrix.of(prepare(sample, np.asarray(sizes, float)), k).estimates()


def test_olofsson_2014_worked_example_to_the_printed_digits():
    mapped_ha = OLOFSSON_MAPPED_PX * 0.09
    est = _estimates(SimpleCounts(OLOFSSON_COUNTS, mapped_ha).sample(), mapped_ha, 4)
    z = 1.96  # the paper's 95 % intervals are +- 1.96 SE
    np.testing.assert_array_equal(np.round(est.matrix, 4), OLOFSSON_MATRIX)
    np.testing.assert_array_equal(np.round(est.area), OLOFSSON_AREA_HA)
    np.testing.assert_array_equal(np.round(z * est.area_se), OLOFSSON_AREA_CI_HA)
    for k, (ua, half) in enumerate(OLOFSSON_UA):
        assert (round(est.ua[k], 2), round(z * est.ua_se[k], 2)) == (ua, half)
    assert (round(est.pa[0], 2), round(z * est.pa_se[0], 2)) == (0.75, 0.21)  # deforestation
    assert (round(est.oa, 2), round(z * est.oa_se, 2)) == (0.95, 0.02)


def _stehman_sample(*, fpc: bool) -> Sample:
    letters = {c: i for i, c in enumerate("ABCD")}
    m = np.array([letters[c] for c in STEHMAN_MAP])
    r = np.array([letters[c] for c in STEHMAN_REFERENCE])
    s = np.array(STEHMAN_STRATA)
    n = len(s)
    factor = 1 - 10 / STEHMAN_SIZES if fpc else np.ones(4)
    return Sample(cell=m * 4 + r, stratum=s, psu=np.arange(n), pixels=np.ones(n), weight=np.ones(n),
                  psu_stratum=s, fpc=factor, n_cells=16)


def test_stehman_2014_numerical_example_strata_are_not_the_map_classes():
    """The paper's printed results (3 decimals), with its finite-population correction (1 - n_h / N_h).

    SE(PA_B): the paper prints 0.114; its own variance formula for a ratio of stratified totals gives 0.1165 (so
    do the R packages mapaccuracy and mapac on these data), which is what cropmon reproduces: docs/accuracy.md."""
    est = _estimates(_stehman_sample(fpc=True), STEHMAN_SIZES, 4)
    assert (round(est.share[0], 2), round(est.share_se[0], 3)) == (0.35, 0.082)  # area proportion of A
    assert (round(est.share[2], 2), round(est.share_se[2], 3)) == (0.20, 0.064)  # of C
    assert (round(est.oa, 2), round(est.oa_se, 3)) == (0.63, 0.085)
    assert (round(est.ua[1], 3), round(est.ua_se[1], 3)) == (0.574, 0.125)  # user's accuracy of B
    assert round(est.pa[1], 3) == 0.794 and round(est.pa_se[1], 3) == 0.117  # paper: 0.114 (see above)
    assert round(est.matrix[1, 2], 2) == 0.08  # p_BC
    # without the correction the standard errors grow, by 1 / sqrt(1 - 10 / 10,000) at most (the smallest stratum)
    plain = _estimates(_stehman_sample(fpc=False), STEHMAN_SIZES, 4)
    ratio = plain.share_se / est.share_se
    assert (ratio > 1).all() and (ratio <= 1 / np.sqrt(1 - 10 / 10_000) + 1e-12).all()


def _brute_force(sample: Sample, sizes: np.ndarray | None, coefficients: np.ndarray) -> np.ndarray:
    """The linearised variance written out unit by unit (loops, dense): an independent route to `variances`."""
    n_strata = len(sizes) if sizes is not None else sample.stratum.max() + 1
    wm = sample.weight * sample.pixels
    if sizes is None:
        a = wm.copy()
        q = np.zeros((n_strata, sample.n_cells))
    else:
        m_s = np.array([wm[sample.stratum == s].sum() for s in range(n_strata)])
        a = np.array([sizes[s] * wm[i] / m_s[s] for i, s in enumerate(sample.stratum)])
        q = np.zeros((n_strata, sample.n_cells))
        for i, (s, c) in enumerate(zip(sample.stratum, sample.cell, strict=True)):
            q[s, c] += wm[i] / m_s[s]
    out = []
    for v in range(coefficients.shape[1]):
        col = coefficients[:, v]
        z = np.zeros(sample.n_psu)
        for i in range(len(sample.cell)):
            z[sample.psu[i]] += a[i] * (col[sample.cell[i]] - q[sample.stratum[i]] @ col)
        total = 0.0
        for g in np.unique(sample.psu_stratum):
            zg = z[sample.psu_stratum == g]
            if len(zg) > 1:
                centre = zg.mean() if sample.center else 0.0
                total += sample.fpc[g] * len(zg) / (len(zg) - 1) * ((zg - centre) ** 2).sum()
        out.append(total)
    return np.array(out)


@st.composite
def samples(draw):
    k = draw(st.integers(2, 4))
    n_psu = draw(st.integers(2, 25))
    n_strata = draw(st.integers(1, 4))
    units = []
    for psu in range(n_psu):
        for _ in range(draw(st.integers(1, 3))):
            units.append((psu, draw(st.integers(0, n_strata - 1)), draw(st.integers(0, k - 1)),
                          draw(st.integers(0, k - 1)), draw(st.integers(1, 50))))
    psu, stratum, m, r, px = (np.array(c) for c in zip(*units, strict=True))
    weights_of_psu = np.array(draw(st.lists(st.sampled_from([1.0, 2.5, 10.0]), min_size=n_psu, max_size=n_psu)))
    n_groups = draw(st.integers(1, 3))
    psu_stratum = np.array(draw(st.lists(st.integers(0, n_groups - 1), min_size=n_psu, max_size=n_psu)))
    fpc = np.array(draw(st.lists(st.sampled_from([1.0, 0.9, 0.5]), min_size=n_groups, max_size=n_groups)))
    sample = Sample(cell=m * k + r, stratum=stratum, psu=psu, pixels=px.astype(float),
                    weight=weights_of_psu[psu], psu_stratum=psu_stratum, fpc=fpc, n_cells=k * k,
                    center=draw(st.booleans()))
    calibrate = draw(st.booleans())
    sizes = np.array(draw(st.lists(st.floats(10, 1e6), min_size=n_strata, max_size=n_strata))) if calibrate else None
    return sample, sizes, k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=samples(), seed=st.integers(0, 1000))
def test_variances_equal_a_unit_by_unit_linearisation(case, seed):
    sample, sizes, k = case
    if sizes is not None and len(np.unique(sample.stratum)) < len(sizes):
        sizes = sizes.copy()
        sizes[~np.isin(np.arange(len(sizes)), sample.stratum)] = 0.0  # a stratum without units has no size
    coefficients = np.random.default_rng(seed).normal(size=(k * k, 4))
    coefficients[:, 0] = 1.0  # the whole population: 0 when it is calibrated
    lin = prepare(sample, sizes)
    got = variances(lin, sp.csc_matrix(coefficients))
    want = _brute_force(sample, sizes, coefficients)
    # the sparse route expands sum (S - A Q)^2 into squares: its rounding is relative to the squares of the totals
    scale = ((sizes.sum() if sizes is not None else (sample.weight * sample.pixels).sum())
             * np.abs(coefficients).max()) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12 * scale)
    if sizes is not None:
        assert got[0] == pytest.approx(0.0, abs=1e-12 * scale)
        assert lin.totals.sum() == pytest.approx(sizes.sum())


def _fields_of(counts: np.ndarray, pixels_per_field: int) -> Sample:
    """Olofsson's sample as homogeneous fields of `pixels_per_field` pixels (one field per sample unit)."""
    simple = SimpleCounts(counts, OLOFSSON_MAPPED_PX * 0.09).sample()
    return Sample(cell=simple.cell, stratum=simple.stratum, psu=simple.psu,
                  pixels=np.full(len(simple.cell), float(pixels_per_field)), weight=simple.weight,
                  psu_stratum=simple.psu_stratum, fpc=simple.fpc, n_cells=simple.n_cells)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(2, 400))
def test_large_homogeneous_fields_count_as_one_unit_each(m):
    """Fields of m identical pixels: the point estimates and the cluster interval are those of one pixel per field;
    the pixels taken as independent would give an interval sqrt((n_h m - 1) / (n_h - 1)) narrower."""
    sizes = OLOFSSON_MAPPED_PX * 0.09
    one = _estimates(_fields_of(OLOFSSON_COUNTS, 1), sizes, 4)
    big = _estimates(_fields_of(OLOFSSON_COUNTS, m), sizes, 4)
    np.testing.assert_allclose(big.area, one.area, rtol=1e-12)
    np.testing.assert_allclose(big.area_se, one.area_se, rtol=1e-9)
    np.testing.assert_allclose(big.ua_se, one.ua_se, rtol=1e-9)
    pixels = SimpleCounts(OLOFSSON_COUNTS * m, sizes).sample()
    naive = _estimates(pixels, sizes, 4)
    n_h = OLOFSSON_COUNTS.sum(axis=1)
    np.testing.assert_allclose(one.ua_se / naive.ua_se, np.sqrt((n_h * m - 1) / (n_h - 1)), rtol=1e-9)
    assert (naive.area_se < one.area_se).all()


def test_fields_that_span_two_map_classes_are_one_primary_unit():
    """A field half mapped as its class and half as another: its two parts are one unit of variance; cutting it
    into two independent fields would change the standard errors."""
    k = 2
    # 6 fields: (pixels of map class 0, pixels of map class 1, reference)
    fields = [(10, 0, 0), (8, 2, 0), (5, 5, 1), (0, 10, 1), (2, 8, 1), (9, 1, 0)]
    units = [(f, c, px, ref) for f, (a, b, ref) in enumerate(fields) for c, px in ((0, a), (1, b)) if px]
    f, c, px, ref = (np.array(x) for x in zip(*units, strict=True))
    majority = np.array([0 if a >= b else 1 for a, b, _ in fields])
    joined = Sample(cell=c * k + ref, stratum=c, psu=f, pixels=px.astype(float), weight=np.ones(len(f)),
                    psu_stratum=majority, fpc=np.ones(k), n_cells=k * k)
    split = Sample(cell=c * k + ref, stratum=c, psu=np.arange(len(f)), pixels=px.astype(float),
                   weight=np.ones(len(f)), psu_stratum=c, fpc=np.ones(k), n_cells=k * k)
    a, b = _estimates(joined, [1e4, 1e4], k), _estimates(split, [1e4, 1e4], k)
    np.testing.assert_allclose(a.area, b.area)  # the same point estimates
    assert not np.allclose(a.area_se, b.area_se)


def _simulated_assessment(rng: np.random.Generator, *, n_fields: int, size: int, parcel: int = 5):
    """A landscape of parcels with a true class each; a map that errs per parcel (biased areas) and per pixel; a
    simple random sample of parcels as the ground-truth fields, as `assess` takes them (a field's pixels per map
    class are its units, its majority class its variance stratum). Returns (true area, mapped area, estimates).

    250 of 6,400 parcels: with 60 the interval of the largest class covers its true area in only ~83 % of seeds,
    because its omission errors are rare events (~1.5 mis-mapped fields in a sample), which a normal interval on a
    handful of cases cannot capture (docs/accuracy.md)."""
    k = 3
    per_side = size // parcel
    truth_parcels = rng.choice(k, size=(per_side, per_side), p=[0.5, 0.3, 0.2])
    # parcel errors: class 1 is mapped as 2 in 30 % of its parcels, class 0 as 1 in 5 %, class 2 as 1 in 10 %
    wrong_to = np.array([1, 2, 1])
    wrong = rng.random((per_side, per_side)) < np.array([0.05, 0.3, 0.1])[truth_parcels]
    map_parcels = np.where(wrong, wrong_to[truth_parcels], truth_parcels)
    truth = np.kron(truth_parcels, np.ones((parcel, parcel), int))
    mapped = np.kron(map_parcels, np.ones((parcel, parcel), int))
    noise = rng.random(mapped.shape) < 0.05
    mapped = np.where(noise, rng.integers(0, k, mapped.shape), mapped)
    true_area = np.bincount(truth.ravel(), minlength=k).astype(float)
    map_area = np.bincount(mapped.ravel(), minlength=k).astype(float)
    chosen = rng.choice(per_side * per_side, size=n_fields, replace=False)
    units = []
    for f, p in enumerate(chosen):
        r0, c0 = (p // per_side) * parcel, (p % per_side) * parcel
        hist = np.bincount(mapped[r0:r0 + parcel, c0:c0 + parcel].ravel(), minlength=k)
        ref = truth_parcels.ravel()[p]
        units += [(f, cls, n, ref, int(hist.argmax())) for cls, n in enumerate(hist) if n]
    f, cls, n, ref, home = (np.array(x) for x in zip(*units, strict=True))
    psu_stratum = np.zeros(n_fields, np.int64)
    psu_stratum[f] = home
    sample = Sample(cell=cls * k + ref, stratum=cls, psu=f, pixels=n.astype(float), weight=np.ones(len(f)),
                    psu_stratum=psu_stratum, fpc=np.ones(k), n_cells=k * k, center=False)
    present = np.bincount(cls, minlength=k) > 0
    return true_area, map_area, _estimates(sample, np.where(present, map_area, 0.0), k)


def test_simulation_the_adjusted_area_interval_covers_the_truth_and_the_mapped_area_is_biased():
    rng = np.random.default_rng(20140219)
    z = accuracy.z_value(0.95)
    seeds = 400
    covered = np.zeros(3)
    mapped_error, adjusted_error = np.zeros((seeds, 3)), np.zeros((seeds, 3))
    for s in range(seeds):
        true_area, map_area, est = _simulated_assessment(rng, n_fields=250, size=400)
        covered += np.abs(est.area - true_area) <= z * est.area_se
        mapped_error[s], adjusted_error[s] = map_area - true_area, est.area - true_area
    coverage = covered / seeds
    assert ((coverage > 0.91) & (coverage < 0.985)).all(), coverage  # 95 % +- 3 binomial SE of 400 seeds
    scale = true_area.sum()
    # the map gives 9 % of the AOI (30 % of class 1's parcels) to class 2 and takes back less: biased in every seed
    assert (mapped_error[:, 1] < 0).all() and mapped_error[:, 1].mean() / scale < -0.03
    assert (mapped_error[:, 2] > 0).all() and mapped_error[:, 2].mean() / scale > 0.03
    se_of_mean = adjusted_error.std(axis=0) / np.sqrt(seeds)
    assert (np.abs(adjusted_error.mean(axis=0)) < 3 * se_of_mean).all()  # the adjusted areas are not


def test_assess_on_a_per_field_table():
    """`assess` on a small per-field table: fields as units, strata by mapped area, exclusions counted."""
    cat = Catalogue.from_mapping({"A": ["a"], "B": ["b"], "C": ["c"]})
    fields = pd.DataFrame({
        "gt_class": pd.array([0, 0, 1, 1, 0, None, 2], dtype="Int16"),
        "majority_crop": [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 2.0],
        "n_pixels": [10, 12, 8, 6, 4, 5, 3],
        "pixel_rule": ["centre"] * 6 + ["all_touched"],
        "n_pixels_shared": [0, 0, 0, 0, 4, 0, 0],
    })
    counts = pd.DataFrame({"A": [10, 11, 0, 5, 4, 0, 0], "B": [0, 1, 8, 1, 0, 5, 0], "C": [0] * 6 + [3]})
    mapped = pd.DataFrame({"crop": ["A", "B", "C"], "area_ha": [50.0, 30.0, 20.0]})
    result = accuracy.assess(fields, counts, mapped, catalogue=cat)
    assert result.design["fields_left_out"] == {"unknown_label": 1, "no_pixel": 0, "all_touched": 1,
                                                "shared_pixels": 1, "outside_mask": 0}
    assert result.design["n_fields"] == 4 and result.design["not_assessed"] == {"C": 20.0}
    table = result.table.set_index("crop")
    # stratum A: fields 0, 1, 3 (pixels 10 + 11 + 5 = 26, of which 21 reference A): UA_A = 21 / 26
    assert table.at["A", "users_accuracy"] == pytest.approx(21 / 26)
    assert table.at["A", "n_fields"] == 3 and table.at["A", "n_pixels"] == 26
    assert table.at["C", "note"] == "not_assessed" and np.isnan(table.at["C", "adjusted_ha"])
    assert table.at[accuracy.OVERALL, "adjusted_ha"] == pytest.approx(80.0)  # A and B: the assessed population
    assert result.error_matrix.to_numpy().sum() == pytest.approx(1.0)
    # a mask that leaves out field 0
    inside = np.array([False, True, True, True, True, True, True])
    masked = accuracy.assess(fields, counts, mapped, catalogue=cat, in_population=inside)
    assert masked.design["fields_left_out"]["outside_mask"] == 1 and masked.design["n_fields"] == 3


def test_pooled_aois_add_as_strata_of_one_population():
    """Two AOIs pooled = one assessment whose strata are (AOI, map class): the same areas, UA, PA, OA, SEs."""
    cat = Catalogue.from_mapping({"A": ["a"], "B": ["b"]})
    rng = np.random.default_rng(5)

    def aoi(n):
        gt = rng.integers(0, 2, n)
        pixels_a = rng.integers(1, 30, n) * (rng.random(n) < 0.8)
        pixels_b = rng.integers(1, 30, n) * (rng.random(n) < 0.5) + (pixels_a == 0)
        fields = pd.DataFrame({"gt_class": pd.array(gt, dtype="Int16"), "n_pixels": pixels_a + pixels_b,
                               "majority_crop": np.where(pixels_a >= pixels_b, 0.0, 1.0),
                               "pixel_rule": "centre", "n_pixels_shared": 0})
        counts = pd.DataFrame({"A": pixels_a, "B": pixels_b})
        mapped = pd.DataFrame({"crop": ["A", "B"], "area_ha": rng.uniform(100, 1000, 2)})
        return fields, counts, mapped

    parts = [aoi(40), aoi(25)]
    each = [accuracy.assess(f, c, m, catalogue=cat) for f, c, m in parts]
    pooled = accuracy.pooled(each, cat).table.set_index("crop")
    # the same as one sample with 4 strata (AOI x class) and the AOIs' fields as primary units
    units, psu0 = [], 0
    for a, (fields, counts, _) in enumerate(parts):
        for f in range(len(fields)):
            for c, px in enumerate(counts.iloc[f]):
                if px:
                    units.append((psu0 + f, 2 * a + c, c, int(fields["gt_class"][f]), px,
                                  2 * a + int(fields["majority_crop"][f])))
        psu0 += len(fields)
    psu, stratum, m, r, px, home = (np.array(x) for x in zip(*units, strict=True))
    psu_stratum = np.zeros(psu0, np.int64)
    psu_stratum[psu] = home
    sample = Sample(cell=m * 2 + r, stratum=stratum, psu=psu, pixels=px.astype(float), weight=np.ones(len(psu)),
                    psu_stratum=psu_stratum, fpc=np.ones(4), n_cells=4, center=False)
    sizes = np.concatenate([p[2]["area_ha"].to_numpy() * 1e4 for p in parts])
    est = _estimates(sample, sizes, 2)
    np.testing.assert_allclose(pooled.loc[["A", "B"], "adjusted_ha"], est.area / 1e4, rtol=1e-9)
    np.testing.assert_allclose(pooled.loc[["A", "B"], "adjusted_ha_se"], est.area_se / 1e4, rtol=1e-9)
    np.testing.assert_allclose(pooled.loc[["A", "B"], "users_accuracy_se"], est.ua_se, rtol=1e-9)
    np.testing.assert_allclose(pooled.loc[["A", "B"], "producers_accuracy_se"], est.pa_se, rtol=1e-9)
    assert pooled.at[accuracy.OVERALL, "users_accuracy_se"] == pytest.approx(est.oa_se, rel=1e-9)


def test_a_run_writes_the_assessment_its_report_and_manifest(tmp_path):
    """End to end on a small twin: the files, the overall row, the report's section and figure, run.json, and the
    Diagnosis.accuracy_assessment (what cropmon.diagnose returns) equal to the CSV."""
    import json

    import rasterio

    import cropmon
    from cropmon.cli import EXIT_OK, main
    from cropmon.twin import make_twin

    twin = make_twin(tmp_path / "twin", scale=1 / 16, seed=5)
    out = tmp_path / "out"
    assert main(["run", "--raster", str(twin.raster), "--fields", str(twin.fields), "--out", str(out),
                 "--scheduler", "threads", "--progress", "off"]) == EXIT_OK
    table = pd.read_csv(out / "accuracy_assessment.csv")
    assert list(table.columns) == list(accuracy.ASSESSMENT_COLUMNS) and table["crop"].iloc[-1] == accuracy.OVERALL
    overall = table.iloc[-1]
    assert 0 < overall["users_accuracy_ci_low"] < overall["users_accuracy"] < overall["users_accuracy_ci_high"] < 1
    assert table["adjusted_ha"].iloc[:-1].sum() == pytest.approx(overall["adjusted_ha"], rel=1e-4)
    matrix = pd.read_csv(out / "error_matrix_area.csv", index_col=0)
    assert matrix.loc["total", "total"] == pytest.approx(1.0, abs=1e-5)
    mapped = pd.read_csv(out / "mapped_area.csv")
    with rasterio.open(twin.raster) as src:
        classes = src.read(3)
    np.testing.assert_array_equal(mapped["pixels"], np.bincount(classes.ravel(), minlength=32)[:32])
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["accuracy_assessment"]["design"]["assumption"] == accuracy.DESIGN_ASSUMPTION
    assert manifest["accuracy_assessment"]["overall_accuracy"] == pytest.approx(overall["users_accuracy"], abs=1e-4)
    assert manifest["mapped_area"]["valid_pixels"] == classes.size
    assert manifest["evaluation_design"]["blocks"] >= 1
    assert {"accuracy_assessment.csv", "error_matrix_area.csv", "mapped_area.csv", "area_adjusted.png"} <= set(
        manifest["outputs"])
    report = (out / "report.md").read_text()
    assert "## Map accuracy and crop areas (Olofsson et al. 2014, Stehman 2014)" in report
    assert "The ground-truth fields are not a probability sample of the AOI" in report
    assert "area_adjusted.png" in report and "Mapped but in no sampled GT field: Grassland Cultivated" in report
    d = cropmon.diagnose(cropmon.analyse(twin.raster, twin.fields, scheduler="threads"))
    api = d.accuracy_assessment
    np.testing.assert_allclose(api["adjusted_ha"].to_numpy(float), table["adjusted_ha"].to_numpy(float), rtol=1e-4,
                               atol=1e-4)
    assert d.error_matrix_area.shape == (32, 32)
