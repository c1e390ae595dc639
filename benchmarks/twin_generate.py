"""Time and peak memory of generating the digital twin (default: the full u0c cell, scale 1).

Generation runs in this process; peak memory is the process's peak resident set size (resource.getrusage), which
includes the interpreter and imports (printed separately). Targets at scale 1 on the 2-core benchmark machine:
under 3 minutes and under 4 GB.

Usage: python benchmarks/twin_generate.py [--scale 1] [--seed 0] [--compress none] [--out DIR]
(--scale accepts fractions such as 1/16; without --out the twin goes to a temporary directory, deleted after.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from cropmon.twin import MANIFEST_NAME, make_twin

RESULTS = Path(__file__).resolve().parent / "results"
TIME_BUDGET_S, MEMORY_BUDGET_GB = 180.0, 4.0


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=lambda s: float(Fraction(s)), default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compress", default="none", choices=["none", "deflate", "lzw"])
    parser.add_argument("--out", type=Path, help="keep the twin here (default: a temporary directory)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)8.0f ms %(name)s: %(message)s")

    out = args.out or Path(tempfile.mkdtemp(prefix="cropmon-twin-"))
    baseline = peak_rss_gb()
    started = time.perf_counter()
    paths = make_twin(out, scale=args.scale, seed=args.seed, compress=args.compress)
    seconds = time.perf_counter() - started
    peak = peak_rss_gb()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    sizes = {p.name: p.stat().st_size / 2**20 for p in (paths.raster, paths.fields)}
    if args.out is None:
        shutil.rmtree(out)

    within = seconds < TIME_BUDGET_S and peak < MEMORY_BUDGET_GB
    lines = [
        f"# Twin generation, scale {args.scale:g}, seed {args.seed}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| grid | {manifest['width']:,} x {manifest['height']:,} px |",
        f"| fields | {manifest['fields']:,} ({manifest['no_pixel_centre_fields']} with no pixel centre; "
        f"{manifest['duplicates']} duplicates, {manifest['fields_inside_another']} inside another field, "
        f"{manifest['neighbour_pairs_sharing_pixels']} neighbour pairs sharing pixels) |",
        f"| predictions.tif | {sizes[paths.raster.name]:,.0f} MiB ({args.compress}) |",
        f"| fields.gpkg | {sizes[paths.fields.name]:,.0f} MiB |",
        f"| generation time | {seconds:.1f} s |",
        f"| peak memory (RSS) | {peak:.2f} GiB (imports alone: {baseline:.2f} GiB) |",
        "",
        f"Budget (scale 1): < {TIME_BUDGET_S:.0f} s and < {MEMORY_BUDGET_GB:.0f} GB: "
        + (("met." if within else "NOT met.") if args.scale == 1 else "applies to scale 1 only."),
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"twin_generate_scale{args.scale:g}.md").write_text(report)
    return 0 if within or args.scale != 1 else 1


if __name__ == "__main__":
    sys.exit(main())
