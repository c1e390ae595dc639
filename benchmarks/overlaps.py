"""What overlapping and duplicated fields cost and change, on the full twin, in one session.

Makes a copy of the twin's fields with overlaps added at the real file's rate (exact duplicates under another id,
some with another label; fields wholly inside others; partial overlaps: a copy of a field shifted by a fraction of
its size), then:
  - times cropmon's engine (in-process, CPU seconds and wall) on the twin as it is and on the copy, alternated;
  - counts what the engine reports (pairs, shared pixels, duplicated polygons, fields wholly inside others) and the
    side channel's size (the claims the zone grid does not hold);
  - checks every field involved in an overlap against rasterstats (GDAL's pixel-centre rule, one field at a time):
    pixel count and mean confidence;
  - with --base PYTHON:SRC, runs another checkout on the copy and counts the fields it leaves without pixels.
Usage: python benchmarks/overlaps.py [--rounds 3] [--duplicates 140] [--inside 140] [--partial 1500]
           [--base /venv-base/bin/python:/tmp/base]
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

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ab_engine import ENGINE_CPU, run_engine  # noqa: E402
from engine import machine, twin_inputs, warm  # noqa: E402

RESULTS = HERE / "results"

PER_FIELD = """
import json, sys
from cropmon.engine.job import analyse_fields
raster, fields, out = sys.argv[1], sys.argv[2], sys.argv[3]
result = analyse_fields(raster, fields)
columns = [c for c in ("field_id", "n_pixels", "confidence_score", "n_pixels_shared") if c in result.table]
result.table[columns].to_parquet(out)
print(json.dumps({"report": {k: v for k, v in vars(result.report).items() if k != "examples"}}, default=str))
"""


def overlapped_copy(fields_path: str, out: Path, *, duplicates: int, inside: int, partial: int, seed: int = 0):
    """The twin's fields plus duplicates, fields inside others and partial overlaps (same schema and layer)."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely
    import shapely.affinity

    gdf = pyogrio.read_dataframe(fields_path)
    layer = pyogrio.list_layers(fields_path)[0, 0]
    rng = np.random.default_rng(seed)
    width = gdf.geometry.bounds["maxx"] - gdf.geometry.bounds["minx"]
    pixel = 0.00026949458523585647
    big = np.flatnonzero(width.to_numpy() > 6 * pixel)
    added = []

    def add(rows: np.ndarray, geometry: np.ndarray, kind: str) -> None:
        part = gdf.iloc[rows].copy()
        part["field_id"] = [f"{kind}-{i}" for i in range(len(rows))]
        added.append(part.set_geometry(gpd.GeoSeries(geometry, index=part.index, crs=gdf.crs)))

    rows = rng.choice(len(gdf), duplicates, replace=False)
    add(rows, gdf.geometry.iloc[rows].to_numpy(), "dup")
    relabel = rng.random(duplicates) < 0.5
    added[-1].loc[relabel, "normalized_label"] = rng.choice(gdf["normalized_label"].unique(), int(relabel.sum()))
    rows = rng.choice(big, inside, replace=False)
    add(rows, shapely.buffer(gdf.geometry.iloc[rows].to_numpy(), -1.5 * pixel), "inside")
    rows = rng.choice(big, partial, replace=False)
    shift = width.iloc[rows].to_numpy() * rng.uniform(0.3, 0.6, partial)
    add(rows, np.array([shapely.affinity.translate(g, xoff=s) for g, s in
                        zip(gdf.geometry.iloc[rows], shift, strict=True)], dtype=object), "shifted")
    both = pd.concat([gdf, *added], ignore_index=True)
    pyogrio.write_dataframe(both, out, layer=layer, driver="GPKG")
    return len(gdf), len(both)


def per_field(python: str, src: str | None, raster: str, fields: str, out: Path) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if src:
        env["PYTHONPATH"] = src
    result = subprocess.run([python, "-P", "-c", PER_FIELD, raster, fields, str(out)], capture_output=True,
                            text=True, env=env)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def rasterstats_check(raster: str, fields: str, table_path: Path, ids: set[str]) -> tuple[int, int]:
    """(fields checked, fields that differ) between cropmon and rasterstats for the fields `ids`: rasterstats reads
    one field at a time, so a pixel inside two fields counts in both."""
    import pandas as pd
    import pyogrio
    import rasterio
    from rasterstats import zonal_stats

    gdf = pyogrio.read_dataframe(fields)
    with rasterio.open(raster) as src:
        left, bottom, right, top = src.bounds
    b = gdf.geometry.bounds
    # rasterstats reads past the raster's edge (boundless) and counts what it reads there: compare inside fields only
    inside = (b["minx"] >= left) & (b["maxx"] <= right) & (b["miny"] >= bottom) & (b["maxy"] <= top)
    gdf = gdf.loc[gdf["field_id"].isin(ids) & inside].reset_index(drop=True)
    counts = zonal_stats(gdf, raster, band=3, stats=["count"], nodata=-32768)
    means = zonal_stats(gdf, raster, band=4, stats=["mean"], nodata=-32768)
    ours = pd.read_parquet(table_path).set_index("field_id").loc[gdf["field_id"]]
    theirs_n = np.array([c["count"] for c in counts])
    theirs_mean = np.array([m["mean"] if m["mean"] is not None else np.nan for m in means], dtype=float)
    centre = theirs_n > 0  # fields without a pixel centre: cropmon falls back to all-touched, rasterstats gives 0
    differ = (ours["n_pixels"].to_numpy()[centre] != theirs_n[centre]) | ~np.isclose(
        ours["confidence_score"].to_numpy(float)[centre], theirs_mean[centre])
    return int(centre.sum()), int(differ.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duplicates", type=int, default=140)
    parser.add_argument("--inside", type=int, default=140)
    parser.add_argument("--partial", type=int, default=1500)
    parser.add_argument("--base", help="PYTHON:SRC of another checkout to run on the overlapped copy")
    args = parser.parse_args()
    raster, fields = twin_inputs(1.0)
    header = machine()
    print(header, flush=True)
    warm(raster)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copy = tmp / "fields_overlaps.gpkg"
        n_twin, n_copy = overlapped_copy(fields, copy, duplicates=args.duplicates, inside=args.inside,
                                         partial=args.partial)
        print(f"overlapped copy: {n_twin} -> {n_copy} fields", flush=True)
        python = sys.executable
        runs: dict[str, list[dict]] = {"twin": [], "twin + overlaps": []}
        for k in range(args.rounds):
            order = [("twin", fields), ("twin + overlaps", str(copy))]
            for name, path in order if k % 2 == 0 else order[::-1]:
                row = run_engine(python, None, raster, path, code=ENGINE_CPU)
                runs[name].append(row)
                print(name, round(row["engine_s"], 2), round(row["cpu_s"], 2), flush=True)
        new = per_field(python, None, raster, str(copy), tmp / "new.parquet")["report"]
        table = pd.read_parquet(tmp / "new.parquet")
        involved = set(table.loc[table["n_pixels_shared"] > 0, "field_id"])
        checked, differ = rasterstats_check(raster, str(copy), tmp / "new.parquet", involved)
        base_lines = []
        if args.base:
            base_python, _, base_src = args.base.partition(":")
            per_field(base_python, base_src or None, raster, str(copy), tmp / "base.parquet")
            base = pd.read_parquet(tmp / "base.parquet").set_index("field_id")
            ours = table.set_index("field_id")
            lost_all = int(((base["n_pixels"] == 0) & (ours["n_pixels"] > 0)).sum())
            fewer = int((base["n_pixels"] < ours["n_pixels"]).sum())
            base_lines = [f"| base checkout on the copy: fields with fewer pixels than their own / with none | "
                          f"{fewer:,} / {lost_all:,} |"]
    shared = int(table["n_pixels_shared"].sum()) if "n_pixels_shared" in table else None

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    def listed(name: str) -> str:
        return ", ".join(f"{r['cpu_s']:.2f}" for r in runs[name])

    lines = [
        f"Machine: {header}. In-process engine (threads), {args.rounds} rounds alternated, warm page cache.",
        f"Overlapped copy of the twin: {n_twin:,} fields + {args.duplicates} exact duplicates (half relabelled) + "
        f"{args.inside} fields 1.5 pixels inside others + {args.partial} copies shifted by 30-60 % of their width.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| engine CPU s, twin (median; runs) | {median('twin', 'cpu_s'):.2f}; "
        f"{listed('twin')} |",
        f"| engine CPU s, twin + overlaps (median; runs) | {median('twin + overlaps', 'cpu_s'):.2f}; "
        f"{listed('twin + overlaps')} |",
        f"| engine wall s, twin / twin + overlaps (medians) | {median('twin', 'engine_s'):.2f} / "
        f"{median('twin + overlaps', 'engine_s'):.2f} |",
        f"| overlapping pairs; of which the same polygon twice | {new['overlapping_pairs']:,}; "
        f"{new['duplicate_geometry_pairs']:,} |",
        f"| pixels inside more than one field | {new['shared_pixels']:,} |",
        f"| claims on shared pixels (sum of n_pixels_shared); carried beside the grid | {shared:,}; "
        f"{shared - new['shared_pixels']:,} |",
        f"| fields wholly inside others | {new['counts'].get('fully_inside_other_fields', 0):,} |",
        f"| fields sharing pixels (inside the raster), checked against rasterstats one by one (count, mean band 4); "
        "differing | "
        f"{checked:,}; {differ} |",
        *base_lines,
    ]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    for name in (f"overlaps-{time.strftime('%Y-%m-%d')}.md", "overlaps-latest.md"):
        (RESULTS / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
