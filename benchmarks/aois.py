"""Many AOIs in one run: time per AOI, process-tree peak memory against one AOI alone, and a cost model for France.

Runs `python -m cropmon run --aoi ...` on N full-size twins (scale 1, seeds 0..N-1, made once and cached by
`twin.ensure_twin`) one after another on one local cluster, then the first 2, then the first one alone, the same way;
reads each AOI's stage timings from OUT/run.json, and samples the peak memory (PSS, and RSS) of the whole process tree
(client, scheduler, workers) every 50 ms. Memory must not grow with the number of AOIs: the peaks and their ratios
are printed.

Cost model, from the measured AOIs: the compute stage (the one Dask compute: read, rasterize, histograms) in seconds
per million pixels on the measured workers, assumed to scale linearly with workers; everything else (fields I/O,
graph building, assembling, writing outputs, the diagnosis and the pooled view) in seconds per thousand fields on
the client, which does not scale with workers. Prediction for all of France: ~9.5 M parcels (RPG), ~550,000 km2 at
~579 m2 per pixel, as AOIs of the twin's size run one after another.
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
    }


def cost_model(run: dict) -> dict[str, float]:
    """Seconds per million pixels (compute stage, on the run's workers) and per thousand fields (the rest)."""
    aois = run["aois"].values()
    compute = sum(a["timings"]["compute"] for a in aois)
    mpx = sum(a["mpx"] for a in aois)
    kfields = sum(a["fields"] for a in aois) / 1e3
    client = run["wall_s"] - compute  # everything but the cluster's compute: per-AOI client stages, start, pooled view
    return {"s_per_mpx": compute / mpx, "s_per_kfield": client / kfields, "mpx": mpx, "kfields": kfields}


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
            print(f"{n} AOI(s): {runs[n]['wall_s']:.1f} s, peak PSS {runs[n]['peak_pss_gb']:.2f} GB", flush=True)
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
    per_aoi_total = sum(a["timings"]["total"] for a in many["aois"].values())
    lines += [
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| {args.aois} AOIs, wall time of the process (start to pooled outputs) | {many['wall_s']:.1f} s |",
        f"| of which outside the AOIs (start, cluster, summaries, pooled view) | {many['wall_s'] - per_aoi_total:.1f}"
        " s |",
        f"| 1 AOI alone, wall time | {one['wall_s']:.1f} s |",
    ]
    for n, run in runs.items():
        lines.append(
            f"| peak memory, {n} AOI{'s' if n > 1 else ''} (PSS; RSS; processes) | {run['peak_pss_gb']:.2f} GB;"
            f" {run['peak_rss_gb']:.2f} GB; {run['processes']} |"
        )
    lines += [
        f"| peak memory ratio {n} AOIs / 1 AOI (PSS) | {runs[n]['peak_pss_gb'] / one['peak_pss_gb']:.2f} |"
        for n in counts
        if n > 1
    ]
    if 2 in runs and args.aois > 2:
        ratio = many["peak_pss_gb"] / runs[2]["peak_pss_gb"]
        lines.append(f"| peak memory ratio {args.aois} AOIs / 2 AOIs (PSS) | {ratio:.2f} |")
    model = cost_model(many)
    france_mpx = FRANCE_KM2 * 1e6 / PIXEL_M2 / 1e6
    france_kfields = FRANCE_PARCELS / 1e3
    aoi_mpx = model["mpx"] / args.aois
    density = model["kfields"] * 1e3 / (model["mpx"] * 1e6 * PIXEL_M2 / 1e6)
    lines += [
        "",
        f"Cost model from the {args.aois}-AOI run: compute stage {model['s_per_mpx']:.3f} s per million pixels on"
        f" {args.workers} workers (assumed linear in workers); every other stage, with the run's start and the pooled"
        f" view, {model['s_per_kfield']:.3f} s per thousand fields on the client (not scaled by workers).",
        f"France: {FRANCE_KM2:,.0f} km2 / {PIXEL_M2:g} m2 = {france_mpx:,.0f} M pixels (~{france_mpx / aoi_mpx:.0f}"
        f" AOIs of this size), {FRANCE_PARCELS / 1e6:g} M parcels; memory stays at the multi-AOI peak"
        f" ({many['peak_pss_gb']:.1f} GB here) since AOIs run one after another.",
        "",
        "| workers | compute min | client min | total min |",
        "| --- | --- | --- | --- |",
    ]
    client_min = model["s_per_kfield"] * france_kfields / 60
    for n in (int(x) for x in args.predict_workers.split(",")):
        compute_min = model["s_per_mpx"] * france_mpx * args.workers / n / 60
        lines.append(f"| {n} | {compute_min:.1f} | {client_min:.1f} | {compute_min + client_min:.1f} |")
    lines += [
        "",
        "Assumptions: the compute stage scales linearly with workers (it is one task per row chunk, no shuffle) and"
        " with pixels; the client-side stages scale with fields and not with workers, so they bound the run from"
        " below; the raster covers all of France's area. The twin has u0c's density of"
        f" {density:.1f} fields per km2, France {FRANCE_PARCELS / FRANCE_KM2:.1f}: the per-field client cost carries"
        " the difference; the compute stage's share that grows with fields (rasterizing) is counted per pixel.",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aois-latest.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
