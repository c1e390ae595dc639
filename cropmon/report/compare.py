"""The comparison of two runs as files: read each run's outputs (the edge, with typed errors naming the file and the
fix), compare them (diagnosis/compare.py), and write comparison.csv, comparison.png and comparison.md atomically."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyarrow.lib import ArrowException

from cropmon import errors
from cropmon.catalogue import U0C
from cropmon.diagnosis.compare import (
    DEFAULT_BOOTSTRAP,
    LEVEL,
    MIN_FIELDS,
    DesignSample,
    EvaluationSet,
    compare_tables,
    design_sample,
    evaluation_set,
    overall_comparison,
)
from cropmon.errors import NotComparable
from cropmon.io.outputs import atomic_output_dir, check_writable, write_csv
from cropmon.report.document import Bullets, Document, Heading, Image, Paragraph, Table, png
from cropmon.report.plots import delta_plot
from cropmon.report.run_facts import RunFacts

log = logging.getLogger(__name__)

FIELD_COLUMNS: tuple[str, ...] = ("field_id", "gt_label", "majority_crop_label", "confidence_score", "n_pixels")
METRIC_COLUMNS: tuple[str, ...] = ("crop", "num_fields", "agreement_score")


@dataclass(frozen=True)
class RunTables:
    """What a comparison reads of one single-AOI output directory."""

    path: Path
    fields: pd.DataFrame  # FIELD_COLUMNS
    crop_metrics: pd.DataFrame  # METRIC_COLUMNS of crop_metrics.csv (the whole run)
    evaluation_ids: pd.Series | None  # field_id of evaluation_fields.csv; None when the file is absent
    manifest: dict
    evaluation: pd.DataFrame | None = None  # evaluation_fields.csv (with its inclusion probabilities, if any)

    def class_counts(self, field_ids: pd.Series) -> pd.DataFrame | None:
        """The pixel histograms of these fields (field_class_counts.parquet rows, index field_id); None when the
        run has no such file (the comparison then takes every field as homogeneous)."""
        path = self.path / "field_class_counts.parquet"
        if not path.is_file():
            return None
        import pyarrow.parquet as pq

        wanted = set(field_ids.astype(str))
        try:
            table = pq.read_table(path, filters=[("field_id", "in", sorted(wanted))]).to_pandas()
        except (OSError, ValueError, ArrowException) as exc:
            raise errors.InputError(f"cannot read field_class_counts.parquet: {errors.first_line(exc)}", path=path,
                                    fix="re-run `cropmon run` for this run") from exc
        return table.drop_duplicates("field_id").set_index("field_id")

    @property
    def crop_order(self) -> tuple[str, ...]:
        """The run's class catalogue, in order (run.json inputs.classes; the u0c one for older runs)."""
        names = RunFacts.of(self.manifest).class_names
        return names if names is not None else U0C.names



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

    if isinstance(manifest, dict) and (manifest.get("ground_truth") or {}).get("fields") == "none":
        raise NotComparable("this run had no ground truth (no field carries a usable label): there is nothing to"
                            " compare on", path=root,
                            fix="compare runs whose fields carry labels (A's held-back evaluation fields need them)")

    def parquet(path: Path) -> pd.DataFrame:
        import pyarrow.parquet as pq

        have = set(pq.read_schema(path).names)
        return pd.read_parquet(path, columns=[c for c in FIELD_COLUMNS if c in have])

    fields = _read(root / "fields.parquet", "fields.parquet", parquet, rerun)
    _require_columns(fields, FIELD_COLUMNS, root / "fields.parquet", rerun)
    crop_table = _read(root / "crop_metrics.csv", "crop_metrics.csv", pd.read_csv, rerun)
    _require_columns(crop_table, METRIC_COLUMNS, root / "crop_metrics.csv", rerun)
    evaluation_ids = None
    held = None
    eval_path = root / "evaluation_fields.csv"
    if eval_path.is_file():
        held = _read(eval_path, "evaluation_fields.csv",
                     lambda p: pd.read_csv(p, dtype={"field_id": str, "block": str}), rerun)
        _require_columns(held, ("field_id",), eval_path, rerun)
        evaluation_ids = held["field_id"].astype(str)
        if "inclusion_probability" in held and not (held["inclusion_probability"].between(0, 1, inclusive="right")
                                                    .all()):
            raise errors.InputError("evaluation_fields.csv has inclusion probabilities outside (0, 1]",
                                    path=eval_path, fix=rerun)
    return RunTables(
        path=root,
        fields=fields[list(FIELD_COLUMNS)],
        crop_metrics=crop_table[list(METRIC_COLUMNS)],
        evaluation_ids=evaluation_ids,
        manifest=manifest if isinstance(manifest, dict) else {},
        evaluation=held,
    )



def _listing(rows: pd.DataFrame) -> str:
    return "; ".join(
        f"{r.crop} (producer's accuracy {r.pa_a:.2f} -> {r.pa_b:.2f}, {r.pa_delta:+.2f}"
        f" [{r.pa_delta_lo:+.2f}, {r.pa_delta_hi:+.2f}], n={r.n_a})"
        for r in rows.itertuples()
    )


def design_text(design: DesignSample, overall: dict) -> str:
    """How the sample is weighted, and the overall accuracy of both models with the paired delta."""
    if design.probability:
        how = (f"Run A's evaluation fields are a probability sample (evaluation_fields.csv: blocks, then fields by"
               f" A's map class, each with its inclusion probability): the estimates weight each field by 1 /"
               f" probability, with the {overall['primary_units']} blocks as primary units"
               f" (finite-population factor {overall['fpc']:.3f}).")
    else:
        how = (f"The fields compared carry no inclusion probabilities: they are weighted equally, each field its own"
               f" primary unit ({overall['primary_units']:,}), as if they were a simple random sample of the fields"
               " the models are assessed on.")
    return (how + f" Overall accuracy (pixels, fields as clusters): A {overall['oa_a']:.3f} (SE"
            f" {overall['oa_a_se']:.3f}), B {overall['oa_b']:.3f} (SE {overall['oa_b_se']:.3f}), B - A"
            f" {overall['oa_delta']:+.3f} [{overall['oa_delta_lo']:+.3f}, {overall['oa_delta_hi']:+.3f}]"
            f" ({100 * LEVEL:g} %, paired, t with {overall['df']} degrees of freedom).")


def report_blocks(
    table: pd.DataFrame,
    set_: EvaluationSet,
    runs: tuple[RunTables, RunTables],
    *,
    image: Image,
    n_boot: int,
    seed: int,
    design: DesignSample | None = None,
    overall: dict | None = None,
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
        "The verdict is on producer's accuracy, the design-based agreement: the share of the crop's GT pixels that"
        " the model maps as the crop, estimated with the sample's weights, fields as clusters, paired (both models"
        f" on the same fields). Intervals are simultaneous over the {n_compared} crops with a verdict: each at"
        f" {100 * level:.2f} % (Bonferroni for {100 * LEVEL:g} % overall), so an unchanged model flags no crop in"
        f" {100 * LEVEL:g} % of comparisons. Beside it, the field-level agreement and F1 of the set with"
        f" {n_boot:,} bootstrap resamples (seed {seed}) of the fields within each GT crop"
        + (", the same fields for A and B" if set_.paired else ", A and B drawn independently")
        + " (unweighted: they describe the set); F1 over the set also counts the set's fields of other crops"
        " predicted as the crop (false alarms), so it moves when a neighbouring crop improves."
    )
    dropped = [f"{v:,} {k}" for k, v in set_.dropped.items()]
    which = set_.description + (f" Left out: {', '.join(dropped)}." if dropped else "")
    blocks: list = [
        Heading("Which fields"),
        Paragraph(which),
        *([Paragraph(design_text(design, overall))] if design is not None and overall is not None else []),
        Heading("Result"),
        Bullets(summary),
        Paragraph(method),
        image,
    ]
    shown = table[
        ["crop", "verdict", "n_a", "pa_a", "pa_b", "pa_delta", "pa_delta_lo", "pa_delta_hi", "ua_a", "ua_b",
         "ua_delta", "agreement_a", "agreement_b", "agreement_delta", "f1_a", "f1_b", "f1_delta"]
    ]  # fmt: skip
    blocks.append(Table(shown, "comparison.csv (also the intervals of the UA, F1 and confidence deltas)"))
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


@dataclass(frozen=True)
class Comparison:
    """Two runs compared: the per-crop table, the fields it is computed on, and the report (a notebook shows it)."""

    table: pd.DataFrame
    evaluation: EvaluationSet
    report: Document
    out_dir: Path | None = None  # where the files went, if anywhere
    overall: dict | None = None  # design-based overall accuracy of A and B and the paired delta

    def _repr_html_(self) -> str:
        return self.report.html


def compare_runs(run_a: str | Path, run_b: str | Path, *, n_boot: int = DEFAULT_BOOTSTRAP,
                 seed: int = 0) -> Comparison:
    """Read two runs' outputs and compare them per crop on run A's held-back fields (nothing is written)."""
    if n_boot < 1:
        raise errors.ConfigError(f"--bootstrap {n_boot} is not a number of resamples", fix="give an integer >= 1")
    runs = read_run(run_a), read_run(run_b)
    set_ = evaluation_set(runs[0].fields, runs[1].fields, runs[0].evaluation_ids, name_a=str(run_a), name_b=str(run_b),
                          order=runs[0].crop_order)
    if not len(set_.a) or not len(set_.b):
        raise NotComparable("no field is scored in both runs", path=run_b, fix="compare runs of the same AOI")
    ids = set_.a["field_id"]
    design = design_sample(set_, runs[0].evaluation, counts_a=runs[0].class_counts(ids),
                           counts_b=runs[1].class_counts(set_.b["field_id"]))
    table = compare_tables(set_, n_boot=n_boot, seed=seed, design=design)
    overall = overall_comparison(set_, design)
    figure = delta_plot(table)
    title = f"Comparison: {Path(run_a).name} (A) vs {Path(run_b).name} (B)"
    image = Image("comparison.png", png(figure),
                  "Producer's and user's accuracy change per crop, B - A, design-based, with intervals.")
    blocks = report_blocks(table, set_, runs, image=image, n_boot=n_boot, seed=seed, design=design, overall=overall)
    return Comparison(table, set_, Document(title, blocks), overall=overall)


def write_comparison(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: str | Path | None = None,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[Path, pd.DataFrame, EvaluationSet]:
    """Read two runs, compare them and write comparison.csv, comparison.png and comparison.md (atomically)."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_a, run_b)
    _check_out_dir(out, (Path(run_a), Path(run_b)))
    check_writable(out)
    result = compare_runs(run_a, run_b, n_boot=n_boot, seed=seed)
    image = next(b for b in result.report.blocks if isinstance(b, Image))
    with atomic_output_dir(out) as staged:
        write_csv(result.table, staged.path("comparison.csv"), decimals=4)
        staged.path("comparison.png").write_bytes(image.png)
        staged.path("comparison.md").write_text(result.report.markdown, encoding="utf-8")
    log.info("comparison in %s", out)
    return out, result.table, result.evaluation
