"""Many AOIs in one run: wall time against one AOI, who spends the CPU (client vs workers), process-tree peak
memory, and a cost model for France built from those measurements.

Runs `python -m cropmon run --aoi ...` on N full-size twins (scale 1, seeds 0..N-1, made once and cached by
`twin.ensure_twin`) on one local cluster, then the first 2, then the first one alone, the same way. While each runs,
the whole process tree (the client, which also hosts the local scheduler, and every worker process) is sampled
every 100 ms: peak memory (PSS and RSS) and each process's CPU seconds. The client's own CPU is the tree's exact total
(getrusage of the reaped tree) less the workers' samples, which errs towards a larger client share.

Cost model (no assumed constants: every input is measured here and printed beside the prediction):
  client_s_per_aoi   serial client CPU seconds per AOI: the slope of the client's CPU between the 1- and N-AOI runs
                     (also given per thousand fields);
  worker_s_per_aoi   worker CPU seconds per AOI (slope likewise), which more workers share;
  fixed_s            what one run costs whatever its AOIs: the 1-AOI run's wall time less one AOI's share of work.
  T(P) = fixed_s + n_aoi x max(client_s_per_aoi, worker_s_per_aoi x (France's fields per AOI / the twin's) / P)
The client's serial work and the workers' work overlap (one AOI's tail runs beside the next AOIs' computes), so an
AOI costs the larger of the two; the workers' part scales with fields (conservative: the raster reading part does
not grow with fields). France: ~9.5 M parcels (RPG), ~550,000 km2 at ~579 m2 a pixel, as AOIs of the twin's size.
Usage: python benchmarks/aois.py [--aois 4] [--workers 2] [--scale 1] [--predict-workers 2,8,32,128]
Needs the bench extra (psutil): pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memtrack import run_tracking_memory  # noqa: E402

RESULTS = HERE / "results"
FRANCE_PARCELS = 9.5e6
FRANCE_KM2 = 550_000.0
PIXEL_M2 = 579.0


def machine() -> str:
    import psutil

    return (
        f"{platform.node()}: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}"
    )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def warm(path: Path) -> None:
    """Read a file once so that both runs start from the page cache."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def run_aois(aois: dict[str, tuple[Path, Path]], out: Path, *, workers: int) -> dict:
    """One `cropmon run --aoi ...`; its wall time, process-tree peak memory and per-AOI numbers."""
    cmd = [sys.executable, "-m", "cropmon", "run", "--out", str(out), "--progress", "off", "--scheduler", "local",
           "--workers", str(workers), "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    for name, (raster, fields) in aois.items():
        cmd += ["--aoi", f"{name}={raster},{fields}"]
    result, peak, wall = run_tracking_memory(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode:
        raise RuntimeError(f"exit {result.returncode}:\n{result.stdout[-3000:]}")
    workers = {pid: cpu for pid, cpu in peak.cpu_s.items() if pid != peak.root_pid}
    manifest = json.loads((out / "run.json").read_text())
    per_aoi = {}
    for name, info in manifest["aois"].items():
        own = json.loads((out / name / "run.json").read_text())
        height, width = own["inputs"]["raster"]["shape"]
        per_aoi[name] = {"fields": info["n_fields"], "mpx": height * width / 1e6, "timings": info["timings_s"]}
    return {
        "wall_s": wall,
        "total_s": manifest["timings_s"]["total"],
        "peak_pss_gb": peak.pss_bytes / 2**30,
        "peak_rss_gb": peak.rss_bytes / 2**30,
        "processes": peak.processes,
        "aois": per_aoi,
        "client_cpu_s": peak.client_cpu_s,
        "workers_cpu_s": sum(workers.values()),
        "total_cpu_s": peak.total_cpu_s,
        "n_processes_seen": len(peak.cpu_s),
        "tail_s": [a["timings"].get("first summary to last output") for a in per_aoi.values()],
    }


def cost_model(many: dict, one: dict, n_aois: int) -> dict[str, float]:
    """The model's inputs from the N-AOI and 1-AOI runs (see the module docstring)."""
    extra = max(n_aois - 1, 1)
    client = (many["client_cpu_s"] - one["client_cpu_s"]) / extra
    worker = (many["workers_cpu_s"] - one["workers_cpu_s"]) / extra
    fields = sum(a["fields"] for a in many["aois"].values()) / n_aois
    mpx = sum(a["mpx"] for a in many["aois"].values()) / n_aois
    work_per_aoi_wall = max(client, worker / max(one["workers"], 1))
    return {"client_s_per_aoi": client, "client_s_per_kfield": client / (fields / 1e3), "worker_s_per_aoi": worker,
            "fixed_s": max(one["wall_s"] - work_per_aoi_wall, 0.0), "fields_per_aoi": fields, "mpx_per_aoi": mpx}


def predict(model: dict[str, float], n_workers: int) -> tuple[float, float, float]:
    """(minutes of client work, minutes of worker work, total minutes) for France on `n_workers` workers."""
    france_mpx = FRANCE_KM2 * 1e6 / PIXEL_M2 / 1e6
    n_aoi = france_mpx / model["mpx_per_aoi"]
    density = (FRANCE_PARCELS / n_aoi) / model["fields_per_aoi"]
    client = model["client_s_per_aoi"]
    worker = model["worker_s_per_aoi"] * density / n_workers
    total = model["fixed_s"] + n_aoi * max(client, worker)
    return n_aoi * client / 60, n_aoi * worker / 60, total / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aois", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--predict-workers", default="2,8,32,128")
    args = parser.parse_args()
    from cropmon import twin

    started_load = load()
    inputs = {}
    for seed in range(args.aois):
        paths = twin.ensure_twin(scale=args.scale, seed=seed)
        inputs[f"s{seed}"] = (paths.raster, paths.fields)
        warm(paths.raster)
    print(f"{machine()}; load average {started_load} at start", flush=True)
    counts = sorted({args.aois, min(2, args.aois), 1}, reverse=True)  # N, 2, 1: is the peak flat beyond one AOI?
    runs = {}
    with tempfile.TemporaryDirectory(prefix="cropmon-aois-") as tmp:
        for n in counts:
            runs[n] = run_aois(dict(list(inputs.items())[:n]), Path(tmp) / f"aois{n}", workers=args.workers)
            runs[n]["workers"] = args.workers
            print(f"{n} AOI(s): {runs[n]['wall_s']:.1f} s, peak PSS {runs[n]['peak_pss_gb']:.2f} GB, client CPU"
                  f" {runs[n]['client_cpu_s']:.1f} s of {runs[n]['total_cpu_s']:.1f} s", flush=True)
    many, one = runs[args.aois], runs[1]
    ended_load = load()

    lines = [
        f"Machine: {machine()}. Load average (1, 5, 15 min) {started_load} at start, {ended_load} at the end.",
        f"`python -m cropmon run --aoi ...` with {args.aois} twins of scale {args.scale:g} (seeds 0..{args.aois - 1})"
        f" on one local cluster of {args.workers} workers, then the first"
        f" {' and the first '.join(map(str, counts[1:]))}"
        " alone, the same way; warm page cache.",
        "",
        "| AOI | fields | Mpx | compute s | other stages s | AOI total s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, a in many["aois"].items():
        t = a["timings"]
        lines.append(
            f"| {name} | {a['fields']:,} | {a['mpx']:.1f} | {t['compute']:.1f} | {t['total'] - t['compute']:.1f} |"
            f" {t['total']:.1f} |"
        )
    lines += [
        "",
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| {args.aois} AOIs, wall time of the process (start to pooled outputs) | {many['wall_s']:.1f} s | |",
        f"| 1 AOI alone, wall time | {one['wall_s']:.1f} s | |",
        f"| wall time ratio {args.aois} AOIs / 1 AOI | {many['wall_s'] / one['wall_s']:.2f} | <= 3 |",
    ]
    for n, run in runs.items():
        share = run["client_cpu_s"] / run["total_cpu_s"] if run["total_cpu_s"] else float("nan")
        lines.append(
            f"| {n} AOI{'s' if n > 1 else ''}: CPU seconds client (with the local scheduler) / workers / all |"
            f" {run['client_cpu_s']:.1f} / {run['workers_cpu_s']:.1f} / {run['total_cpu_s']:.1f} s: client"
            f" {100 * share:.0f} % | {'<= 20 %' if n == args.aois else ''} |"
        )
    for n, run in runs.items():
        lines.append(
            f"| peak memory, {n} AOI{'s' if n > 1 else ''} (PSS; RSS; processes) | {run['peak_pss_gb']:.2f} GB;"
            f" {run['peak_rss_gb']:.2f} GB; {run['processes']} | |"
        )
    lines += [
        f"| peak memory ratio {n} AOIs / 1 AOI (PSS) | {runs[n]['peak_pss_gb'] / one['peak_pss_gb']:.2f} | |"
        for n in counts
        if n > 1
    ]
    model = cost_model(many, one, args.aois)
    france_mpx = FRANCE_KM2 * 1e6 / PIXEL_M2 / 1e6
    n_aoi = france_mpx / model["mpx_per_aoi"]
    lines += [
        "",
        f"Cost model, measured in these runs (slopes between the 1- and {args.aois}-AOI runs):"
        f" client {model['client_s_per_aoi']:.2f} s of serial CPU per AOI"
        f" ({model['client_s_per_kfield'] * 1e3:.2f} ms per thousand fields);"
        f" workers {model['worker_s_per_aoi']:.1f} CPU seconds per AOI of {model['fields_per_aoi']:,.0f} fields and"
        f" {model['mpx_per_aoi']:.1f} M pixels; fixed cost of a run {model['fixed_s']:.1f} s.",
        f"France: {FRANCE_KM2:,.0f} km2 / {PIXEL_M2:g} m2 = {france_mpx:,.0f} M pixels = {n_aoi:.0f} AOIs of this"
        f" size with {FRANCE_PARCELS / n_aoi:,.0f} fields each ({FRANCE_PARCELS / 1e6:g} M parcels):"
        f" T(P) = {model['fixed_s']:.1f} s + {n_aoi:.0f} x max({model['client_s_per_aoi']:.2f} s,"
        f" {model['worker_s_per_aoi']:.1f} s x {FRANCE_PARCELS / n_aoi / model['fields_per_aoi']:.2f} / P).",
        "",
        "| workers P | client min | worker min (shared by P) | predicted total min |",
        "| --- | --- | --- | --- |",
    ]
    for n in (int(x) for x in args.predict_workers.split(",")):
        client_min, worker_min, total_min = predict(model, n)
        lines.append(f"| {n} | {client_min:.1f} | {worker_min:.1f} | {total_min:.1f} |")
    lines += [
        "",
        "Assumptions: the workers' CPU per AOI scales with the AOI's fields and is shared evenly by P workers (an AOI"
        " offers one task per row chunk plus a dozen tail tasks, and several AOIs run at once on a large cluster:"
        " pipeline.aois_in_flight); the client's per-AOI work is serial and overlaps the workers'; one scheduler"
        " keeps up (a few hundred tasks per AOI).",
        "Tail of one AOI (first chunk summary to last output written), from each AOI's run.json: "
        + ", ".join(f"{t:.1f} s" for t in many["tail_s"] if t is not None) + ".",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aois-latest.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
