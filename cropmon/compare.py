"""Compare two runs (A = the current model, B = the next one) per crop, on run A's held-back evaluation fields.

Run A's `evaluation_fields.csv` lists the fields its plan held back to measure the next model; B is measured on
exactly those fields (all of them must be in B's fields), A too, so neither model is scored on fields it may have
been trained on. When A holds back nothing (no such file, or no row in it), the fields scored in both runs are used
and the report says so; when the runs share no field at all, each run's own scored fields are used, unpaired.

Per GT crop: agreement (the share of its fields predicted as it), F1 over the set (false alarms are counted among
the set's fields only) and mean confidence, for A and B, the deltas B - A, and a bootstrap interval of each delta:
fields are resampled with replacement within each GT crop (stratified, so each crop keeps its number of fields),
the same fields for A and B when they are paired by field_id. The intervals are simultaneous over the crops
compared (Bonferroni: with k crops each interval has level 1 - (1 - level) / k), so an unchanged model flags no
crop in (1 - level) of the comparisons, however many crops there are. The verdict is on agreement, the reference's
per-crop score: `better` when its interval lies above 0, `worse` when below, `unchanged` otherwise, and
`too_few_fields` below `min_fields` fields (a bootstrap of a handful of fields is no evidence).

Pure functions over DataFrames (`evaluation_set`, `crop_scores`, `bootstrap_deltas`, `compare_tables`); reading the
runs (`read_run`) and writing the outputs (`write_comparison`) are the edges.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pyarrow.lib import ArrowException

from cropmon import errors
from cropmon import io as cio
from cropmon.labels import CROP_NAMES
from cropmon.report import Bullets, Heading, Image, Paragraph, Table, render_markdown

log = logging.getLogger(__name__)

FIELD_COLUMNS: tuple[str, ...] = ("field_id", "gt_label", "majority_crop_label", "confidence_score", "n_pixels")
METRIC_COLUMNS: tuple[str, ...] = ("crop", "num_fields", "agreement_score")
MEASURES: tuple[str, ...] = ("agreement", "f1", "conf_mean")
VERDICTS: tuple[str, ...] = ("better", "worse", "unchanged", "too_few_fields")
DEFAULT_BOOTSTRAP = 10_000  # the Bonferroni tails need ~10 resamples beyond each end: 0.05 / (2 x 20 crops) x 10,000
MIN_FIELDS = 10
LEVEL = 0.95
MAX_DRAWS_PER_BATCH = 20_000_000  # resampled fields held in memory at once
_CLASS = {name: i for i, name in enumerate(CROP_NAMES)}


class NotComparable(errors.InputError):
    """Two runs cannot be compared as given (other fields, other ground truth, a multi-AOI output ...)."""


@dataclass(frozen=True)
class RunTables:
    """What a comparison reads of one single-AOI output directory."""

    path: Path
    fields: pd.DataFrame  # FIELD_COLUMNS
    crop_metrics: pd.DataFrame  # METRIC_COLUMNS of crop_metrics.csv (the whole run)
    evaluation_ids: pd.Series | None  # field_id of evaluation_fields.csv; None when the file is absent
    manifest: dict


@dataclass(frozen=True)
class EvaluationSet:
    """The fields both runs are scored on: one row per field (crop, predicted, confidence) for A and for B."""

    a: pd.DataFrame  # field_id, crop, predicted, confidence
    b: pd.DataFrame  # paired: the same fields in the same order as `a`
    paired: bool
    source: str  # "evaluation_fields" | "common_fields" | "all_fields"
    description: str  # one sentence for the report
    dropped: dict[str, int]  # why listed fields are left out, with counts


# ---------------------------------------------------------------------------------------------------------------
# Reading (the edge)


def _read(path: Path, what: str, reader, fix: str):
    if not path.is_file():
        raise errors.MissingFile(f"{what} is missing", path=path, fix=fix)
    try:
        return reader(path)
    except (OSError, ValueError, ArrowException) as exc:  # JSONDecodeError and pandas' parser errors are ValueErrors
        raise errors.InputError(f"cannot read {what}: {errors.first_line(exc)}", path=path, fix=fix) from exc


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], path: Path, fix: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise errors.MissingColumn(f"no column {', '.join(missing)}", path=path, fix=fix)


def read_run(run_dir: str | Path) -> RunTables:
    """The tables of one `cropmon run` output directory, checked; typed errors name the file and the fix."""
    root = Path(run_dir)
    rerun = f"point at the output directory of one `cropmon run` (re-run it if {root} is incomplete)"
    if not root.is_dir():
        raise errors.MissingFile("the run directory does not exist", path=root, fix=rerun)
    manifest = _read(root / "run.json", "run.json", lambda p: json.loads(p.read_text()), rerun)
    if isinstance(manifest, dict) and "aois" in manifest:
        names = ", ".join(manifest["aois"]) if isinstance(manifest["aois"], dict) else "NAME"
        raise NotComparable(
            "this is the output of a multi-AOI run",
            path=root,
            fix=f"compare the directory of one AOI ({names}): {root}/NAME",
        )

    def parquet(path: Path) -> pd.DataFrame:
        import pyarrow.parquet as pq

        have = set(pq.read_schema(path).names)
        return pd.read_parquet(path, columns=[c for c in FIELD_COLUMNS if c in have])

    fields = _read(root / "fields.parquet", "fields.parquet", parquet, rerun)
    _require_columns(fields, FIELD_COLUMNS, root / "fields.parquet", rerun)
    crop_table = _read(root / "crop_metrics.csv", "crop_metrics.csv", pd.read_csv, rerun)
    _require_columns(crop_table, METRIC_COLUMNS, root / "crop_metrics.csv", rerun)
    evaluation_ids = None
    eval_path = root / "evaluation_fields.csv"
    if eval_path.is_file():
        held = _read(eval_path, "evaluation_fields.csv", lambda p: pd.read_csv(p, dtype={"field_id": str}), rerun)
        _require_columns(held, ("field_id",), eval_path, rerun)
        evaluation_ids = held["field_id"].astype(str)
    return RunTables(
        path=root,
        fields=fields[list(FIELD_COLUMNS)],
        crop_metrics=crop_table[list(METRIC_COLUMNS)],
        evaluation_ids=evaluation_ids,
        manifest=manifest if isinstance(manifest, dict) else {},
    )


# ---------------------------------------------------------------------------------------------------------------
# The evaluation set


def scored_fields(fields: pd.DataFrame) -> pd.DataFrame:
    """Fields with a known GT crop and a prediction (as the metrics score them), one row per unique field_id:
    field_id, crop, predicted, confidence. Ids that appear twice are left out (they cannot be paired)."""
    ids = fields["field_id"].astype(str)
    known = fields["gt_label"].isin(CROP_NAMES) & fields["majority_crop_label"].isin(CROP_NAMES)
    ok = known & (fields["n_pixels"] > 0) & ~ids.duplicated(keep=False)
    out = pd.DataFrame(
        {
            "field_id": ids[ok].to_numpy(),
            "crop": fields.loc[ok, "gt_label"].astype(str).to_numpy(),
            "predicted": fields.loc[ok, "majority_crop_label"].astype(str).to_numpy(),
            "confidence": fields.loc[ok, "confidence_score"].astype(float).to_numpy(),
        }
    )
    return out


def evaluation_set(
    fields_a: pd.DataFrame,
    fields_b: pd.DataFrame,
    evaluation_ids: pd.Series | None,
    *,
    name_a: str = "A",
    name_b: str = "B",
) -> EvaluationSet:
    """The fields to compare on: A's held-back evaluation fields when it has any, else the fields both runs scored
    (paired by field_id), else each run's own scored fields (unpaired).

    NotComparable when A's evaluation fields are missing from B, or a shared field has another GT crop in B.
    """
    a_all, b_all = scored_fields(fields_a), scored_fields(fields_b)
    dropped: dict[str, int] = {}
    if evaluation_ids is not None and len(evaluation_ids):
        wanted = pd.Index(evaluation_ids.astype(str).unique())
        missing = wanted.difference(pd.Index(fields_b["field_id"].astype(str)))
        if len(missing):
            raise NotComparable(
                f"{len(missing):,} of the {len(wanted):,} evaluation fields of run {name_a} are not in run {name_b}'s"
                f" fields.parquet (e.g. {', '.join(missing[:3])})",
                path=name_b,
                fix=f"run the next model on the same ground-truth fields as run {name_a}",
            )
        source = "evaluation_fields"
        ids = wanted
    else:
        source = "common_fields"
        ids = pd.Index(a_all["field_id"]).intersection(pd.Index(b_all["field_id"]))
        if not len(ids):
            source = "all_fields"
    if source == "all_fields":
        description = (
            f"Run {name_a} holds back no evaluation fields and the runs share no field_id: each run is scored on its"
            f" own {len(a_all):,} / {len(b_all):,} scored fields, unpaired (a comparison of two field sets as much"
            " as of two models)."
        )
        return EvaluationSet(a_all, b_all, paired=False, source=source, description=description, dropped=dropped)
    ids = pd.Index(ids, name="field_id")
    a = a_all.set_index("field_id").reindex(ids)
    b = b_all.set_index("field_id").reindex(ids)
    unscored = a["crop"].isna() | b["crop"].isna()
    if unscored.any():
        dropped["not scored in both runs"] = int(unscored.sum())
    a, b = a.loc[~unscored], b.loc[~unscored]
    other_truth = a["crop"] != b["crop"]
    if other_truth.any():
        example = other_truth[other_truth].index[0]
        raise NotComparable(
            f"{int(other_truth.sum()):,} shared fields have another ground-truth crop in run {name_b} (e.g. {example}:"
            f" {a.at[example, 'crop']} in {name_a}, {b.at[example, 'crop']} in {name_b})",
            path=name_b,
            fix="compare runs made with the same ground-truth labels",
        )
    if source == "evaluation_fields":
        description = (
            f"Run {name_a}'s held-back evaluation fields (evaluation_fields.csv): {len(ids):,} listed,"
            f" {len(a):,} scored in both runs; paired by field_id."
        )
    else:
        description = (
            f"Run {name_a} holds back no evaluation fields: the {len(a):,} fields scored in both runs, paired by"
            " field_id. If the next model was trained on labels of these fields, its numbers are optimistic."
        )
    return EvaluationSet(
        a.reset_index(), b.reset_index(), paired=True, source=source, description=description, dropped=dropped
    )


# ---------------------------------------------------------------------------------------------------------------
# Scores and the bootstrap


def crop_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Per GT crop of `table` (crop, predicted, confidence): n, agreement, F1 over the table, mean confidence."""
    crops = [c for c in CROP_NAMES if c in set(table["crop"])]
    right = table["crop"] == table["predicted"]
    n = table.groupby("crop").size().reindex(crops)
    tp = right.groupby(table["crop"]).sum().reindex(crops)
    predicted = table["predicted"].value_counts().reindex(crops, fill_value=0)
    return pd.DataFrame(
        {
            "n": n.astype("int64"),
            "agreement": tp / n,
            "f1": 2 * tp / (n + predicted),
            "conf_mean": table.groupby("crop")["confidence"].mean().reindex(crops),
        }
    ).rename_axis("crop")


def _strata(table: pd.DataFrame, crops: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per crop (in `crops` order): the class ids predicted for its fields and their confidences."""
    pred = table["predicted"].map(_CLASS).to_numpy(dtype="int64")
    conf = table["confidence"].to_numpy(dtype=float)
    by_crop = table.groupby("crop").indices
    return [(pred[by_crop[c]], conf[by_crop[c]]) for c in crops]


def _resampled(
    strata: list[tuple[np.ndarray, np.ndarray]], draws: list[np.ndarray], crop_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Agreement, F1 and mean confidence per crop (columns) for each resample (rows)."""
    n_boot = draws[0].shape[0]
    tp = np.zeros((n_boot, len(strata)))
    predicted = np.zeros((n_boot, len(CROP_NAMES)))
    conf = np.full((n_boot, len(strata)), np.nan)
    offsets = np.arange(n_boot)[:, None] * len(CROP_NAMES)
    for k, ((pred, confidence), idx) in enumerate(zip(strata, draws, strict=True)):
        p = pred[idx]
        tp[:, k] = (p == crop_ids[k]).sum(axis=1)
        predicted += np.bincount((p + offsets).ravel(), minlength=n_boot * len(CROP_NAMES)).reshape(n_boot, -1)
        c = confidence[idx]
        finite = np.isfinite(c)
        with np.errstate(invalid="ignore", divide="ignore"):
            conf[:, k] = np.where(finite, c, 0.0).sum(axis=1) / finite.sum(axis=1)
    n = np.array([len(pred) for pred, _ in strata], dtype=float)
    return {
        "agreement": tp / n,
        "f1": 2 * tp / (n + predicted[:, crop_ids]),
        "conf_mean": conf,
    }


def bootstrap_deltas(
    set_: EvaluationSet, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = LEVEL, n_crops: int
) -> pd.DataFrame:
    """Bootstrap intervals of B - A per crop (rows) for each measure: `<measure>_delta_lo` / `_hi`.

    Fields are resampled with replacement within each GT crop (the same draws for A and B when paired). Each
    interval is the percentile interval at level 1 - (1 - level) / n_crops (Bonferroni over the crops compared).
    """
    crops = [c for c in CROP_NAMES if c in set(set_.a["crop"])]
    crop_ids = np.array([_CLASS[c] for c in crops])
    strata_a, strata_b = _strata(set_.a, crops), _strata(set_.b, crops)
    rng = np.random.default_rng(seed)
    fields = max(len(set_.a), 1)
    batch = max(1, MAX_DRAWS_PER_BATCH // fields)
    deltas: dict[str, list[np.ndarray]] = {m: [] for m in MEASURES}
    for start in range(0, n_boot, batch):
        size = min(batch, n_boot - start)
        draws_a = [rng.integers(0, len(pred), size=(size, len(pred))) for pred, _ in strata_a]
        draws_b = draws_a if set_.paired else [rng.integers(0, len(p), size=(size, len(p))) for p, _ in strata_b]
        scores_a = _resampled(strata_a, draws_a, crop_ids)
        scores_b = _resampled(strata_b, draws_b, crop_ids)
        for m in MEASURES:
            deltas[m].append(scores_b[m] - scores_a[m])
    tail = (1 - level) / max(n_crops, 1) / 2
    out = {}
    for m in MEASURES:
        values = np.concatenate(deltas[m])
        finite = np.isfinite(values).all(axis=0)
        lo = np.full(len(crops), np.nan)
        hi = np.full(len(crops), np.nan)
        if finite.any():
            lo[finite], hi[finite] = np.quantile(values[:, finite], [tail, 1 - tail], axis=0)
        out[f"{m}_delta_lo"], out[f"{m}_delta_hi"] = lo, hi
    return pd.DataFrame(out, index=pd.Index(crops, name="crop"))


def _verdict(n: int, lo: float, hi: float, min_fields: int) -> str:
    if n < min_fields:
        return "too_few_fields"
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "unchanged"


def compare_tables(
    set_: EvaluationSet,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
    min_fields: int = MIN_FIELDS,
) -> pd.DataFrame:
    """The per-crop comparison: scores of A and B, deltas with intervals, and the verdict (on agreement).

    One row per GT crop of the set; better first (largest gain first), then worse, unchanged, too_few_fields.
    """
    a, b = crop_scores(set_.a), crop_scores(set_.b)
    crops = [c for c in a.index if c in b.index]
    a, b = a.loc[crops], b.loc[crops]
    n_compared = int((np.minimum(a["n"], b["n"]) >= min_fields).sum())
    if not set_.paired:  # strata need fields on both sides
        keep = set_.a["crop"].isin(crops), set_.b["crop"].isin(crops)
        set_ = EvaluationSet(set_.a.loc[keep[0]], set_.b.loc[keep[1]], False, set_.source, set_.description, {})
    intervals = bootstrap_deltas(set_, n_boot=n_boot, seed=seed, level=level, n_crops=n_compared)
    table = pd.DataFrame({"n_a": a["n"], "n_b": b["n"]})
    for m in MEASURES:
        table[f"{m}_a"], table[f"{m}_b"] = a[m], b[m]
        table[f"{m}_delta"] = b[m] - a[m]
        table[f"{m}_delta_lo"] = intervals[f"{m}_delta_lo"]
        table[f"{m}_delta_hi"] = intervals[f"{m}_delta_hi"]
    table.insert(
        0,
        "verdict",
        [
            _verdict(min(na, nb), lo, hi, min_fields)
            for na, nb, lo, hi in zip(
                table["n_a"], table["n_b"], table["agreement_delta_lo"], table["agreement_delta_hi"], strict=True
            )
        ],
    )
    table["interval_level"] = 1 - (1 - level) / max(n_compared, 1)
    table = table.reset_index()
    order = table["verdict"].map(VERDICTS.index)
    gain = np.where(table["verdict"] == "worse", table["agreement_delta"], -table["agreement_delta"])
    return table.assign(_o=order, _g=gain).sort_values(["_o", "_g", "crop"]).drop(columns=["_o", "_g"])


# ---------------------------------------------------------------------------------------------------------------
# Picture, report, files (the edge)


def delta_plot(table: pd.DataFrame) -> Figure:
    """Agreement and F1 deltas (B - A) per crop with their intervals; better green, worse red, others grey."""
    data = table.iloc[::-1]
    colours = data["verdict"].map({"better": "#1a9850", "worse": "#d73027"}).fillna("#7f7f7f").to_numpy()
    fig = Figure(figsize=(11.0, max(3.0, 0.34 * len(data) + 1.6)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(data))
    for ax, measure, title in zip(axes, ("agreement", "f1"), ("agreement (verdict)", "F1 over the set"), strict=True):
        delta = data[f"{measure}_delta"].to_numpy(float)
        lo, hi = data[f"{measure}_delta_lo"].to_numpy(float), data[f"{measure}_delta_hi"].to_numpy(float)
        err = np.vstack([np.clip(delta - lo, 0, None), np.clip(hi - delta, 0, None)])
        ax.errorbar(delta, y, xerr=np.nan_to_num(err), fmt="none", ecolor=colours, elinewidth=2, alpha=0.8)
        ax.scatter(delta, y, c=colours, s=28, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"B - A, {title}")
        ax.grid(axis="x", alpha=0.3)
    labels = [f"{c} (n={n})" for c, n in zip(data["crop"], data["n_a"], strict=True)]
    axes[0].set_yticks(y, labels, fontsize=8)
    level = float(table["interval_level"].iloc[0]) if len(table) else LEVEL
    fig.suptitle(f"Per-crop change, B - A, with bootstrap intervals (each at {100 * level:.2f} %)", fontsize=10)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _listing(rows: pd.DataFrame) -> str:
    return "; ".join(
        f"{r.crop} (agreement {r.agreement_a:.2f} -> {r.agreement_b:.2f}, {r.agreement_delta:+.2f}"
        f" [{r.agreement_delta_lo:+.2f}, {r.agreement_delta_hi:+.2f}], n={r.n_a})"
        for r in rows.itertuples()
    )


def report_blocks(
    table: pd.DataFrame,
    set_: EvaluationSet,
    runs: tuple[RunTables, RunTables],
    *,
    image: Image,
    n_boot: int,
    seed: int,
) -> list:
    """The comparison report, every sentence from the numbers."""
    run_a, run_b = runs
    better, worse = table.loc[table["verdict"] == "better"], table.loc[table["verdict"] == "worse"]
    few = table.loc[table["verdict"] == "too_few_fields", "crop"].tolist()
    n_compared = int((table["verdict"] != "too_few_fields").sum())
    level = float(table["interval_level"].iloc[0]) if len(table) else LEVEL
    summary = [
        f"Better: {_listing(better)}." if len(better) else "Better: no crop.",
        f"Worse: {_listing(worse)}." if len(worse) else "Worse: no crop.",
        f"Unchanged (interval includes 0): {int((table['verdict'] == 'unchanged').sum())} crops.",
    ]
    if few:
        summary.append(f"No verdict, fewer than {MIN_FIELDS} fields in the set: {', '.join(few)}.")
    method = (
        f"{n_boot:,} bootstrap resamples (seed {seed}) of the fields within each GT crop"
        + (", the same fields for A and B (paired by field_id)" if set_.paired else ", A and B drawn independently")
        + f". Intervals are simultaneous over the {n_compared} crops with a verdict: each at {100 * level:.2f} %"
        f" (Bonferroni for {100 * LEVEL:g} % overall), so an unchanged model flags no crop in {100 * LEVEL:g} % of"
        " comparisons. The verdict is on agreement; F1 over the set also counts the set's fields of other crops"
        " predicted as the crop (false alarms), so it moves when a neighbouring crop improves."
    )
    dropped = [f"{v:,} {k}" for k, v in set_.dropped.items()]
    blocks: list = [
        Heading("Which fields"),
        Paragraph(set_.description + (f" Left out: {', '.join(dropped)}." if dropped else "")),
        Heading("Result"),
        Bullets(summary),
        Paragraph(method),
        image,
    ]
    shown = table[
        ["crop", "verdict", "n_a", "agreement_a", "agreement_b", "agreement_delta", "agreement_delta_lo",
         "agreement_delta_hi", "f1_a", "f1_b", "f1_delta", "conf_mean_a", "conf_mean_b", "conf_mean_delta"]
    ]  # fmt: skip
    blocks.append(Table(shown, "comparison.csv (also the intervals of the F1 and confidence deltas)"))
    whole = run_a.crop_metrics.merge(run_b.crop_metrics, on="crop", suffixes=("_a", "_b"))
    whole = whole.loc[whole["crop"].isin(table["crop"])]
    blocks += [
        Heading("Context: the whole runs"),
        Paragraph(
            "Agreement over all fields of each run (crop_metrics.csv), for reference only: if the next model was"
            " trained on labels of some of these fields, its whole-run numbers are optimistic."
        ),
        Table(whole, "crop_metrics.csv of A and B"),
        Heading("Runs"),
        Bullets([f"A: {run_a.path}", f"B: {run_b.path}"]),
    ]
    return blocks


def _check_out_dir(out_dir: Path, runs: tuple[Path, Path]) -> None:
    """Refuse an output directory that is (or contains) a run: writing it replaces the whole directory."""
    out = out_dir.resolve()
    for run in runs:
        run = run.resolve()
        if out == run or out in run.parents:
            raise errors.OutputError(
                "the output directory would replace a run directory", path=out_dir, fix="give another --out"
            )


def default_out_dir(run_a: str | Path, run_b: str | Path) -> Path:
    """outputs/compare/<A>_vs_<B>."""
    return Path("outputs") / "compare" / f"{Path(run_a).resolve().name}_vs_{Path(run_b).resolve().name}"


def write_comparison(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: str | Path | None = None,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[Path, pd.DataFrame, EvaluationSet]:
    """Read two runs, compare them and write comparison.csv, comparison.png and comparison.md (atomically)."""
    if n_boot < 1:
        raise errors.ConfigError(f"--bootstrap {n_boot} is not a number of resamples", fix="give an integer >= 1")
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_a, run_b)
    _check_out_dir(out, (Path(run_a), Path(run_b)))
    cio.check_writable(out)
    runs = read_run(run_a), read_run(run_b)
    set_ = evaluation_set(runs[0].fields, runs[1].fields, runs[0].evaluation_ids, name_a=str(run_a), name_b=str(run_b))
    if not len(set_.a) or not len(set_.b):
        raise NotComparable("no field is scored in both runs", path=run_b, fix="compare runs of the same AOI")
    table = compare_tables(set_, n_boot=n_boot, seed=seed)
    figure = delta_plot(table)
    title = f"Comparison: {Path(run_a).name} (A) vs {Path(run_b).name} (B)"
    image = Image("comparison.png", _png(figure), "Agreement and F1 change per crop, B - A, with intervals.")
    blocks = report_blocks(table, set_, runs, image=image, n_boot=n_boot, seed=seed)
    with cio.atomic_output_dir(out) as staged:
        table.round(4).to_csv(staged.path("comparison.csv"), index=False, float_format="%.10g")
        staged.path("comparison.png").write_bytes(image.png)
        staged.path("comparison.md").write_text(render_markdown(title, blocks), encoding="utf-8")
    log.info("comparison in %s", out)
    return out, table, set_
