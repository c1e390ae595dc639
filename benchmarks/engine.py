"""Speed and memory of cropmon's engine on the full-scale twin, side by side with two baselines, in one run.

Prints (and writes to benchmarks/results/) a table of:
  - the engine stage (fields read -> per-field table in memory) of cropmon on a local cluster (2 workers),
  - a minimal single-process "rasterize + numpy bincount" baseline,
  - exactextract (majority + mean + count), the usual zonal-statistics tool,
  - `python -m cropmon run` end to end (all outputs written), with the peak memory of client + scheduler +
    workers together (PSS summed over the process tree, sampled every 100 ms),
  - the same run on the twin at scale 4 (a 4x larger AOI): memory must not grow with the AOI, only time.

Each stage runs in its own process, one after another, after the raster has been read once (warm page cache).
The baselines read the fields (polygons included) before their clock starts; cropmon's engine stage starts after
reading the fields' attributes and bounding boxes, and its workers read the polygons inside the timed compute, so
the comparison is conservative for cropmon.
Usage: python benchmarks/engine.py [--scale 1] [--big-scale 4] [--skip-big] [--raster R --fields F]
Needs the bench extra (psutil, exactextract): pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memtrack import run_tracking_memory  # noqa: E402

RESULTS = HERE / "results"

ENGINE = """
import json, sys, time
from cropmon.cluster import connect
try:
    from cropmon.engine.job import analyse_fields
except ImportError:  # a checkout from before engine/job.py, e.g. the base of an A/B
    from cropmon.engine.analyse import analyse_fields
from cropmon.engine.zonal import warm_up
raster, fields = sys.argv[1], sys.argv[2]
local = dict(workers=2, dashboard_address="127.0.0.1:0")
try:
    from cropmon.cluster import ClusterSettings
    cluster = connect(ClusterSettings("local", **local), warm_up=warm_up)
except ImportError:  # a checkout from before ClusterSettings, e.g. the base of an A/B (ab_engine.py)
    cluster = connect("local", **local, warm_up=warm_up)
with cluster as handle:
    result = analyse_fields(raster, fields, cluster=handle)
t = result.timings
# The engine stage: reading the fields' attributes and laying them out (on a worker), the graph, the compute and
# the assembled table, on the cluster; not the header checks, nor bringing the table back to this process.
engine = sum(v for k, v in t.items() if k not in ("inspect raster", "gather table"))
print(json.dumps({"engine_s": engine, "stages": t, "n_fields": len(result.table),
                  "n_scored": int(result.table["gt_ml_match"].notna().sum())}))
"""

NUMPY_BASELINE = """
import json, sys, time
import numpy as np, pyogrio, rasterio
from rasterio.features import rasterize
raster, fields = sys.argv[1], sys.argv[2]
gdf = pyogrio.read_dataframe(fields)
start = time.perf_counter()
with rasterio.open(raster) as src:
    labels = rasterize(zip(gdf.geometry, range(1, len(gdf) + 1)), out_shape=(src.height, src.width),
                       transform=src.transform, dtype="int32")
    t_rasterize = time.perf_counter() - start
    classes, confidence = src.read([3, 4])
t_read = time.perf_counter() - start - t_rasterize
n = len(gdf) + 1
inside = labels.ravel() > 0
lab = labels.ravel()[inside].astype(np.int64)
counts = np.bincount(lab * 32 + classes.ravel()[inside], minlength=n * 32).reshape(n, 32)
majority = counts.argmax(axis=1)
pixels = counts.sum(axis=1)
mean = np.bincount(lab, weights=confidence.ravel()[inside], minlength=n) / np.maximum(pixels, 1)
total = time.perf_counter() - start
print(json.dumps({"engine_s": total, "rasterize_s": t_rasterize, "read_s": t_read,
                  "bincount_s": total - t_rasterize - t_read}))
"""

EXACTEXTRACT = """
import json, sys, time
import pyogrio, rasterio
from exactextract import exact_extract
from exactextract.raster import RasterioRasterSource
raster, fields = sys.argv[1], sys.argv[2]
gdf = pyogrio.read_dataframe(fields)  # the fields are read before the clock starts, as for the others
start = time.perf_counter()
with rasterio.open(raster) as ds:
    sources = [RasterioRasterSource(ds, 3, name="cls"), RasterioRasterSource(ds, 4, name="conf")]
    # Named ops ("majority(cls)", ...) crash exactextract 0.3.0 (segfault), so every op runs on both bands:
    # one pass over the pixels, with a majority of band 4 and a mean of band 3 computed in excess.
    out = exact_extract(sources, gdf, ["majority", "mean", "count"], output="pandas")
print(json.dumps({"engine_s": time.perf_counter() - start, "rows": len(out)}))
"""


def python_stage(code: str, raster: str, fields: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, raster, fields], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def full_run(raster: str, fields: str, out: Path, *, workers: int = 2) -> dict:
    cmd = [sys.executable, "-m", "cropmon", "run", "--raster", raster, "--fields", fields, "--out", str(out),
           "--progress", "off", "--workers", str(workers), "--dashboard-address", "127.0.0.1:0"]
    result, peak, wall = run_tracking_memory(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode:
        raise RuntimeError(result.stdout[-3000:])
    manifest = json.loads((out / "run.json").read_text())
    client_peak = peak.peak_pss_by_pid.get(peak.root_pid, 0)
    worker_peak = max((v for pid, v in peak.peak_pss_by_pid.items() if pid != peak.root_pid), default=0)
    return {"wall_s": wall, "peak_pss_gb": peak.pss_bytes / 2**30, "peak_rss_gb": peak.rss_bytes / 2**30,
            "processes": peak.processes, "timings": manifest["timings_s"], "fields": manifest["fields"]["n_input"],
            "client_peak_pss_gb": client_peak / 2**30, "worker_peak_pss_gb": worker_peak / 2**30,
            "client_cpu_s": peak.client_cpu_s, "total_cpu_s": peak.total_cpu_s,
            "stages": {k: v["seconds"] for k, v in manifest["cluster"]["stages"].items()}}


def twin_inputs(scale: float) -> tuple[str, str]:
    from cropmon import twin

    paths = twin.ensure_twin(scale=scale)
    return str(paths.raster), str(paths.fields)


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def machine() -> str:
    import psutil

    return (f"{platform.node()}: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}, load avg {os.getloadavg()[0]:.2f} at start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--big-scale", type=float, default=4.0)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--raster")
    parser.add_argument("--fields")
    args = parser.parse_args()
    raster, fields = (args.raster, args.fields) if args.raster else twin_inputs(args.scale)
    header = machine()
    print(header, flush=True)
    warm(raster)
    rows = {}
    rows["numpy"] = python_stage(NUMPY_BASELINE, raster, fields)
    print("numpy baseline", rows["numpy"], flush=True)
    rows["exactextract"] = python_stage(EXACTEXTRACT, raster, fields)
    print("exactextract", rows["exactextract"], flush=True)
    rows["cropmon"] = python_stage(ENGINE, raster, fields)
    print("cropmon engine", rows["cropmon"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows["run"] = full_run(raster, fields, Path(tmp) / "out")
        print("cropmon run", rows["run"], flush=True)
        rows["run_1_worker"] = full_run(raster, fields, Path(tmp) / "one", workers=1)
        print("cropmon run, 1 worker", rows["run_1_worker"], flush=True)
        if not args.skip_big and not args.raster:
            big_raster, big_fields = twin_inputs(args.big_scale)
            warm(big_raster)
            rows["run_big"] = full_run(big_raster, big_fields, Path(tmp) / "big")
            print("cropmon run big", rows["run_big"], flush=True)

    engine = rows["cropmon"]["engine_s"]
    lines = [
        f"Machine: {header}. One run, stages one after another, warm page cache.",
        "",
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| cropmon engine stage (fields read -> per-field table), local cluster 2 workers | {engine:.2f} s | |",
        f"| numpy baseline (rasterize + read bands 3+4 + bincount), 1 process | {rows['numpy']['engine_s']:.2f} s "
        f"(rasterize {rows['numpy']['rasterize_s']:.2f}, read {rows['numpy']['read_s']:.2f}, bincount "
        f"{rows['numpy']['bincount_s']:.2f}) | |",
        f"| exactextract majority + mean + count (bands 3 and 4) | {rows['exactextract']['engine_s']:.2f} s | |",
        f"| speed-up vs exactextract | {rows['exactextract']['engine_s'] / engine:.2f}x | >= 3x |",
        f"| engine / numpy baseline time | {engine / rows['numpy']['engine_s']:.2f} | <= 1 |",
        f"| `python -m cropmon run`, start to all outputs ({rows['run']['fields']} fields) | "
        f"{rows['run']['wall_s']:.1f} s | < 20 s |",
        f"| peak memory, client + scheduler + workers (PSS; RSS) | {rows['run']['peak_pss_gb']:.2f} GB; "
        f"{rows['run']['peak_rss_gb']:.2f} GB | < 3 GB |",
    ]
    if "run_big" in rows:
        big = rows["run_big"]
        lines += [
            f"| scale {args.big_scale:g} AOI ({big['fields']} fields): run time | {big['wall_s']:.1f} s | |",
            f"| scale {args.big_scale:g} AOI: peak memory (PSS; RSS) | {big['peak_pss_gb']:.2f} GB; "
            f"{big['peak_rss_gb']:.2f} GB | |",
            f"| peak memory ratio, scale {args.big_scale:g} / scale {args.scale:g} | "
            f"{big['peak_pss_gb'] / rows['run']['peak_pss_gb']:.2f} | <= 1.25 |",
            f"| client process's peak (PSS), scale {args.scale:g} / scale {args.big_scale:g} |"
            f" {rows['run']['client_peak_pss_gb']:.2f} GB / {big['client_peak_pss_gb']:.2f} GB | flat |",
            f"| largest worker's peak (PSS), scale {args.scale:g} / scale {args.big_scale:g} |"
            f" {rows['run']['worker_peak_pss_gb']:.2f} GB / {big['worker_peak_pss_gb']:.2f} GB | 0.4-0.8 GB |",
        ]
    run, one = rows["run"], rows["run_1_worker"]
    tail_2, tail_1 = (r["timings"]["first summary to last output"] for r in (run, one))
    t = run["timings"]
    startup = run["wall_s"] - t["total"] + t.get("inputs", 0) + t.get("start cluster", 0)
    lines += [
        f"| `python -m cropmon run` / numpy baseline | {run['wall_s'] / rows['numpy']['engine_s']:.2f} | <= 1.5 |",
        f"| tail of the run (first chunk summary -> last output written), 2 workers / 1 worker | {tail_2:.2f} s /"
        f" {tail_1:.2f} s ({tail_1 / tail_2:.2f}x faster with the second worker) | faster with 2 |",
        f"| peak memory of the client process alone; of the largest worker (PSS) | {run['client_peak_pss_gb']:.2f} GB;"
        f" {run['worker_peak_pss_gb']:.2f} GB | |",
        f"| CPU seconds of the client (with the local scheduler) / of the whole run | {run['client_cpu_s']:.1f} /"
        f" {run['total_cpu_s']:.1f} s | |",
        "",
        f"Where the full run's {run['wall_s']:.1f} s go: process start, imports and the local cluster's start"
        f" {startup:.1f} s; reading the headers, the fields (on a worker) and building the graph"
        f" {t['inspect raster'] + t['read fields'] + t['build graph']:.1f} s; compute {t['compute']:.1f} s (submitted"
        f" -> table assembled); the tail after the compute {t['tail']:.1f} s.",
        "Task seconds on the workers, by stage: " + json.dumps({k: round(v, 2) for k, v in run["stages"].items()
                                                              if v >= 0.05}),
        "",
        "Stage timings of the full run (s): " + json.dumps(run["timings"]),
    ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    for name in (f"engine-{stamp}.md", "engine-latest.md"):
        (RESULTS / name).write_text(table + "\n")
    (RESULTS / "engine-latest.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
