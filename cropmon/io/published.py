"""Outputs in object storage (`--out s3://bucket/prefix`, gs://, az://), with the local swap's guarantee: a reader
never sees a mix of two runs, and a failed run leaves the previous complete run readable.

Object storage has no rename, so no directory is swapped. Each run writes under its own prefix, and a small
pointer object, written last, names the complete run:

    PREFIX/runs/RUN_ID/...        one run's files (the same tree as a local output directory; run.json last)
    PREFIX/latest.json            {"run_id": ..., "url": "s3://bucket/PREFIX/runs/RUN_ID", "previous_run_id": ...}
    PREFIX/.cropmon-scratch/      the fields' GeoPackage copies (a format that cannot be read by feature id)

A PUT replaces an object whole, so a reader of `latest.json` gets the old pointer or the new one, and every file
under the run it names is complete and never rewritten. The workers upload their files straight to the run's
prefix (io/products.produce); the client writes only run.json (and --profile's report) from a local staging
directory when the run has succeeded, then the pointer. A failed run removes its prefix and never touches the
pointer. The run the pointer named before stays (a reader may be in the middle of it); older complete runs are
removed, as are incomplete ones (a run killed hard) that have not changed for STALE_RUN_S.

Two runs into one prefix at once both complete under their own prefixes and the pointer names the one that
finished last (object storage has no lock that a dead run frees; a local --out refuses the second run instead).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cropmon.errors import first_line
from cropmon.io import store

log = logging.getLogger(__name__)

RUNS = "runs"
POINTER = "latest.json"
STALE_RUN_S = 24 * 3600  # an incomplete run that has written nothing for this long is dead


def new_run_id() -> str:
    """Sortable by time: 20261202T193813Z-1a2b3c4d."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(4).hex()


def run_url(out: str, run_id: str) -> str:
    return store.object_url(out).join(RUNS, run_id).url


def pointer(out: str) -> dict[str, Any] | None:
    """The pointer object of an output prefix (which run is the current one), or None before the first run."""
    data = store.read_bytes(store.object_url(out).join(POINTER))
    try:
        return json.loads(data) if data else None
    except ValueError:  # not written by cropmon: the next pointer replaces it
        log.warning("%s is not a pointer cropmon wrote; it is replaced", store.object_url(out).join(POINTER).url)
        return None


@contextlib.contextmanager
def staged_run(
    out: str, run_id: str, *, deferred: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
) -> Iterator[Path]:
    """A local staging directory for the client's files of run `run_id` into `out`; on success they are uploaded
    under the run's prefix and the pointer is written (inside `deferred()`: signals wait until it is done); on
    failure (any exception, Ctrl-C, SIGTERM) the run's prefix is removed and the pointer left as it was."""
    staging = Path(tempfile.mkdtemp(prefix="cropmon-staging-"))
    target = store.object_url(run_url(out, run_id))
    try:
        yield staging
        with deferred():
            try:
                publish(out, run_id, staging)
            except OSError as exc:
                raise store.problem(target.url, exc, what="output location") from exc
    except BaseException:
        _remove_run(target)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(out: str, run_id: str, staging: Path) -> None:
    """Upload the client's files (run.json last, the top-level one after every AOI's), then the pointer, then
    remove the runs no reader needs any more."""
    target = store.object_url(run_url(out, run_id))
    files = sorted(
        (p for p in staging.rglob("*") if p.is_file() and ".parts" not in p.relative_to(staging).parts),
        key=lambda p: (p.name == "run.json", -len(p.relative_to(staging).parts), str(p)),
    )
    for path in files:
        store.upload(path, target.join(path.relative_to(staging).as_posix()))
    base = store.object_url(out)
    before = pointer(out)
    record = {
        "run_id": run_id,
        "url": target.url,
        "previous_run_id": (before or {}).get("run_id"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_bytes(base.join(POINTER), (json.dumps(record, indent=2) + "\n").encode())
    log.info("outputs in %s (%s names this run)", target.url, base.join(POINTER).url)
    try:
        _remove_old_runs(base, keep={run_id, record["previous_run_id"]})
    except OSError as exc:  # the run is published; an old run left behind is removed by the next one
        log.warning("could not remove old runs under %s: %s", base.join(RUNS).url, first_line(exc))


def _remove_old_runs(base: store.ObjectURL, *, keep: set[str | None]) -> None:
    runs: dict[str, list[tuple[str, int]]] = {}
    prefix = base.join(RUNS)
    for obj, _, mtime in store.list_objects(prefix):
        relative = obj.key[len(prefix.key) :].lstrip("/")
        run_id, _, rest = relative.partition("/")
        runs.setdefault(run_id, []).append((rest, mtime))
    now_ns = time.time_ns()
    for run_id, objects in sorted(runs.items()):
        if run_id in keep:
            continue
        complete = any(rest == "run.json" for rest, _ in objects)
        idle_s = (now_ns - max(m for _, m in objects)) / 1e9
        if complete or idle_s > STALE_RUN_S:
            n = store.delete_prefix(prefix.join(run_id))
            log.info("removed %s run %s (%d objects)", "an older" if complete else "an abandoned", run_id, n)
        else:
            log.info(
                "left run %s under %s: incomplete, changed %.0f s ago (another run in progress?)",
                run_id,
                prefix.url,
                idle_s,
            )


def _remove_run(target: store.ObjectURL) -> None:
    """Remove a failed run's objects (a worker task still uploading may leave some: the pointer never names them,
    and the next run removes them once stale)."""
    try:
        n = store.delete_prefix(target)
        if n:
            log.info("removed the %d objects of the failed run under %s", n, target.url)
    except Exception as exc:  # the previous run stays readable either way
        log.warning("could not remove the failed run under %s (%s); nothing points to it", target.url, first_line(exc))
