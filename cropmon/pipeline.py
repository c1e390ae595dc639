"""run(config): the whole job, orchestrated. Inputs -> cluster -> engine -> outputs (atomically) -> run.json.

Orchestration only: the engine builds and computes the per-field table (engine/analyse.py), the report writes the
diagnosis (report/single.py, report/pooled.py), the manifest module builds run.json, io writes the files.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropmon import errors, manifest
from cropmon.analysis.pooled import summarise_aoi
from cropmon.cluster import ClusterHandle, TLSFiles, connect, performance_report, place_profile, profile_scratch
from cropmon.config import RunConfig
from cropmon.engine.analyse import FieldResults, analyse_fields
from cropmon.engine.zonal import warm_up
from cropmon.io import outputs
from cropmon.io.raster import inspect_raster
from cropmon.io.vector import inspect_fields
from cropmon.progress import StageTimer, twin_progress
from cropmon.report.map_window import map_window
from cropmon.report.pooled import write_pooled
from cropmon.report.single import write_diagnosis

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What a run did: where its outputs are, its manifest (run.json) and, for one AOI, the per-field results."""

    out_dir: Path
    manifest: dict[str, Any]
    results: FieldResults | None  # None for a multi-AOI run (only summaries are kept)

    @property
    def paths(self) -> dict[str, Path]:
        """Every file written, by name (a multi-AOI run: the pooled files; each AOI's are under its folder)."""
        names = self.manifest.get("outputs") or [*self.manifest.get("pooled_outputs", []), "run.json"]
        return {name: self.out_dir / name for name in names}

    @property
    def counts(self) -> dict[str, Any]:
        """Fields read, with pixels, scored, and why not (run.json `fields`; per AOI for a multi-AOI run)."""
        if "aois" in self.manifest:
            return {name: {"n_input": aoi["n_fields"]} for name, aoi in self.manifest["aois"].items()}
        return self.manifest["fields"]

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage and in total (run.json `timings_s`)."""
        return self.manifest["timings_s"]


def run(config: RunConfig) -> RunOutcome:
    """The whole job: inputs -> per-field table on the cluster -> outputs written atomically -> manifest.

    With `config.aois`, every AOI is analysed on the same cluster, one graph after another, into
    `<out>/<aoi>/`, followed by the pooled view across AOIs in `<out>/`.
    """
    if config.aois:
        return run_many(config)
    started = time.time()
    progress = want_progress(config)
    timer = StageTimer(show=progress)
    with timer.stage("inputs", has_own_bar=True):
        raster, fields, is_twin = resolve_inputs(config, progress=progress)
        out_dir = default_out_dir(config, raster, twin=is_twin)
        outputs.check_writable(out_dir)
        _inspect_inputs(raster, fields, config)
    profile = profile_scratch(config.profile)
    with _cluster(config) as handle:
        results = _analyse(raster, fields, config, handle, progress=progress, profile=profile)
        cluster_info = handle.describe()
    with outputs.atomic_output_dir(out_dir) as staged:
        place_profile(config.profile, profile, out_dir, staged.staging)
        run_json = write_run_outputs(
            results, config, staged.staging, cluster_info=cluster_info, is_twin=is_twin, started=started, timer=timer
        )
    log.info("outputs in %s (%.1f s)", out_dir, run_json["timings_s"]["total"])
    return RunOutcome(out_dir=Path(out_dir), manifest=run_json, results=results)


def run_many(config: RunConfig) -> RunOutcome:
    """Several AOIs on one cluster: per-AOI outputs, then the pooled view (metrics by crop x AOI, label allocation).

    Only each AOI's compact summary outlives its own analysis, so memory does not grow with the number of AOIs.
    """
    started = time.time()
    progress = want_progress(config)
    out_dir = Path(config.out) if config.out else Path("outputs") / "aois"
    outputs.check_writable(out_dir)
    for name, raster, fields in config.aois:
        try:
            _inspect_inputs(raster, fields, config)
        except errors.InputError as exc:
            raise type(exc)(f"AOI {name}: {exc.problem}", path=exc.path, fix=exc.fix) from exc
    settings = config.diagnosis
    summaries: dict[str, Any] = {}
    aois: dict[str, dict[str, Any]] = {}
    with outputs.atomic_output_dir(out_dir) as staged, _cluster(config) as handle:
        for name, raster, fields in config.aois:
            timer = StageTimer(show=progress)
            aoi_started = time.time()
            log.info("AOI %s: %s + %s", name, raster, fields)
            profile = profile_scratch(config.profile)
            results = _analyse(raster, fields, config, handle, progress=progress, profile=profile)
            place_profile(config.profile, profile, out_dir, staged.staging)  # the last AOI's report is kept
            aoi_dir = staged.staging / name
            aoi_dir.mkdir()
            aoi_json = write_run_outputs(
                results, config, aoi_dir, cluster_info=handle.describe(), is_twin=False, started=aoi_started,
                timer=timer,
            )
            aois[name] = {"raster": raster, "fields": fields, "n_fields": aoi_json["fields"]["n_input"],
                          "timings_s": aoi_json["timings_s"]}
            summaries[name] = summarise_aoi(results.table, results.class_counts, settings=settings, seed=config.seed,
                                            catalogue=results.catalogue)
            del results  # only the compact summary outlives the AOI
        written = write_pooled(summaries, staged.staging, settings=settings, seed=config.seed)
        run_json = manifest.many_aois(started=started, aois=aois, settings=config.as_manifest(),
                                      cluster=handle.describe(), pooled_outputs=written)
        outputs.write_json(staged.path("run.json"), run_json)
    log.info("outputs of %d AOIs in %s (%.1f s)", len(config.aois), out_dir, run_json["timings_s"]["total"])
    return RunOutcome(out_dir=out_dir, manifest=run_json, results=None)


def write_run_outputs(
    results: FieldResults,
    config: RunConfig,
    out_dir: Path,
    *,
    cluster_info: dict[str, Any],
    is_twin: bool,
    started: float,
    timer: StageTimer,
) -> dict[str, Any]:
    """Every output of one AOI into `out_dir` (a staging directory), run.json last; returns the manifest."""
    timer.seconds.update(results.timings)
    run_json = manifest.run_header(results, settings=config.as_manifest(), cluster=cluster_info, is_twin=is_twin,
                                   started=started, timings=timer.seconds)
    staged = outputs.StagedOutput(final=out_dir, staging=out_dir)
    with timer.stage("write outputs"):
        outputs.write_field_outputs(results.table, results.class_counts, results.source, results.fids, staged)
    with timer.stage("diagnosis and report"):
        written = write_diagnosis(
            results.table, results.class_counts, out_dir, settings=config.diagnosis, run_info=run_json,
            map_window=map_window(results), seed=config.seed, geometries=results.geometries,
            catalogue=results.catalogue,
        )
        staged.written.extend(sorted(written))
    run_json["timings_s"] = {**timer.seconds, "total": round(time.time() - started, 3)}
    run_json["outputs"] = sorted([*staged.written, "run.json"])
    outputs.write_json(staged.path("run.json"), run_json)
    return run_json


def resolve_inputs(config: RunConfig, *, progress: bool) -> tuple[str, str, bool]:
    """The raster and fields to analyse: the given ones, or the digital twin (made once, then reused)."""
    if config.raster and config.fields:
        return config.raster, config.fields, False
    from cropmon import twin

    paths = twin.ensure_twin(scale=config.twin_scale, progress=twin_progress() if progress else None)
    return str(paths.raster), str(paths.fields), True


def default_out_dir(config: RunConfig, raster: str, *, twin: bool) -> Path:
    if config.out:
        return Path(config.out)
    return Path("outputs") / ("twin" if twin else Path(raster).stem)


def want_progress(config: RunConfig) -> bool:
    """Progress bars: on, off, or (auto) when stderr is a terminal."""
    return config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())


def _inspect_inputs(raster: str, fields: str, config: RunConfig) -> None:
    """Fail before any work on a bad raster or fields header."""
    inspect_raster(raster, class_band=config.class_band, confidence_band=config.confidence_band)
    inspect_fields(fields, layer=config.layer, label_column=config.label_column)


@contextlib.contextmanager
def _cluster(config: RunConfig) -> Iterator[ClusterHandle]:
    with connect(
        config.scheduler,
        workers=config.workers,
        threads_per_worker=config.threads_per_worker,
        memory_limit=config.memory_limit,
        dashboard_address=config.dashboard_address,
        tls=TLSFiles(config.tls_ca_file, config.tls_cert, config.tls_key),
        warm_up=warm_up,
    ) as handle:
        if handle.dashboard_link:
            print(f"Dask dashboard: {handle.dashboard_link}", file=sys.stderr)
        yield handle


def _analyse(
    raster: str, fields: str, config: RunConfig, handle: ClusterHandle, *, progress: bool, profile: Path | None = None
) -> FieldResults:
    with performance_report(handle, profile):
        return analyse_fields(
            raster,
            fields,
            cluster=handle,
            chunk_rows=config.chunk_rows,
            layer=config.layer,
            label_column=config.label_column,
            class_band=config.class_band,
            confidence_band=config.confidence_band,
            progress=progress,
            no_worker_timeout=config.no_worker_timeout,
            catalogue=config.catalogue(),
        )
