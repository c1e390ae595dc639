"""The engine on a raster in a bucket against the same file on local disk: time, CPU, and the requests and bytes the
S3 server saw per run.

The server is tests/s3_server.py (moto's S3 on 127.0.0.1, in its own process, logging every request with the
bytes it sent). The full twin is copied to a Cloud-Optimized GeoTIFF (512 x 512 deflate tiles, as README's "Tiled
rasters"), both it and the striped original uploaded; the fields stay local (a GeoPackage), so the difference is the
raster's reading. Each run is a process of its own (fresh GDAL caches), in-process engine (threads scheduler),
after a warm-up analysis of a tiny twin (imports, first calls); the variants alternate (ABAB...), and the local
files' pages are warm.
Usage: python benchmarks/object_storage.py [--rounds 3] [--striped-rounds 1] [--scale 1]
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
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from engine import machine, twin_inputs, warm  # noqa: E402
from s3_server import S3Server  # noqa: E402

RESULTS = HERE / "results"
BUCKET = "bench"

ENGINE_ONCE = """
import json, resource, sys, time
from cropmon.engine.job import analyse_fields
raster, fields, warm_raster, warm_fields = sys.argv[1:5]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
analyse_fields(warm_raster, warm_fields)  # imports and first calls, on other (tiny) files
c0, t0 = cpu(), time.perf_counter()
result = analyse_fields(raster, fields)
print(json.dumps({"engine_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "n_fields": len(result.table),
                  "majority": int(result.table["majority_crop"].fillna(-1).sum())}))
"""


def engine_once(raster: str, fields: str, tiny: tuple[str, str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-P", "-c", ENGINE_ONCE, raster, fields, *tiny],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--striped-rounds", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    import rasterio.shutil

    header = machine()
    raster, fields = twin_inputs(args.scale)
    tiny = twin_inputs(1 / 64)
    work = Path(tempfile.mkdtemp(prefix="cropmon-bench-s3-"))
    cog = work / "predictions_cog.tif"
    started = time.perf_counter()
    rasterio.shutil.copy(raster, cog, driver="COG", blocksize=512, compress="DEFLATE")
    print(f"COG written in {time.perf_counter() - started:.1f} s: {cog.stat().st_size / 1e6:.0f} MB", flush=True)
    server = S3Server.start(work)
    try:
        server.make_bucket(BUCKET)
        keys = {"cog": f"{BUCKET}/predictions_cog.tif", "striped": f"{BUCKET}/predictions.tif"}
        for local, key in ((cog, keys["cog"]), (Path(raster), keys["striped"])):
            server.upload(local, key)
        env = server.settings()
        for path in (raster, cog, fields):
            warm(str(path))
        plan = [("cog local", str(cog)), ("cog bucket", f"s3://{keys['cog']}")] * args.rounds
        plan += [("striped local", raster), ("striped bucket", f"s3://{keys['striped']}")] * args.striped_rounds
        rows: dict[str, list[dict]] = {}
        for name, path in plan:
            before = len(server.requests())
            got = engine_once(path, fields, tiny, env)
            seen = server.requests()[before:]
            mine = [r for r in seen if path.startswith("s3://") and r["path"] == "/" + path.removeprefix("s3://")]
            got.update(
                requests=len(mine), gets=sum(r["method"] == "GET" for r in mine), bytes=sum(r["bytes"] for r in mine)
            )
            rows.setdefault(name, []).append(got)
            print(name, json.dumps(got), flush=True)
    finally:
        server.stop()
    sizes = {"cog": cog.stat().st_size, "striped": Path(raster).stat().st_size}
    write_results(header, args, rows, sizes, raster, fields)


def write_results(
    header: str, args, rows: dict[str, list[dict]], sizes: dict[str, int], raster: str, fields: str
) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    lines = [
        f"Machine: {header}. One process per run, in-process engine (threads scheduler) after a warm-up on a tiny"
        f" twin; COG runs alternated local/bucket ({args.rounds} rounds), striped {args.striped_rounds}; warm page"
        " cache; the S3 server (moto, tests/s3_server.py) on 127.0.0.1 shares the 2 cores.",
        f"Inputs: {raster} (striped, {sizes['striped'] / 1e6:.0f} MB) and its COG (512 x 512 deflate tiles,"
        f" {sizes['cog'] / 1e6:.0f} MB); fields {fields} (local in every run).",
        "",
        "| run | engine s (median) | runs | CPU s (median) | requests | GETs | MB read from the server | fields |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, got in rows.items():
        runs = ", ".join(f"{r['engine_s']:.2f}" for r in got)
        lines.append(
            f"| {name} | {med(name, 'engine_s'):.2f} | {runs} |"
            f" {med(name, 'cpu_s'):.2f} | {int(med(name, 'requests'))} | {int(med(name, 'gets'))} |"
            f" {med(name, 'bytes') / 1e6:.1f} | {got[0]['n_fields']} |"
        )
    same = {json.dumps([r["n_fields"], r["majority"]]) for got in rows.values() for r in got}
    lines += ["", f"Per-field majorities identical across all runs: {'yes' if len(same) == 1 else 'NO'}."]
    for kind in ("cog", "striped"):
        if f"{kind} local" in rows and f"{kind} bucket" in rows:
            ratio = med(f"{kind} bucket", "engine_s") / med(f"{kind} local", "engine_s")
            rounds = [
                b["engine_s"] / a["engine_s"]
                for a, b in zip(rows[f"{kind} local"], rows[f"{kind} bucket"], strict=True)
            ]
            cpu = med(f"{kind} bucket", "cpu_s") / med(f"{kind} local", "cpu_s")
            read = med(f"{kind} bucket", "bytes") / sizes[kind]
            lines.append(
                f"{kind}: bucket / local engine time {ratio:.2f} (ratio of medians; per alternated round "
                f"{', '.join(f'{r:.2f}' for r in rounds)}); the engine process's CPU {cpu:.2f}x; bytes read "
                f"{read:.2f}x the file's size."
            )
    lines += [
        "",
        "The server is a Python process on the same 2 cores (its CPU is not in the engine's CPU seconds): "
        "the wall-time ratio is an upper bound for this machine, not a figure for a real S3 endpoint, whose "
        "latency and bandwidth differ; the requests and bytes are the file layout's and hold anywhere.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    for name in ("object-storage-latest.md", f"object-storage-{time.strftime('%Y-%m-%d')}.md"):
        (RESULTS / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
