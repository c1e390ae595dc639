"""A/B cost of the diagnosis (diagnosis.diagnose.diagnose_run: metrics, plan, accuracy, and since issue 20 every
field's uncertainty, the suspect labels, the ranking and the plan of the unlabelled fields) between two checkouts,
alternated in one session on the same per-field table.

The table, histograms and mapped area are read once per process from a run's outputs (fields.parquet,
field_class_counts.parquet, mapped_area.csv; default: a run of the full twin made here), then `diagnose_run` is
called three times: the second call timed (CPU seconds of the process, which other users' load perturbs less than
wall time), the third traced for the peak of Python's allocations (tracemalloc, which slows allocations down).
Sides as in ab_engine.py: NAME=PYTHON[:SRC].
Usage: python benchmarks/ab_diagnosis.py --a base=.venv/bin/python:/tmp/base --b new=.venv/bin/python
           [--rounds 5] [--run OUTPUT_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

DIAGNOSIS_CPU = """
import json, resource, sys, time, tracemalloc
import pandas as pd
from cropmon.diagnosis.diagnose import diagnose_run
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.labels import CROP_NAMES
run = sys.argv[1]
table = pd.read_parquet(f"{run}/fields.parquet").drop(columns="geometry")
counts = pd.read_parquet(f"{run}/field_class_counts.parquet")[list(CROP_NAMES)]
mapped = pd.read_csv(f"{run}/mapped_area.csv")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
diagnose_run(table, counts, settings=DiagnosisSettings(), mapped_area=mapped)  # warm: imports, first calls
c0, t0 = cpu(), time.perf_counter()
d = diagnose_run(table, counts, settings=DiagnosisSettings(), mapped_area=mapped)
wall, used = time.perf_counter() - t0, cpu() - c0
tracemalloc.start()  # a third call for the memory: tracing slows the allocations down, so not the timed one
diagnose_run(table, counts, settings=DiagnosisSettings(), mapped_area=mapped)
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"wall_s": wall, "cpu_s": used, "peak_mib": peak / 2**20, "picks": len(d.selection.picks)}))
"""


def parse_side(text: str) -> tuple[str, str, str | None]:
    name, _, rest = text.partition("=")
    python, _, src = rest.partition(":")
    return name, python, src or None


def run_side(python: str, src: str | None, run: Path) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **({"PYTHONPATH": src} if src else {})}
    # -P: the current directory must not come first on sys.path, or both sides would import the checkout here
    done = subprocess.run([python, "-P", "-c", DIAGNOSIS_CPU, str(run)], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def source(python: str, src: str | None) -> str:
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    return subprocess.run([python, "-P", "-c", "import cropmon; print(cropmon.__file__)"], capture_output=True,
                          text=True, env=env, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, type=parse_side)
    parser.add_argument("--b", required=True, type=parse_side)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--run", type=Path, help="a `cropmon run` output directory (default: the full twin's)")
    args = parser.parse_args()
    sides = [args.a, args.b]
    sources = {name: source(python, src) for name, python, src in sides}
    if len(set(sources.values())) < 2:
        raise SystemExit(f"both sides import the same cropmon: {sources}")
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="cropmon-abdiag-") as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "twin"
            subprocess.run([sys.executable, "-m", "cropmon", "run", "--out", str(run), "--progress", "off"],
                           check=True, capture_output=True)
        rows: dict[str, list[dict]] = {name: [] for name, _, _ in sides}
        for k in range(args.rounds):
            for name, python, src in sides if k % 2 == 0 else sides[::-1]:
                rows[name].append(run_side(python, src, run))
                print(name, rows[name][-1], flush=True)
    load_end = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [f"`diagnose_run` on the full twin's table (153,773 fields), second call of each process timed, third"
             f" traced; {args.rounds} rounds alternated (ABBA...); load average {load_start} at start, {load_end} at"
             f" the end ({time.strftime('%Y-%m-%d %H:%M')}).",
             "Sides: " + "; ".join(f"{n} = {p}" for n, p in sources.items()),
             "", "| side | CPU s (median) | CPU s, runs | wall s (median) | peak of Python allocations, MiB (median) |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        runs = ", ".join(f"{x['cpu_s']:.2f}" for x in r)
        lines.append(f"| {name} | {statistics.median(x['cpu_s'] for x in r):.2f} | {runs} |"
                     f" {statistics.median(x['wall_s'] for x in r):.2f} |"
                     f" {statistics.median(x['peak_mib'] for x in r):.0f} |")
    (a, _, _), (b, _, _) = sides
    ratio = statistics.median(x["cpu_s"] for x in rows[b]) / statistics.median(x["cpu_s"] for x in rows[a])
    lines.append(f"\nCPU ratio {b} / {a} (medians): {ratio:.2f}")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ab-diagnosis-latest.md").write_text(text)
    (RESULTS / f"ab-diagnosis-{time.strftime('%Y-%m-%d')}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
