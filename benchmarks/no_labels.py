"""A run without ground truth on the full twin, beside the same run with it: time, CPU, memory and what each writes;
and what keeping the suspect labels out of the plan changes in a run with GT.

`python -m cropmon run` on the twin's raster and fields (made once and cached by `twin.ensure_twin`), alternately
with the labels (`gt`) and with `--no-labels` (`no_labels`: the fields' labels hidden), `--rounds` times each, the
order flipped every round, on a local cluster of `--workers` workers; the process tree is sampled every 100 ms
(benchmarks/memtrack.py: peak PSS, and the tree's exact CPU seconds from getrusage). Then one run with GT and
`[diagnosis] exclude_suspects = false`, whose plan is the one before this issue (the same bytes: checked), diffed
against the default run's: label_plan.csv, fields_to_label.csv, evaluation_fields.csv and run.json's
evaluation_design.

Usage: python benchmarks/no_labels.py [--rounds 3] [--workers 2] [--scale 1]
Writes benchmarks/results/no-labels-latest.md and a dated copy. Needs the bench extra (psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memtrack import run_tracking_memory  # noqa: E402

RESULTS = HERE / "results"
MODES = {"gt": [], "no_labels": ["--no-labels"]}


def machine() -> str:
    import psutil

    return (f"{platform.node()}: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM,"
            f" Python {platform.python_version()}")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def run_once(raster: Path, fields: Path, out: Path, extra: list[str], workers: int) -> dict:
    cmd = [sys.executable, "-m", "cropmon", "run", "--raster", str(raster), "--fields", str(fields), "--out",
           str(out), "--workers", str(workers), "--progress", "off", *extra]
    done, peak, wall = run_tracking_memory(cmd)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}")
    manifest = json.loads((out / "run.json").read_text())
    stages = manifest["cluster"]["stages"]
    return {"wall_s": wall, "cpu_s": peak.total_cpu_s, "peak_pss_gb": peak.pss_bytes / 1e9,
            "total_s": manifest["timings_s"]["total"], "compute_s": manifest["timings_s"]["compute"],
            "tail_s": manifest["timings_s"]["tail"],
            "diagnosis_s": stages.get("diagnosis", {}).get("seconds", float("nan")),
            "uncertainty_file_s": stages.get("field-uncertainty", {}).get("seconds", float("nan")),
            "manifest": manifest}


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def outputs_table(out: Path) -> list[str]:
    manifest = json.loads((out / "run.json").read_text())
    rows = ["| file | bytes |", "| --- | --- |"]
    rows += [f"| {name} | {(out / name).stat().st_size:,} |" for name in manifest["outputs"]]
    return rows


def plan_without_labels(out: Path) -> list[str]:
    quotas = pd.read_csv(out / "unlabelled_quotas.csv")
    picks = pd.read_csv(out / "fields_to_label.csv")
    manifest = json.loads((out / "run.json").read_text())
    plan = manifest["unlabelled_plan"]
    shown = quotas.sort_values("area_share", ascending=False)
    per_block = picks.groupby(["predicted", "block"]).size()
    lines = [
        f"Pool: {plan['n_pool']:,} clean fields without a label; picked {plan['n_picked']:,} (budget"
        f" {plan['budget']}) over {int((quotas['quota'] > 0).sum())} predicted classes and"
        f" {picks['block'].nunique()} blocks of 5 km (at most {per_block.max()} of a class in a block); class"
        f" statuses {plan['classes']}.",
        "",
        "| predicted class | area share | weight | quota | proportional quota | available | status |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    budget = int(quotas["quota"].sum())
    for r in shown.itertuples():
        lines.append(f"| {r.crop} | {r.area_share:.4%} | {r.weight:.3f} | {r.quota} |"
                     f" {r.area_share * budget:.1f} | {r.available} | {r.status} |")
    return lines


def suspects_change(default: Path, kept: Path) -> list[str]:
    """What keeping the suspects out of the plan changes (default run) against using them (exclude_suspects off)."""
    lines = []
    same = [name for name in ("crop_metrics.csv", "confusion_matrix.csv", "underperforming_crops.csv",
                              "accuracy_assessment.csv", "fields.parquet", "field_class_counts.parquet")
            if (default / name).read_bytes() == (kept / name).read_bytes()]
    lines.append(f"Byte-identical in both: {', '.join(same)}.")
    a, b = pd.read_csv(kept / "label_plan.csv"), pd.read_csv(default / "label_plan.csv")
    columns = [c for c in a.columns if c != "derivation"]
    changed = ((a[columns] != b[columns]) & ~(a[columns].isna() & b[columns].isna()))
    moved = {c: int(changed[c].sum()) for c in columns if changed[c].any()}
    lines.append(f"label_plan.csv: {int(changed.any(axis=1).sum())} of {len(a)} planned crops change in some"
                 f" column ({moved}); quota changes in {int(changed.get('quota', pd.Series(0)).sum())} crops.")
    for name in ("fields_to_label.csv", "evaluation_fields.csv"):
        x, y = pd.read_csv(kept / name), pd.read_csv(default / name)
        only_kept, only_default = set(x["field_id"]) - set(y["field_id"]), set(y["field_id"]) - set(x["field_id"])
        lines.append(f"{name}: {len(x):,} -> {len(y):,} fields; {len(only_kept):,} leave, {len(only_default):,}"
                     " come in.")
    ea = json.loads((kept / "run.json").read_text())["evaluation_design"]
    eb = json.loads((default / "run.json").read_text())["evaluation_design"]
    diff = {k: f"{ea[k]} -> {eb[k]}" for k in ea if ea[k] != eb[k]}
    lines.append(f"run.json evaluation_design: {diff or 'unchanged'}.")
    suspects = pd.read_csv(default / "suspect_labels.csv")
    held = set(pd.read_csv(kept / "evaluation_fields.csv")["field_id"])
    picked = set(pd.read_csv(kept / "fields_to_label.csv")["field_id"])
    lines.append(f"The {len(suspects)} suspects: {len(set(suspects['field_id']) & picked)} were among the fields to"
                 f" label and {len(set(suspects['field_id']) & held)} among the held-back fields when the plan used"
                 " them; none is in either now.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    from cropmon import twin

    paths = twin.ensure_twin(scale=args.scale)
    with open(paths.raster, "rb") as f:  # warm page cache for every run
        while f.read(1 << 24):
            pass
    started_load = load()
    print(f"{machine()}; load average {started_load} at start", flush=True)
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="cropmon-nolabels-") as tmp:
        for i in range(args.rounds):
            order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                out = Path(tmp) / f"{mode}{i}"
                runs[mode].append(run_once(paths.raster, paths.fields, out, MODES[mode], args.workers))
                r = runs[mode][-1]
                print(f"round {i} {mode}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} CPU s, peak"
                      f" {r['peak_pss_gb']:.2f} GB", flush=True)
        config = Path(tmp) / "keep.toml"
        config.write_text("[diagnosis]\nexclude_suspects = false\n")
        kept = Path(tmp) / "kept"
        run_once(paths.raster, paths.fields, kept, ["--config", str(config)], args.workers)
        last = args.rounds - 1
        gt_out, nl_out = Path(tmp) / f"gt{last}", Path(tmp) / f"no_labels{last}"
        ended_load = load()
        gt_manifest = runs["gt"][-1]["manifest"]
        ranking = gt_manifest["ranking"]
        lines = [
            f"Machine: {machine()}. Load average (1, 5, 15 min) {started_load} at start, {ended_load} at the end.",
            f"`python -m cropmon run` on the twin (scale {args.scale:g}: {gt_manifest['fields']['n_input']:,}"
            f" fields), {args.workers} local workers, {args.rounds} rounds alternating with GT and `--no-labels`"
            " (order flipped every round), warm page cache. Median (min-max).",
            "",
            "| measure | with GT | --no-labels | ratio no-labels / GT (medians) |",
            "| --- | --- | --- | --- |",
        ]
        for key, what in (("wall_s", "wall time of the process, s"), ("cpu_s", "CPU seconds, whole process tree"),
                          ("total_s", "run.json total, s"), ("compute_s", "engine compute, s"),
                          ("tail_s", "tail (files, diagnosis, report), s"), ("diagnosis_s", "diagnosis task, s"),
                          ("uncertainty_file_s", "field_uncertainty.parquet task, s"),
                          ("peak_pss_gb", "peak memory of the tree (PSS), GB")):
            ratio = median(runs["no_labels"], key) / median(runs["gt"], key)
            lines.append(f"| {what} | {spread(runs['gt'], key)} | {spread(runs['no_labels'], key)} | {ratio:.2f} |")
        lines += ["", "What the run without ground truth writes (last round):", "", *outputs_table(nl_out), "",
                  *plan_without_labels(nl_out), "",
                  "The run with GT adds field_uncertainty.parquet, suspect_labels.csv and, for its 2 fields whose label"
                  " is no class, unlabelled_to_label.csv/.gpkg and unlabelled_quotas.csv; its headline:"
                  f" the top {ranking['k']} uncertain fields hold {ranking['share']:.1%} errors"
                  f" ({ranking['share_low']:.1%}-{ranking['share_high']:.1%}), against {ranking['random_share']:.1%}"
                  f" at random ({ranking['random_low']:.1%}-{ranking['random_high']:.1%});"
                  f" suspect labels {gt_manifest['suspect_labels']['by_crop']}.",
                  "", "Keeping the suspect labels out of the plan (default) against `exclude_suspects = false`:", ""]
        lines += [f"- {line}" for line in suspects_change(gt_out, kept)]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "no-labels-latest.md").write_text(text)
    (RESULTS / f"no-labels-{time.strftime('%Y-%m-%d')}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
