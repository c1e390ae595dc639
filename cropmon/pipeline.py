"""run(config): the whole job, orchestrated. Inputs -> cluster -> engine -> tail (outputs, diagnosis, report) ->
run.json, with the outputs swapped in atomically.

Orchestration only: the engine puts one AOI's per-field table on the cluster (engine/job.submit_fields), the
tail puts everything after it there too (tail.submit_tail: files, diagnosis, pictures, report), the manifest module
builds run.json, io swaps the outputs in. The client submits, waits, and writes run.json; it holds nothing per
field, so its memory does not grow with the fields or the AOIs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropmon import errors, manifest, tail
from cropmon.cluster import connect, resolve_scheduler
from cropmon.config import OutputsVia, RunConfig, aoi_parts
from cropmon.engine.job import FieldInputs, FieldJob, field_inputs, submit_fields
from cropmon.engine.mapped import aoi_mask
from cropmon.engine.zonal import warm_up
from cropmon.io import outputs, products, store
from cropmon.io.raster import inspect_raster
from cropmon.io.vector import inspect_fields, label_column_to_read
from cropmon.progress import StageTimer, twin_progress
from cropmon.tail import Tail, collect_tail, receive, submit_pooled, submit_tail
from cropmon.tasks import ClusterHandle, performance_report, place_profile, profile_scratch

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What a run did: where its outputs are and its manifest (run.json). The per-field table stays on the cluster
    and in the outputs (fields.parquet); `cropmon.analyse` brings one back to the caller."""

    out_dir: Path | str  # outputs in a bucket: the run's own prefix (s3://bucket/prefix/runs/RUN_ID)
    manifest: dict[str, Any]

    @property
    def paths(self) -> dict[str, Path | str]:
        """Every file written, by name (a multi-AOI run: the pooled files; each AOI's are under its folder)."""
        names = self.manifest.get("outputs") or [*self.manifest.get("pooled_outputs", []), "run.json"]
        if isinstance(self.out_dir, str):
            return {name: f"{self.out_dir}/{name}" for name in names}
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


@dataclass
class AOIStart:
    """One AOI as the client has it before the cluster works on it."""

    name: str | None  # None: a single-AOI run
    inputs: FieldInputs
    timer: StageTimer
    started: float  # time.time() when its work began
    is_twin: bool = False
    paths: list = dataclasses.field(default_factory=list)  # its inputs and outputs (run.json's object_storage)


@dataclass
class AOIRun:
    """One AOI on its way through a run."""

    name: str | None
    out_dir: Path  # its directory in the staging directory
    destination: products.Destination
    header: dict[str, Any]
    job: FieldJob
    tail: Tail
    timer: StageTimer
    started: float


def run(config: RunConfig) -> RunOutcome:
    """The whole job: inputs -> per-field table on the cluster -> its tail on the cluster -> outputs swapped in.

    With `config.aois`, every AOI is analysed on the same cluster into `<out>/<aoi>/`, followed by the pooled view
    across AOIs in `<out>/`.
    """
    named = [config.raster, config.fields, config.out, config.scratch_dir,
             *(p for aoi in config.aois for p in aoi_parts(aoi)[1:])]
    config = dataclasses.replace(config, gdal=store.defaults_for(named).merged(config.gdal))
    with config.gdal.applied():  # GDAL and the file systems of this process read the storage settings there
        return run_many(config) if config.aois else _run_one(config)


def _run_one(config: RunConfig) -> RunOutcome:
    started = time.time()
    progress = want_progress(config)
    timer = StageTimer(show=progress)
    with timer.stage("inputs", has_own_bar=True):
        raster, fields, is_twin = resolve_inputs(config, progress=progress)
        out_dir = default_out_dir(config, raster, twin=is_twin)
        _inspect_inputs(raster, fields, config, mask=config.aoi_mask)
        outputs.check_writable(out_dir)
        _check_scratch(config, out_dir)
    profile = profile_scratch(config.profile)
    # The output directory's lock is taken first (a second run into it is refused before any work), and the
    # cluster closes before the staging directory is swapped in or removed (no worker still writes into it).
    with outputs.atomic_output_dir(out_dir) as staged, _cluster_starting(config, timer) as started_cluster:
        inputs = _field_inputs(raster, fields, config, timer, out_dir=out_dir,
                               mask=config.aoi_mask)  # while the cluster starts
        handle = started_cluster()
        with performance_report(handle, profile):
            start = AOIStart(None, inputs, timer, started, is_twin=is_twin, paths=[raster, fields, out_dir])
            aoi = _submit_aoi(handle, start, config, staged)
            run_json = _finish_aoi(handle, aoi, progress=progress)
        place_profile(config.profile, profile, out_dir, staged.staging)
        products.remove_parts(staged.staging)
    log.info("outputs in %s (%.1f s)", staged.remote or out_dir, run_json["timings_s"]["total"])
    return RunOutcome(out_dir=staged.remote or Path(out_dir), manifest=run_json)


def run_many(config: RunConfig) -> RunOutcome:
    """Several AOIs on one cluster: per-AOI outputs, then the pooled view (metrics by crop x AOI, label allocation).

    Up to `aois_in_flight` AOIs are on the cluster at once (two on a small one), so one AOI's tail runs beside the
    next one's compute; a new AOI is submitted when the oldest is finished, and only each AOI's compact summary
    outlives its tail.
    """
    started = time.time()
    progress = want_progress(config)
    out_dir = _out_location(config.out) if config.out else Path("outputs") / "aois"
    for name, raster, fields, mask in map(aoi_parts, config.aois):
        try:
            _inspect_inputs(raster, fields, config, mask=mask)
        except errors.InputError as exc:
            raise type(exc)(f"AOI {name}: {exc.problem}", path=exc.path, fix=exc.fix) from exc
    outputs.check_writable(out_dir)
    _check_scratch(config, out_dir)
    profile = profile_scratch(config.profile)
    aois: dict[str, dict[str, Any]] = {}
    summaries: dict[str, Any] = {}
    with outputs.atomic_output_dir(out_dir) as staged, _cluster(config) as handle:
        with performance_report(handle, profile):
            in_flight: deque[AOIRun] = deque()
            window = aois_in_flight(handle.n_workers())
            for name, raster, fields, mask in map(aoi_parts, config.aois):
                log.info("AOI %s: %s + %s%s", name, raster, fields, f" (mask {mask})" if mask else "")
                timer = StageTimer(show=progress)
                inputs = _field_inputs(raster, fields, config, timer, out_dir=out_dir, mask=mask)
                start = AOIStart(name, inputs, timer, time.time(), paths=[raster, fields, out_dir])
                aoi = _submit_aoi(handle, start, config, staged, summarise=True)
                in_flight.append(aoi)
                while len(in_flight) > window:  # the oldest AOI's tail runs beside the newer AOIs' computes
                    done = in_flight.popleft()
                    _finish_many(handle, done, aois, summaries, progress)
            while in_flight:
                done = in_flight.popleft()
                _finish_many(handle, done, aois, summaries, progress)
            destination = _destination(handle, staged, staged.staging, outputs_via=config.outputs_via)
            pooled = submit_pooled(handle, summaries, settings=config.diagnosis, seed=config.seed,
                                   destination=destination)
            handle.wait([pooled])
            with handle.failures():
                written = receive(handle, pooled, staged.staging, destination)
        place_profile(config.profile, profile, out_dir, staged.staging)
        run_json = manifest.many_aois(started=started, aois=aois, settings=config.as_manifest(),
                                      cluster=handle.describe(), pooled_outputs=list(written))
        run_json.update(_storage_manifest(staged, [p for aoi in config.aois for p in aoi_parts(aoi)[1:3]]
                                          + [out_dir]))
        outputs.write_json(staged.path("run.json"), run_json)
        products.remove_parts(staged.staging)
    log.info("outputs of %d AOIs in %s (%.1f s)", len(config.aois), staged.remote or out_dir,
             run_json["timings_s"]["total"])
    return RunOutcome(out_dir=staged.remote or out_dir, manifest=run_json)


def _out_location(out: str) -> Path | str:
    """--out as a local directory, or an object-storage URL (s3://bucket/prefix) kept as text."""
    return store.url_of(out) if store.is_object_store(out) else Path(out)


def _check_scratch(config: RunConfig, out_dir: Path | str) -> None:
    """A --scratch-dir in a bucket is checked like an --out in one: credentials, bucket, a probe written (the
    default one, under an --out in a bucket, was checked with it)."""
    if config.scratch_dir and store.is_object_store(config.scratch_dir):
        outputs.check_writable(scratch_dir_for(config, out_dir))


def _storage_manifest(staged: outputs.StagedOutput, paths: list) -> dict[str, Any]:
    """run.json's `output` (a run into a bucket: its id, prefix and pointer) and `object_storage` (endpoints and
    where the credentials came from, never their values), when they apply."""
    out: dict[str, Any] = {}
    if staged.remote is not None:
        out["output"] = staged.as_manifest()
    used = store.describe([str(p) for p in paths])
    if used:
        out["object_storage"] = used
    return out


def aois_in_flight(n_workers: int) -> int:
    """How many AOIs may be on the cluster at once: two on a small cluster (one's tail beside the next one's
    compute), more on a large one, whose workers one AOI's few dozen chunk tasks cannot keep busy."""
    return max(2, n_workers // 8)


def _finish_many(handle: ClusterHandle, aoi: AOIRun, aois: dict[str, Any], summaries: dict[str, Any],
                 progress: bool) -> None:
    """Wait for one AOI of a multi-AOI run; its summary and its line of the pooled run.json are filled in."""
    if aoi.name is None:
        raise RuntimeError("an AOI of a multi-AOI run has no name")
    summaries[aoi.name] = aoi.tail.summary
    run_json = _finish_aoi(handle, aoi, progress=progress)
    aois[aoi.name] = {"raster": run_json["inputs"]["raster"]["path"], "fields": run_json["inputs"]["fields"]["path"],
            "n_fields": run_json["fields"]["n_input"], "timings_s": run_json["timings_s"]}


def _field_inputs(raster: str, fields: str, config: RunConfig, timer: StageTimer, *, out_dir: str | Path,
                  mask: str | None = None) -> FieldInputs:
    settings = dataclasses.replace(config.engine_settings, scratch_dir=scratch_dir_for(config, out_dir),
                                   aoi_mask=mask)
    return field_inputs(raster, fields, settings, timer=timer)


SCRATCH_NAME = f"{outputs.RESERVED_PREFIX}scratch"


def scratch_dir_for(config: RunConfig, out_dir: Path | str) -> Path | str:
    """--scratch-dir, else `.cropmon-scratch` beside the output directory: on a cluster the outputs' storage is
    often the one every worker mounts (docker-compose.yml mounts /outputs on the workers), the input's may be
    read-only. Inside it when its contents are swapped in place (a mount point: beside it is another disk, or
    none that is writable); the swap leaves it alone. Outputs in a bucket: `OUT/.cropmon-scratch` in it, which
    every worker reaches (a --scratch-dir may be a bucket too)."""
    if config.scratch_dir:
        return store.url_of(config.scratch_dir) if store.is_object_store(config.scratch_dir) \
            else Path(config.scratch_dir)
    if store.is_object_store(out_dir):
        return store.object_url(out_dir).join(SCRATCH_NAME).url
    out = Path(out_dir).resolve()
    return out / SCRATCH_NAME if outputs.swaps_in_place(out) else out.parent / SCRATCH_NAME


def _submit_aoi(handle: ClusterHandle, start: AOIStart, config: RunConfig, staged: outputs.StagedOutput, *,
                summarise: bool = False) -> AOIRun:
    """Put one AOI's engine and tail on the cluster; returns once both are submitted."""
    name, timer = start.name, start.timer
    out_dir = staged.staging / name if name else staged.staging
    out_dir.mkdir(exist_ok=True)
    destination = _destination(handle, staged, out_dir, outputs_via=config.outputs_via)
    places = handle.places(3)  # the table's worker, and two others for its files
    with handle.scoped(name):
        job = submit_fields(handle, start.inputs, timer=timer, home=places[0] if places else None)
        header = manifest.run_header(job, start.inputs, settings=config.as_manifest(), is_twin=start.is_twin,
                                     started=start.started)
        header.update(_storage_manifest(staged, start.paths))
        tail = submit_tail(handle, job, settings=config.diagnosis, seed=config.seed, destination=destination,
                           header={**header, "timings_s": dict(timer.seconds)}, summarise=summarise,
                           places=places)
    return AOIRun(name=name, out_dir=out_dir, destination=destination, header=header, job=job, tail=tail,
                  timer=timer, started=start.started)


def _finish_aoi(handle: ClusterHandle, aoi: AOIRun, *, progress: bool) -> dict[str, Any]:
    """Wait for one AOI's compute and tail, then write its run.json; returns the manifest."""
    aoi.job.wait(handle, progress=progress)  # timings["compute"]: from submitting the graph to the table's being ready
    with aoi.timer.stage("tail"), handle.failures(), handle.scoped(aoi.name):
        counts = collect_tail(handle, aoi.tail, aoi.out_dir, aoi.destination)
    last_output = time.perf_counter()
    manifest.log_field_counts(counts)
    timings = {**aoi.timer.seconds,
               "first summary to last output": round(last_output - (aoi.job.first_summary or last_output), 3),
               "total": round(time.time() - aoi.started, 3)}
    run_json = {
        **aoi.header,
        "cluster": handle.describe(aoi.name),
        "fields": counts,
        **aoi.tail.manifest,
        "timings_s": timings,
        "outputs": sorted([*aoi.tail.files, "run.json"]),
    }
    outputs.write_json(aoi.out_dir / "run.json", run_json)
    products.remove_parts(aoi.out_dir)
    aoi.job.results = None  # the per-field table leaves the cluster once its tail is done
    aoi.tail.products.clear()
    return run_json


def _destination(handle: ClusterHandle, staged: outputs.StagedOutput, staging: Path, *,
                 outputs_via: OutputsVia) -> products.Destination:
    """Into the bucket when the outputs go to one (the workers upload), else shared when the workers see the
    staging directory (tested by a probe file on a remote cluster), else through the client."""
    products.prepare_parts(staging)
    if staged.remote is not None:
        return products.Destination(shared=None, store=staged.remote_of(staging))
    if outputs_via == "client":
        return products.Destination(shared=None)
    if outputs_via == "shared" or handle.kind in ("threads", "local"):
        return products.Destination(shared=str(staging))
    probe = staging / products.PARTS / "probe"
    probe.write_text("cropmon\n")
    seen = handle.workers_see(probe)
    probe.unlink()
    if not seen:
        log.info("the workers do not see %s: the client writes the outputs they send", staging)
    return products.Destination(shared=str(staging) if seen else None)


def resolve_inputs(config: RunConfig, *, progress: bool) -> tuple[str, str, bool]:
    """The raster and fields to analyse: the given ones, or the digital twin (made once, then reused)."""
    if config.raster and config.fields:
        return config.raster, config.fields, False
    from cropmon import twin

    paths = twin.ensure_twin(scale=config.twin_scale, progress=twin_progress() if progress else None)
    return str(paths.raster), str(paths.fields), True


def default_out_dir(config: RunConfig, raster: str, *, twin: bool) -> Path | str:
    if config.out:
        return _out_location(config.out)
    return Path("outputs") / ("twin" if twin else Path(raster).stem)


def want_progress(config: RunConfig) -> bool:
    """Progress bars: on, off, or (auto) when stderr is a terminal."""
    return config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())


def _inspect_inputs(raster: str, fields: str, config: RunConfig, *, mask: str | None = None) -> None:
    """Fail before any work on a bad raster or fields header, or an AOI mask that cannot be used on the raster."""
    info = inspect_raster(raster, class_band=config.class_band, confidence_band=config.confidence_band)
    header = inspect_fields(fields, layer=config.layer, label_column=None)
    label_column_to_read(header, config.label_column, no_labels=config.no_labels, catalogue=config.catalogue(),
                         warn=False)  # field_inputs warns
    if mask:
        from affine import Affine

        aoi_mask(mask, raster_crs=info.crs, transform=Affine(*info.transform), height=info.height, width=info.width)


@contextlib.contextmanager
def _cluster(config: RunConfig, timer: StageTimer | None = None) -> Iterator[ClusterHandle]:
    with contextlib.ExitStack() as stack:
        with (timer or StageTimer()).stage("start cluster"):
            handle = stack.enter_context(connect(config.cluster_settings, warm_up=(warm_up, tail.warm_up)))
        if handle.dashboard_link:
            print(f"Dask dashboard: {handle.dashboard_link}", file=sys.stderr)
        yield handle


@contextlib.contextmanager
def _cluster_starting(config: RunConfig, timer: StageTimer) -> Iterator[Callable[[], ClusterHandle]]:
    """Start a local cluster in a thread while the caller reads the inputs' headers (its worker processes take a
    second or two to start); yields a function that waits for it. The cluster lives and closes in that thread (a
    Client is entered and left in one context); a remote scheduler is simply connected to."""
    if config.cluster is not None or resolve_scheduler(config.scheduler) not in ("local", "threads"):
        with _cluster(config, timer) as handle:
            yield lambda: handle
        return
    own_timer = StageTimer()  # no ticking line from a second thread
    ready: concurrent.futures.Future = concurrent.futures.Future()
    done = threading.Event()

    def hold() -> None:
        try:
            with _cluster(config, own_timer) as handle:
                ready.set_result(handle)
                done.wait()
        except BaseException as exc:  # handed to the caller: a failed start is its error
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("closing the cluster failed: %s", exc)

    thread = threading.Thread(target=hold, name="cropmon-cluster", daemon=True)
    thread.start()

    def started() -> ClusterHandle:
        handle = ready.result()
        timer.seconds.update(own_timer.seconds)
        return handle

    try:
        yield started
    finally:
        done.set()
        thread.join()
