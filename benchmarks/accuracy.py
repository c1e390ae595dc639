"""The accuracy assessment on the full twin: what the estimators cost, how often their intervals cover a known
truth, and the twin's mapped vs error-adjusted areas per crop; with the papers' worked examples beside cropmon's.

1. Cost: `diagnosis.accuracy.assess` alone, and the whole diagnosis with and without it (`diagnose_run` with and
   without the mapped area), in-process on the full twin's per-field table, median of `--repeats` (wall and CPU).
2. Coverage: the simulation of tests/test_accuracy.py (a parcel landscape with a known truth, a map with biased
   errors, a simple random sample of parcels as the GT) over `--seeds` seeds: how often the 95 % interval of each
   class's adjusted area covers its true area, and the mapped area's bias, for 60 and 250 fields.
3. The full twin's mapped vs adjusted areas per crop (accuracy_assessment.csv's numbers).
4. Olofsson et al. 2014 and Stehman 2014: the printed figures beside cropmon's.

Usage: python benchmarks/accuracy.py [--repeats 5] [--seeds 400]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from engine import machine, twin_inputs  # noqa: E402

RESULTS = HERE / "results"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, repeats: int) -> tuple[float, float, list[float]]:
    fn()  # warm
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
    return statistics.median(walls), statistics.median(cpus), walls


def cost(results, repeats: int) -> list[str]:
    from cropmon.diagnosis import accuracy
    from cropmon.diagnosis.diagnose import diagnose_run
    from cropmon.diagnosis.settings import DiagnosisSettings

    s = DiagnosisSettings()
    table, counts, mapped = results.table, results.class_counts, results.mapped_area
    rows = [("accuracy.assess (the estimators with their intervals)",
             timed(lambda: accuracy.assess(table, counts, mapped), repeats)),
            ("diagnose_run without the mapped area (no assessment)",
             timed(lambda: diagnose_run(table, counts, settings=s), repeats)),
            ("diagnose_run with it (the run's diagnosis task)",
             timed(lambda: diagnose_run(table, counts, settings=s, mapped_area=mapped), repeats))]
    lines = ["| step | wall s (median) | CPU s (median) | wall runs |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {w:.3f} | {c:.3f} | {', '.join(f'{x:.3f}' for x in walls)} |"
              for name, (w, c, walls) in rows]
    return lines


def coverage(seeds: int) -> list[str]:
    from test_accuracy import _simulated_assessment

    from cropmon.diagnosis.accuracy import z_value

    z = z_value(0.95)
    lines = ["| GT fields (of 6,400 parcels) | coverage class 0 / 1 / 2 | mapped-area bias class 1 / 2 (share of the"
             " AOI) | adjusted-area bias class 1 / 2 | seconds |", "| --- | --- | --- | --- | --- |"]
    for n_fields in (60, 250):
        rng = np.random.default_rng(20140219)
        t0 = time.perf_counter()
        covered = np.zeros(3)
        mapped_err, adjusted_err = [], []
        for _ in range(seeds):
            truth, mapped, est = _simulated_assessment(rng, n_fields=n_fields, size=400)
            covered += np.abs(est.area - truth) <= z * est.area_se
            mapped_err.append((mapped - truth) / truth.sum())
            adjusted_err.append((est.area - truth) / truth.sum())
        m, a = np.mean(mapped_err, axis=0), np.mean(adjusted_err, axis=0)
        lines.append(f"| {n_fields} | {' / '.join(f'{c:.3f}' for c in covered / seeds)} | {m[1]:+.4f} / {m[2]:+.4f}"
                     f" | {a[1]:+.4f} / {a[2]:+.4f} | {time.perf_counter() - t0:.1f} |")
    return lines


def areas(results) -> list[str]:
    from cropmon.diagnosis import accuracy

    a = accuracy.assess(results.table, results.class_counts, results.mapped_area)
    t = a.table
    lines = ["| crop | mapped ha | adjusted ha [95 %] | user's accuracy [95 %] | producer's accuracy [95 %] | fields |"
             " mapped inside the interval |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in t.itertuples():
        inside = "" if r.crop == accuracy.OVERALL or np.isnan(r.adjusted_ha) else \
            ("yes" if r.adjusted_ha_ci_low <= r.mapped_ha <= r.adjusted_ha_ci_high else "no")
        lines.append(
            f"| {r.crop} | {r.mapped_ha:,.0f} | {r.adjusted_ha:,.0f} [{r.adjusted_ha_ci_low:,.0f}, "
            f"{r.adjusted_ha_ci_high:,.0f}] | {r.users_accuracy:.3f} [{r.users_accuracy_ci_low:.3f},"
            f" {r.users_accuracy_ci_high:.3f}] | {r.producers_accuracy:.3f} [{r.producers_accuracy_ci_low:.3f},"
            f" {r.producers_accuracy_ci_high:.3f}] | {r.n_fields:,} | {inside} |")
    d = a.design
    lines.append("")
    lines.append(f"Sample: {d['n_fields']:,} fields, {d['n_pixels']:,} pixels; left out: {d['fields_left_out']};"
                 f" not assessed: {d['not_assessed'] or 'none'}; one-field strata: {d['one_field_strata'] or 'none'}.")
    return lines


def papers() -> list[str]:
    import test_accuracy as ta

    mapped_ha = ta.OLOFSSON_MAPPED_PX * 0.09
    o = ta._estimates(ta.SimpleCounts(ta.OLOFSSON_COUNTS, mapped_ha).sample(), mapped_ha, 4)
    st = ta._estimates(ta._stehman_sample(fpc=True), ta.STEHMAN_SIZES, 4)
    z = 1.96
    rows = [
        ("Olofsson 2014: deforestation area, ha", "21,158 +- 6,158", f"{o.area[0]:,.1f} +- {z * o.area_se[0]:,.1f}"),
        ("Olofsson 2014: forest gain area, ha", "11,686 +- 3,756", f"{o.area[1]:,.1f} +- {z * o.area_se[1]:,.1f}"),
        ("Olofsson 2014: stable forest area, ha", "285,770 +- 15,510",
         f"{o.area[2]:,.1f} +- {z * o.area_se[2]:,.1f}"),
        ("Olofsson 2014: stable non-forest area, ha", "581,386 +- 16,282",
         f"{o.area[3]:,.1f} +- {z * o.area_se[3]:,.1f}"),
        ("Olofsson 2014: user's accuracy, deforestation", "0.88 +- 0.07", f"{o.ua[0]:.4f} +- {z * o.ua_se[0]:.4f}"),
        ("Olofsson 2014: producer's accuracy, deforestation", "0.75 +- 0.21",
         f"{o.pa[0]:.4f} +- {z * o.pa_se[0]:.4f}"),
        ("Olofsson 2014: overall accuracy", "0.95 +- 0.02", f"{o.oa:.4f} +- {z * o.oa_se:.4f}"),
        ("Olofsson 2014: matrix, deforestation row", "0.0176 0.0000 0.0013 0.0011",
         " ".join(f"{v:.4f}" for v in o.matrix[0])),
        ("Olofsson 2014: matrix, stable non-forest row", "0.0040 0.0020 0.0179 0.6212",
         " ".join(f"{v:.4f}" for v in o.matrix[3])),
        ("Stehman 2014: area proportion of A (SE)", "0.35 (0.082)", f"{st.share[0]:.4f} ({st.share_se[0]:.4f})"),
        ("Stehman 2014: area proportion of C (SE)", "0.20 (0.064)", f"{st.share[2]:.4f} ({st.share_se[2]:.4f})"),
        ("Stehman 2014: overall accuracy (SE)", "0.63 (0.085)", f"{st.oa:.4f} ({st.oa_se:.4f})"),
        ("Stehman 2014: user's accuracy of B (SE)", "0.574 (0.125)", f"{st.ua[1]:.4f} ({st.ua_se[1]:.4f})"),
        ("Stehman 2014: producer's accuracy of B (SE)", "0.794 (0.114)", f"{st.pa[1]:.4f} ({st.pa_se[1]:.4f})"),
        ("Stehman 2014: p_BC", "0.08", f"{st.matrix[1, 2]:.4f}"),
    ]
    lines = ["| figure | paper | cropmon |", "| --- | --- | --- |"]
    return lines + [f"| {a} | {b} | {c} |" for a, b, c in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=400)
    args = parser.parse_args()
    from cropmon.engine.job import analyse_fields

    header = f"Machine: {machine()}. In-process, one session; {args.repeats} timed repeats after a warm one."
    print(header, flush=True)
    raster, fields = twin_inputs(1.0)
    results = analyse_fields(raster, fields)
    sections = [header, f"Inputs: {raster} + {fields} ({len(results.table):,} fields).", "",
                "## Cost on the full twin", "", *cost(results, args.repeats), "",
                f"## Coverage of the adjusted-area interval (simulation, {args.seeds} seeds)", "",
                *coverage(args.seeds), "",
                "## The full twin: mapped vs adjusted area per crop", "", *areas(results), "",
                "## The papers' worked examples", "", *papers()]
    text = "\n".join(sections)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    for name in (f"accuracy-{stamp}.md", "accuracy-latest.md"):
        (RESULTS / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
