"""A/B timing of cropmon's engine stage between two checkouts, alternated in one session on the same files.

On a shared 2-core machine one timing says little; alternating A, B, A, B ... in one session, each run in its own
process after the raster is in the page cache, makes the two comparable. Each side is NAME=PYTHON[:SRC]: the
interpreter, and optionally a source tree put first on its PYTHONPATH (e.g. `git archive BASE | tar -x -C DIR`, with
an interpreter that has the dependencies but no editable cropmon).
Usage: python benchmarks/ab_engine.py --a base=/venv-base/bin/python:/tmp/base --b new=.venv/bin/python
           [--rounds 5] [--raster R --fields F] [--full-run]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine import ENGINE, machine, twin_inputs, warm  # noqa: E402
from memtrack import run_tracking_memory  # noqa: E402

RESULTS = HERE / "results"

# In-process (threads scheduler): the process's CPU seconds are the engine's own work, which other users' load on a
# shared machine perturbs much less than wall time.
ENGINE_CPU = """
import json, resource, sys, time
try:
    from cropmon.engine.job import analyse_fields
except ImportError:  # a checkout from before engine/job.py, e.g. the base of an A/B
    from cropmon.engine.analyse import analyse_fields
raster, fields = sys.argv[1], sys.argv[2]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
analyse_fields(raster, fields)  # warm: imports, first calls, page cache
c0, t0 = cpu(), time.perf_counter()
result = analyse_fields(raster, fields)
t = result.timings
print(json.dumps({"engine_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "stages": t,
                  "n_fields": len(result.table)}))
"""


def parse_side(text: str) -> tuple[str, str, str | None]:
    name, _, rest = text.partition("=")
    python, _, src = rest.partition(":")
    return name, python, src or None


def run_engine(python: str, src: str | None, raster: str, fields: str, *, code: str = ENGINE) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if src:
        env["PYTHONPATH"] = src
    # -P: the current directory must not come first on sys.path, or every side would import the checkout it runs in
    result, peak, _ = run_tracking_memory([python, "-P", "-c", code, raster, fields], env=env)
    if result.returncode:
        raise RuntimeError(result.stdout[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["peak_pss_gb"] = peak.pss_bytes / 2**30
    return out


def cropmon_source(python: str, src: str | None) -> str:
    """Where a side's interpreter imports cropmon from (printed with the results: the A/B is only as good as this)."""
    import subprocess

    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    out = subprocess.run([python, "-P", "-c", "import cropmon; print(cropmon.__file__)"], capture_output=True,
                         text=True, env=env, check=True)
    return out.stdout.strip()


def run_full(python: str, src: str | None, raster: str, fields: str, out: Path) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if src:
        env["PYTHONPATH"] = src
    cmd = [python, "-P", "-m", "cropmon", "run", "--raster", raster, "--fields", fields, "--out", str(out),
           "--progress", "off", "--workers", "2", "--dashboard-address", "127.0.0.1:0"]
    result, peak, wall = run_tracking_memory(cmd, env=env)
    if result.returncode:
        raise RuntimeError(result.stdout[-3000:])
    return {"wall_s": wall, "peak_pss_gb": peak.pss_bytes / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, type=parse_side)
    parser.add_argument("--b", required=True, type=parse_side)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--raster")
    parser.add_argument("--fields")
    parser.add_argument("--full-run", action="store_true", help="also one `cropmon run` per side, with memory")
    parser.add_argument("--cpu", action="store_true",
                        help="in-process (threads) runs timed by CPU seconds instead of a 2-worker local cluster")
    parser.add_argument("--name", default="ab-engine", help="results file stem")
    args = parser.parse_args()
    raster, fields = (args.raster, args.fields) if args.raster else twin_inputs(1.0)
    header = machine()
    print(header, flush=True)
    warm(raster)
    sides = [args.a, args.b]
    sources = {name: cropmon_source(python, src) for name, python, src in sides}
    if len(set(sources.values())) < 2:
        raise SystemExit(f"both sides import the same cropmon: {sources}")
    print(sources, flush=True)
    times: dict[str, list[dict]] = {name: [] for name, _, _ in sides}
    for k in range(args.rounds):
        for name, python, src in sides if k % 2 == 0 else sides[::-1]:  # ABBA...: no side always runs first
            row = run_engine(python, src, raster, fields, code=ENGINE_CPU if args.cpu else ENGINE)
            times[name].append(row)
            print(name, round(row["engine_s"], 3), round(row.get("cpu_s", float("nan")), 3), json.dumps(row["stages"]),
                  flush=True)
    full = {}
    if args.full_run:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for name, python, src in sides:
                full[name] = run_full(python, src, raster, fields, Path(tmp) / name)
                print(name, "full run", full[name], flush=True)
    how = "in-process (threads), second analysis of each process timed" if args.cpu else "local cluster, 2 workers"
    lines = [f"Machine: {header}. {args.rounds} rounds alternated (ABBA...), one process per run, {how}, warm page "
             "cache.", f"Inputs: {raster} + {fields}.",
             "Sides: " + "; ".join(f"{name} = {path}" for name, path in sources.items()), "",
             "| side | wall s (median) | runs | CPU s (median) | CPU runs | compute s (median) | peak PSS GB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in times.items():
        engine = [r["engine_s"] for r in rows]
        cpu = [r.get("cpu_s", float("nan")) for r in rows]
        compute = [r["stages"]["compute"] for r in rows]
        pss = [r["peak_pss_gb"] for r in rows]
        lines.append(f"| {name} | {statistics.median(engine):.2f} | {', '.join(f'{t:.2f}' for t in engine)} | "
                     f"{statistics.median(cpu):.2f} | {', '.join(f'{t:.2f}' for t in cpu)} | "
                     f"{statistics.median(compute):.2f} | {statistics.median(pss):.2f} |")
    for name, row in full.items():
        lines.append(f"\n`cropmon run` ({name}): {row['wall_s']:.1f} s, peak PSS {row['peak_pss_gb']:.2f} GB")
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    for name in (f"{args.name}-{stamp}.md", f"{args.name}-latest.md"):
        (RESULTS / name).write_text(table + "\n")


if __name__ == "__main__":
    main()
