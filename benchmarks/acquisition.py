"""What the uncertainty ranking is worth: precision at k of misclassified fields among the k most uncertain.

Reads a run's fields.parquet + field_class_counts.parquet, scores every evaluable field (a GT class and a pixel)
with cropmon.diagnosis.uncertainty *without* its GT, ranks by each score, and counts the misclassified fields
(majority class != GT class) among the top k, for k = 100, 500, 1000:

  - the point figure: tie-break seed 0 (the seeded hash of the field id, as the plan uses it);
  - `tie seeds`: the range over --seeds tie-break seeds (what varies with the seed for a score: the order of
    fields with equal scores, e.g. the exact 50:50 votes that all get margin uncertainty 1);
  - `bootstrap`: the 95 % percentile interval over --boot resamples of the fields with replacement (each with its
    own tie-break), i.e. how much the figure would move on another AOI drawn like this one;
  - random: --random draws of k fields without replacement (what varies with the seed for the baseline), their
    mean and central 95 %.
Also the ROC AUC of each score (misclassified vs right, all fields) and, on the twin, how the figure moves when
the band-4 confidences separate right and wrong fields less well (--conf-noise: Gaussian noise added to each
field's mean confidence), since that separation is what the twin was built with (cropmon/twin/model.py).

Without --run, makes the runs itself: the full twin (cached) and the real clip (../shared/reference/real_clip).
Usage: python benchmarks/acquisition.py [--run NAME=DIR ...] [--shared DIR] [--seeds 20] [--boot 200]
           [--random 2000] [--conf-noise 0,7,14] [--out benchmarks/results/acquisition-latest.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine import machine  # noqa: E402

from cropmon.diagnosis.blocks import seeded_hash  # noqa: E402
from cropmon.diagnosis.metrics import truth_and_prediction  # noqa: E402
from cropmon.diagnosis.ranking import errors_in_top_k, precision_at_k, ranked_order  # noqa: E402
from cropmon.diagnosis.settings import DiagnosisSettings  # noqa: E402
from cropmon.diagnosis.suspects import suspect_labels  # noqa: E402
from cropmon.diagnosis.uncertainty import field_uncertainty  # noqa: E402
from cropmon.diagnosis.unlabelled import select_unlabelled  # noqa: E402

RESULTS = HERE / "results"
KS = (100, 500, 1000)
FIELD_COLUMNS = ["field_id", "area_m2", "gt_class", "majority_crop", "confidence_score", "n_pixels", "purity", "tie",
                 "gt_ml_match", "pixel_rule", "geometry_status", "duplicate_id", "x", "y"]
LABELS = {
    "band4_least_confidence": "least confidence, band 4",
    "vote_least_confidence": "least confidence, histogram",
    "vote_margin_uncertainty": "margin, histogram",
    "vote_entropy": "vote entropy, histogram",
    "acquisition_score": "**acquisition score**: (band 4 + margin) / 2",
    "product": "alternative: 1 - (confidence / 100) x purity",
    "band4_plus_lc": "alternative: (band 4 + histogram least confidence) / 2",
}


def load_run(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-field table (no geometry) and the class histograms, aligned on the field id."""
    fields = pd.read_parquet(out / "fields.parquet", columns=FIELD_COLUMNS)
    counts = pd.read_parquet(out / "field_class_counts.parquet")
    if not counts["field_id"].astype(str).equals(fields["field_id"].astype(str)):
        raise SystemExit(f"{out}: field_class_counts.parquet rows do not follow fields.parquet")
    return fields, counts.drop(columns="field_id")


def scores_of(fields: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Every score compared, per field: cropmon's (GT never read) and two alternative blends."""
    u = field_uncertainty(fields, counts)
    u["product"] = 1 - (1 - u["band4_least_confidence"].fillna(0)) * u["purity"]
    u["band4_plus_lc"] = 0.5 * (u["band4_least_confidence"].fillna(u["vote_least_confidence"])
                                + u["vote_least_confidence"])
    return u


def timed(call):
    """(result, wall s, CPU s) of one call in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def costs(fields: pd.DataFrame, counts: pd.DataFrame) -> dict:
    """What the new analysis steps cost on this run: scores, the no-label selection (GT hidden: every field is in
    the pool; the areas are the fields' pixels per predicted class, a stand-in for the engine's mapped areas), and
    the suspect labels (GT kept)."""
    settings = DiagnosisSettings()
    _, u_wall, u_cpu = timed(lambda: field_uncertainty(fields, counts))
    hidden = fields.assign(gt_class=pd.array([pd.NA] * len(fields), dtype="Int16"))
    picked, s_wall, s_cpu = timed(lambda: select_unlabelled(hidden, counts, counts.sum(), settings=settings, seed=0))
    suspects, x_wall, x_cpu = timed(lambda: suspect_labels(fields, settings=settings))
    statuses = picked.quotas["status"].value_counts().to_dict()
    return {"uncertainty": (u_wall, u_cpu), "select": (s_wall, s_cpu), "suspects": (x_wall, x_cpu),
            "pool": len(picked.pool), "picks": len(picked.picks), "classes": len(picked.quotas),
            "statuses": statuses, "n_suspects": len(suspects),
            "suspect_crops": suspects["gt_label"].value_counts().head(5).to_dict()}


def threshold_grid(fields: pd.DataFrame, *, min_pixels: int) -> list[tuple]:
    """Where the suspect thresholds come from: per (confidence, purity) floor, the labelled fields past both (with at
    least min_pixels pixels), how many disagree with their GT, and the agreement there."""
    truth, pred = truth_and_prediction(fields)
    ev = fields.loc[truth.index]
    big = ev["n_pixels"].to_numpy() >= min_pixels
    wrong = (truth != pred).to_numpy()
    rows = []
    for conf in (60, 65, 70, 75, 80):
        for purity in (0.8, 0.9, 1.0):
            past = big & (ev["confidence_score"].to_numpy() >= conf) & (ev["purity"].to_numpy() >= purity)
            rows.append((conf, purity, int(past.sum()), int((past & wrong).sum()),
                         1 - wrong[past].mean() if past.any() else float("nan")))
    return rows


def bootstrap_precision(wrong: np.ndarray, score: np.ndarray, ks: list[int], *, reps: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Precision at each k over resamples of the fields with replacement (multinomial weights, each resample with
    its own tie-break): (reps, len(ks))."""
    n = len(wrong)
    out = np.empty((reps, len(ks)))
    for r in range(reps):
        order = ranked_order(score, rng.random(n))
        weight = np.bincount(rng.integers(0, n, n), minlength=n)[order]
        taken = np.cumsum(weight)
        hits = np.cumsum(weight * wrong[order])
        for i, k in enumerate(ks):
            j = int(np.searchsorted(taken, k))  # the field whose copies reach k: count only what fits
            out[r, i] = (hits[j] - (taken[j] - k) * wrong[order[j]]) / k
    return out


def measure(name: str, fields: pd.DataFrame, counts: pd.DataFrame, args) -> dict:
    """Precision at k per score with its intervals, random baselines, AUCs, and the twin's right/wrong contrasts."""
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    u = scores_of(fields, counts)
    seconds = time.perf_counter() - t0
    truth, pred = truth_and_prediction(fields)
    wrong = (truth != pred).to_numpy()
    u = u.loc[truth.index]
    ids = fields.loc[truth.index, "field_id"]
    n = len(wrong)
    keys = {s: seeded_hash(ids, s) for s in range(args.seeds)}
    rng = np.random.default_rng(0)
    rows = []
    ks = [k for k in KS if k <= n]
    untied = ~fields.loc[truth.index, "tie"].to_numpy(bool)
    for column, label in LABELS.items():
        score = u[column].to_numpy(float)
        row = {"score": label, "column": column}
        orders = [ranked_order(score, keys[s]) for s in range(args.seeds)]
        boot = bootstrap_precision(wrong, score, ks, reps=args.boot, rng=rng)
        for i, k in enumerate(ks):
            by_seed = [precision_at_k(wrong, order, k) for order in orders]
            row[k] = (by_seed[0], min(by_seed), max(by_seed), *np.percentile(boot[:, i], [2.5, 97.5]))
        row["untied_500"] = precision_at_k(wrong[untied], ranked_order(score[untied], keys[0][untied]), 500)
        finite = np.isfinite(score)
        row["auc"] = (roc_auc_score(wrong[finite], score[finite])
                      if 0 < wrong[finite].sum() < finite.sum() else float("nan"))
        rows.append(row)
    random = {}
    for k in KS:
        if k <= n:
            draws = np.array([wrong[rng.choice(n, k, replace=False)].mean() for _ in range(args.random)])
            random[k] = (draws.mean(), *np.percentile(draws, [2.5, 97.5]))
    headline = errors_in_top_k(fields, u.reindex(fields.index), k=500)
    right = ~wrong
    conf = fields.loc[truth.index, "confidence_score"].to_numpy(float)
    purity = u["purity"].to_numpy(float)
    tie = fields.loc[truth.index, "tie"].to_numpy(bool)
    contrasts = {
        "fields": n, "errors": int(wrong.sum()), "error_rate": wrong.mean() if n else float("nan"),
        "conf_right": np.nanmean(conf[right]) if right.any() else float("nan"),
        "conf_wrong": np.nanmean(conf[wrong]) if wrong.any() else float("nan"),
        "purity_right": np.nanmean(purity[right]) if right.any() else float("nan"),
        "purity_wrong": np.nanmean(purity[wrong]) if wrong.any() else float("nan"),
        "ties": int(tie.sum()), "ties_wrong": int((tie & wrong).sum()),
        "pure_wrong": int((wrong & (purity == 1)).sum()),
    }
    noise = []
    for sd in args.conf_noise if n > max(KS) else []:
        added = np.random.default_rng(1).normal(0, sd, len(fields)) if sd else 0.0
        noisy = fields.assign(confidence_score=fields["confidence_score"] + added)
        un = scores_of(noisy, counts).loc[truth.index]
        nc = noisy.loc[truth.index, "confidence_score"].to_numpy(float)
        ok = np.isfinite(nc)
        entry = {"sd": sd, "auc_band4": roc_auc_score(wrong[ok], -nc[ok])}
        for column in ("band4_least_confidence", "acquisition_score", "product"):
            values = un[column].to_numpy(float)
            entry[column] = precision_at_k(wrong, ranked_order(values, keys[0]), 500)
            entry[column + "_untied"] = precision_at_k(wrong[untied], ranked_order(values[untied], keys[0][untied]),
                                                       500)
        noise.append(entry)
    return {"name": name, "rows": rows, "random": random, "headline": headline, "contrasts": contrasts,
            "costs": costs(fields, counts),
            "thresholds": threshold_grid(fields, min_pixels=DiagnosisSettings().min_pixels),
            "untied_rate": wrong[untied].mean() if untied.any() else float("nan"),
            "noise": noise, "scores_seconds": seconds, "uncertainty": u, "wrong": wrong, "ids": ids}


def make_runs(shared: Path, tmp: Path) -> dict[str, Path]:
    """The full twin and the real clip, run with cropmon's defaults."""
    runs = {"twin": tmp / "twin"}
    subprocess.run([sys.executable, "-m", "cropmon", "run", "--out", str(runs["twin"])], check=True)
    clip = shared / "real_clip"
    if (clip / "u0c_clip.tif").exists():
        runs["real clip"] = tmp / "clip"
        subprocess.run([sys.executable, "-m", "cropmon", "run", "--raster", str(clip / "u0c_clip.tif"), "--fields",
                        str(clip / "u0c_clip_fields.gpkg"), "--out", str(runs["real clip"]), "--scheduler",
                        "threads"], check=True)
    else:
        print(f"{clip} is absent: the real clip is left out", flush=True)
    return runs


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


def render(results: list[dict], header: str, args) -> str:
    lines = [
        "# What the uncertainty ranking is worth (precision at k)",
        "",
        f"Machine: {header}. {dt.date.today().isoformat()}. `python benchmarks/acquisition.py` "
        f"(--seeds {args.seeds} --boot {args.boot} --random {args.random}).",
        "",
        "Share of misclassified fields (%) among the k most uncertain evaluable fields; the GT is hidden from the",
        "ranking. Cell: point figure (tie-break seed 0) [range over the tie-break seeds] (95 % bootstrap interval",
        "over fields). Random: mean of the draws (central 95 %).",
    ]
    for res in results:
        c = res["contrasts"]
        ks = [k for k in KS if k in res["random"]]
        lines += ["", f"## {res['name']}: {c['fields']:,} evaluable fields, {c['errors']:,} misclassified "
                  f"({_pct(c['error_rate'])} %); scores in {res['scores_seconds']:.2f} s", ""]
        if not ks:
            lines.append("Fewer fields than the smallest k: no precision at k (see the per-field scores below).")
        else:
            lines += ["| score | " + " | ".join(f"top {k}" for k in ks) + " | top 500 without tied fields | ROC AUC |",
                      "| --- | " + " | ".join("---" for _ in ks) + " | --- | --- |"]
            for row in res["rows"]:
                cells = [f"{_pct(p)} [{_pct(lo)}-{_pct(hi)}] ({_pct(b0)}-{_pct(b1)})"
                         for p, lo, hi, b0, b1 in (row[k] for k in ks)]
                lines.append(f"| {row['score']} | " + " | ".join(cells)
                             + f" | {_pct(row['untied_500'])} | {row['auc']:.3f} |")
            lines.append("| random | " + " | ".join(
                f"{_pct(m)} ({_pct(lo)}-{_pct(hi)})" for m, lo, hi in (res["random"][k] for k in ks))
                + f" | {_pct(res['untied_rate'])} | 0.5 |")
        h = res["headline"]
        lines += ["", f"Headline (`ranking.errors_in_top_k`, k = 500 cut to {h.k}): the top {h.k} uncertain fields "
                  f"hold {_pct(h.share)} % errors (95 % {_pct(h.share_low)}-{_pct(h.share_high)}), against "
                  f"{_pct(h.random_share)} % at random (a random {h.k}: {_pct(h.random_low)}-{_pct(h.random_high)})."]
        lines += ["", "What the figure rests on (right vs misclassified fields): mean band-4 confidence "
                  f"{c['conf_right']:.1f} vs {c['conf_wrong']:.1f}; mean purity {c['purity_right']:.3f} vs "
                  f"{c['purity_wrong']:.3f}; misclassified fields with purity 1 (invisible to the vote): "
                  f"{c['pure_wrong']:,}; fields with a tied majority {c['ties']:,}, of them misclassified "
                  f"{c['ties_wrong']:,}."]
        if res["noise"]:
            lines += ["", "Sensitivity: Gaussian noise added to each field's mean band-4 confidence (the twin draws "
                      "it around its crop's right/wrong figure with sd 7):", "",
                      "| added sd | ROC AUC of band 4 | top 500: band 4 | acquisition score | "
                      "1 - confidence x purity | without tied fields: acquisition score | 1 - confidence x purity |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for e in res["noise"]:
                lines.append(f"| {e['sd']:g} | {e['auc_band4']:.3f} | "
                             f"{_pct(e['band4_least_confidence'])} | {_pct(e['acquisition_score'])} | "
                             f"{_pct(e['product'])} | {_pct(e['acquisition_score_untied'])} | "
                             f"{_pct(e['product_untied'])} |")
        cost = res["costs"]
        lines += ["", f"Cost on this run (one call each, this process; wall / CPU s): per-field uncertainty "
                  f"{cost['uncertainty'][0]:.2f} / {cost['uncertainty'][1]:.2f}; fields to label with the GT hidden "
                  f"(`select_unlabelled`, label_budget 2000) {cost['select'][0]:.2f} / {cost['select'][1]:.2f}: "
                  f"{cost['pool']:,} fields in the pool, {cost['picks']:,} picked over {cost['classes']} predicted "
                  f"classes (quota status {cost['statuses']}); suspect labels {cost['suspects'][0]:.2f} / "
                  f"{cost['suspects'][1]:.2f}: {cost['n_suspects']} suspects (GT crops {cost['suspect_crops']})."]
        if c["errors"] >= 100:
            lines += ["", "Suspect-label thresholds: labelled fields with >= min_pixels pixels past both floors, those "
                      "whose GT disagrees with the prediction, and the agreement there (defaults 70 and 0.9):", "",
                      "| confidence >= | purity >= | fields | disagree | agreement |",
                      "| --- | --- | --- | --- | --- |"]
            lines += [f"| {cf} | {pu:g} | {n:,} | {d:,} | {100 * a:.2f} % |" for cf, pu, n, d, a in res["thresholds"]]
        if c["fields"] <= 20:
            u = res["uncertainty"].assign(field_id=res["ids"].to_numpy(), misclassified=res["wrong"])
            lines += ["", "Per-field scores:", "", "| field | pixels | purity | band 4 LC | margin | entropy | "
                      "acquisition | misclassified |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for _, r in u.iterrows():
                lines.append(f"| {str(r['field_id'])[:8]} | {int(r['n_pixels'])} | {r['purity']:.3f} | "
                             f"{r['band4_least_confidence']:.3f} | {r['vote_margin_uncertainty']:.3f} | "
                             f"{r['vote_entropy']:.3f} | {r['acquisition_score']:.3f} | {bool(r['misclassified'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], help="NAME=DIR of a finished run (repeatable)")
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "reference")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--random", type=int, default=2000)
    parser.add_argument("--conf-noise", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 7.0, 14.0])
    parser.add_argument("--out", type=Path, default=RESULTS / "acquisition-latest.md")
    args = parser.parse_args()
    header = machine()
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = dict(r.split("=", 1) for r in args.run) if args.run else make_runs(args.shared, Path(tmp))
        results = []
        for name, out in runs.items():
            fields, counts = load_run(Path(out))
            results.append(measure(name, fields, counts, args))
            print(f"{name}: done", flush=True)
    text = render(results, header, args)
    args.out.write_text(text)
    if args.out.name.endswith("-latest.md"):
        (args.out.parent / args.out.name.replace("latest", dt.date.today().isoformat())).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
