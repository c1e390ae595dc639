"""Which design for the held-back evaluation sample: fields scattered over the AOI, or blocks as primary units?

On the full twin (scale 1, seed 0), the current model's per-field table is the frame (its clean GT fields, whose
truth is known). Each design is drawn `--draws` times with other seeds; for each draw: how many fields it holds
back, the share of the clean fields (and of the informative ones, what the plan labels) that its evaluation units
and their `buffer_km` buffers take out of the label pool, and the design-based estimate of the current model's
overall accuracy (pixels, fields as clusters) with its standard error; over the draws: the estimate's spread, the
mean standard error and how often the 95 % interval covers the frame's true value.

- fields: a stratified random sample of fields by map class, n_h = max(eval_min_per_stratum, ceil(n W_h)) with n
  Olofsson's n for `eval_target_se`, at most eval_max_share of a stratum; every field its own primary unit; the
  buffer around every sampled field (point distance).
- blocks: cropmon's design (diagnosis/evaluation.py, default settings).
- blocks-N: the same with N blocks (to show what fewer or more blocks cost and buy).

Usage: python benchmarks/eval_design.py [--draws 100]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine import machine, twin_inputs  # noqa: E402

RESULTS = HERE / "results"


def frame_of_twin():
    from cropmon.diagnosis.blocks import BlockGrid
    from cropmon.diagnosis.select import candidate_fields
    from cropmon.diagnosis.settings import DiagnosisSettings
    from cropmon.engine.job import analyse_fields

    raster, fields = twin_inputs(1.0)
    results = analyse_fields(raster, fields)
    s = DiagnosisSettings()
    table = results.table
    grid = BlockGrid.for_points(table["x"].to_numpy(float), table["y"].to_numpy(float), block_km=s.block_km)
    return candidate_fields(table, settings=s, grid=grid), grid, s


def oa_estimate(cand: pd.DataFrame, rows: np.ndarray, weight: np.ndarray, psu: np.ndarray, psu_stratum: np.ndarray,
                fpc: np.ndarray) -> tuple[float, float]:
    """Design-based overall accuracy of the current model (each field homogeneous: its pixels in its majority
    class), Horvitz-Thompson totals, linearised ratio."""
    from cropmon.diagnosis.accuracy import ErrorMatrix, Sample, prepare

    names = sorted(set(cand["crop"]) | set(cand["predicted"]))
    code = {n: i for i, n in enumerate(names)}
    k = len(names)
    sub = cand.iloc[rows]
    cells = sub["predicted"].map(code).to_numpy() * k + sub["crop"].map(code).to_numpy()
    sample = Sample(cell=cells, stratum=np.zeros(len(rows), np.int64), psu=psu, pixels=sub["n_pixels"].to_numpy(float),
                    weight=weight, psu_stratum=psu_stratum, fpc=fpc, n_cells=k * k, center=True)
    est = ErrorMatrix.of(prepare(sample, None), k).estimates()
    return est.oa, est.oa_se


def excluded_share(cand: pd.DataFrame, out: np.ndarray) -> tuple[float, float]:
    informative = cand["informative"].to_numpy(bool)
    return float(out.mean()), float(out[informative].mean())


def scattered(cand, grid, s, seed):
    from scipy.spatial import cKDTree

    from cropmon.diagnosis.evaluation import olofsson_sample_size, strata_of

    rng = np.random.default_rng(seed)
    strata = strata_of(cand)
    n = olofsson_sample_size(strata["frame_pixel_share"], strata["sd"], s.eval_target_se)
    stratum = cand["predicted"].astype(str).to_numpy()
    rows, weight, groups, fpc = [], [], [], []
    for name, row in strata.iterrows():
        pool = np.flatnonzero(stratum == name)
        n_h = min(max(s.eval_min_per_stratum, math.ceil(n * row["frame_pixel_share"])),
                  math.floor(s.eval_max_share * len(pool)))
        if n_h < 1:
            continue
        chosen = rng.choice(pool, n_h, replace=False)
        rows.append(chosen)
        weight.append(np.full(n_h, len(pool) / n_h))
        groups.append(np.full(n_h, len(fpc)))
        fpc.append(1 - n_h / len(pool))
    rows, weight, groups = np.concatenate(rows), np.concatenate(weight), np.concatenate(groups)
    oa, se = oa_estimate(cand, rows, weight, np.arange(len(rows)), groups, np.array(fpc))
    km = np.column_stack([cand["x"].to_numpy(float) / grid.unit_x, cand["y"].to_numpy(float) / grid.unit_y])
    out = np.zeros(len(cand), bool)
    for near in cKDTree(km).query_ball_point(km[rows], r=s.buffer_km):
        out[near] = True
    out[rows] = True
    return len(rows), 0, oa, se, *excluded_share(cand, out)


def blocks(cand, grid, s, seed, n_blocks=None):
    from cropmon.diagnosis import evaluation
    from cropmon.diagnosis.blocks import seeded_hash
    from cropmon.diagnosis.select import spatial_split

    cand = cand.assign(_key=seeded_hash(cand["field_id"], seed))
    saved = evaluation.MIN_EVAL_BLOCKS, evaluation.BLOCK_BALANCE
    if n_blocks is not None:  # a fixed number of blocks: the rule's floor and factor set so that it gives n_blocks
        evaluation.MIN_EVAL_BLOCKS, evaluation.BLOCK_BALANCE = n_blocks, 0.0
    try:
        in_blocks, sample, design = evaluation.draw_evaluation(cand, settings=s, seed=seed)
    finally:
        evaluation.MIN_EVAL_BLOCKS, evaluation.BLOCK_BALANCE = saved
    split = spatial_split(cand, in_blocks, settings=s, grid=grid)
    rows = cand.index.get_indexer(sample.index)
    _, psu = np.unique(sample["psu"].to_numpy(), return_inverse=True)
    oa, se = oa_estimate(cand, rows, 1 / sample["inclusion_probability"].to_numpy(float), psu,
                         np.zeros(psu.max() + 1, np.int64), np.array([1 - design.block_fraction]))
    return len(rows), design.blocks, oa, se, *excluded_share(cand, (split != "label").to_numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=100)
    args = parser.parse_args()
    header = f"Machine: {machine()}"
    print(header, flush=True)
    cand, grid, s = frame_of_twin()
    px = cand["n_pixels"].to_numpy(float)
    truth = float((px * cand["correct"].to_numpy(float)).sum() / px.sum())
    from cropmon.diagnosis.evaluation import intra_block_correlation
    from cropmon.diagnosis.select import block_keys

    rho = intra_block_correlation(cand["correct"].to_numpy(float), block_keys(cand["block_x"], cand["block_y"]))
    designs = {"fields (scattered, stratified)": lambda seed: scattered(cand, grid, s, seed),
               "blocks (cropmon's rule)": lambda seed: blocks(cand, grid, s, seed),
               "blocks, 20": lambda seed: blocks(cand, grid, s, seed, 20),
               "blocks, 80": lambda seed: blocks(cand, grid, s, seed, 80)}
    lines = [header + f"; {args.draws} draws per design (seeds 0..{args.draws - 1}).",
             f"Frame: the full twin's {len(cand):,} clean GT fields ({cand['informative'].sum():,} informative),"
             f" {grid.block_km:g} km blocks, buffer {s.buffer_km:g} km, eval_target_se {s.eval_target_se:g},"
             f" eval_min_per_stratum {s.eval_min_per_stratum}; true overall accuracy of the current model (pixels)"
             f" {truth:.4f}; intra-block correlation of right/wrong {rho:.4f}.", "",
             "| design | fields held back (median) | blocks | clean fields out of the label pool | informative"
             " fields out | mean OA estimate | SD of the OA estimate | mean SE | 95 % coverage | s per draw |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, draw in designs.items():
        t0 = time.perf_counter()
        rows = np.array([draw(seed) for seed in range(args.draws)], dtype=float)
        per = (time.perf_counter() - t0) / args.draws
        n, b, oa, se, out, out_inf = rows.T
        covered = np.mean(np.abs(oa - truth) <= 1.96 * se)
        line = (f"| {name} | {np.median(n):,.0f} | {np.median(b):.0f} | {100 * out.mean():.1f} % |"
                f" {100 * out_inf.mean():.1f} % | {oa.mean():.4f} | {oa.std():.4f} | {se.mean():.4f} | {covered:.2f} |"
                f" {per:.2f} |")
        print(line, flush=True)
        lines.append(line)
    text = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    for name in (f"eval-design-{stamp}.md", "eval-design-latest.md"):
        (RESULTS / name).write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
