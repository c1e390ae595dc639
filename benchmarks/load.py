"""Load: 8 small AOIs analysed concurrently against one local cluster; every result must equal its solo run.

Each AOI is a small digital twin with its own seed. The solo runs go one after another on the same cluster; then
all 8 are submitted at once from 8 client threads sharing one Client. Prints per-AOI times and whether each
concurrent result is identical (every column of the per-field table, and the class histograms) to its solo one.
Usage: python benchmarks/load.py [--aois 8] [--scale 0.015625]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from cropmon import twin
from cropmon.cluster import ClusterSettings, connect
from cropmon.engine.job import EngineSettings, analyse_fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aois", type=int, default=8)
    parser.add_argument("--scale", type=float, default=1 / 64)
    args = parser.parse_args()
    inputs = [twin.ensure_twin(scale=args.scale, seed=100 + i) for i in range(args.aois)]

    with connect(ClusterSettings("local", workers=2, dashboard_address="127.0.0.1:0")) as handle:
        solo, solo_s = [], []
        for paths in inputs:
            start = time.perf_counter()
            solo.append(analyse_fields(paths.raster, paths.fields, settings=EngineSettings(chunk_rows=64),
                                       cluster=handle))
            solo_s.append(time.perf_counter() - start)

        def concurrent_run(paths):
            start = time.perf_counter()
            result = analyse_fields(paths.raster, paths.fields, settings=EngineSettings(chunk_rows=64), cluster=handle)
            return result, time.perf_counter() - start

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.aois) as pool:
            together = list(pool.map(concurrent_run, inputs))
        wall = time.perf_counter() - start

    print(f"{args.aois} AOIs at scale {args.scale:g} on one local cluster (2 workers)")
    print("| AOI | fields | solo s | concurrent s | identical |")
    print("| --- | --- | --- | --- | --- |")
    all_equal = True
    for i, ((alone, t_alone), (both, t_both)) in enumerate(zip(zip(solo, solo_s, strict=True), together, strict=True)):
        cols = [c for c in alone.table.columns if c != "geometry"]
        same = alone.table[cols].equals(both.table[cols]) and alone.class_counts.equals(both.class_counts)
        all_equal &= same
        print(f"| {i} | {len(alone.table)} | {t_alone:.2f} | {t_both:.2f} | {same} |")
    print(f"\nsolo total {sum(solo_s):.1f} s, concurrent wall {wall:.1f} s; all identical: {all_equal}")
    if not all_equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
