"""Command line: argv -> RunConfig -> pipeline. The only place that touches argv, logging setup and exit codes.

Exit codes: 0 success, 1 internal error (a bug: traceback logged), 2 bad input or settings (one line with the
fix), 3 the Dask cluster failed (unreachable, lost its scheduler or all its workers), 4 a disk is full, 5 another
run is writing into the same --out, 130 interrupted (SIGINT), 143 terminated (SIGTERM). In every case but 0 the
previous outputs are left as they were.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence

from cropmon import __version__, errors
from cropmon.config import FLAG_SETTINGS, SETTINGS, flag_name, positive_fraction, scalar_type

log = logging.getLogger("cropmon")

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_CLUSTER, EXIT_DISK_FULL, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM  # 130, 143: the shells' convention


def _quality(text: str) -> float | dict[str, float]:
    """'1.5' -> 1.5; 'Spring Barley=0.8,Flax=0.9' -> {'Spring Barley': 0.8, 'Flax': 0.9}."""
    if "=" not in text:
        return positive_fraction(text)
    out = {}
    for part in text.split(","):
        crop, _, value = part.partition("=")
        try:
            out[crop.strip()] = float(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{part!r} is not CROP=AGREEMENT") from exc
    return out


def _add_setting_flags(run: argparse.ArgumentParser) -> None:
    """One flag per RunConfig setting that declares one (config.setting), in its group; unset flags stay None so
    that they do not override the config file or the environment."""
    groups = {
        "inputs": run.add_argument_group("inputs (default: the digital twin of the u0c AOI, made once)"),
        "cluster": run.add_argument_group("cluster"),
        "run": run,
    }
    for name in FLAG_SETTINGS:
        meta = SETTINGS[name].metadata
        default = SETTINGS[name].default
        shown = f" (default {default})" if default not in (None, (), "") else ""
        options: dict = {"dest": name, "help": meta["help"] + shown}
        if name == "aois":
            options.update(action="append", metavar=meta["metavar"])
        elif scalar_type(name) is bool:
            options.update(action="store_true", default=None)  # None: the file or environment decides
            options["help"] = meta["help"]
        else:
            options.update(type=meta["parse"] or scalar_type(name))
            if meta["choices"]:
                options["choices"] = meta["choices"]
            if meta["metavar"]:
                options["metavar"] = meta["metavar"]
        groups[meta["group"]].add_argument(flag_name(name), **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cropmon",
        description="Per-crop agreement of a crop-type model raster with ground-truth fields, on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"cropmon {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="analyse a prediction raster against ground-truth fields")
    run.add_argument("--config", help="TOML file of settings (flags and CROPMON_* variables override it)")
    _add_setting_flags(run)

    twin = commands.add_parser("twin", help="write the digital twin of the real u0c AOI")
    twin.add_argument("--out", required=True, help="directory for predictions.tif and fields.gpkg")
    twin.add_argument("--scale", type=positive_fraction, default=1.0, help="1 = the whole u0c cell; 1/16 for tests")
    twin.add_argument("--seed", type=int, default=0)
    twin.add_argument("--compress", choices=["none", "deflate", "lzw"], default="none")
    twin.add_argument(
        "--quality",
        type=_quality,
        help="the model's quality: a factor on every crop's error share (2 = a harder AOI, 0.5 = an easier one) "
        "or CROP=AGREEMENT[,CROP=AGREEMENT...] to set chosen crops (default: calibrated to u0c)",
    )

    compare = commands.add_parser("compare", help="compare two runs per crop on run A's held-back evaluation fields")
    compare.add_argument("run_a", metavar="RUN_A", help="output directory of the current model's run")
    compare.add_argument("run_b", metavar="RUN_B", help="output directory of the next model's run (same fields)")
    compare.add_argument("--out", help="output directory (default outputs/compare/<A>_vs_<B>/)")
    compare.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("cropmon")
    root.handlers[:] = [handler]
    root.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    from cropmon import api

    flags = {name: getattr(args, name) for name in FLAG_SETTINGS}
    outcome = api.run(config=args.config, **flags)
    total = outcome.timings["total"]
    if "aois" in outcome.manifest:
        print(f"cropmon: {len(outcome.manifest['aois'])} AOIs, {total:.1f} s -> {outcome.out_dir}")
    elif outcome.manifest["fields"].get("n_labelled", 1) == 0:
        counts, plan = outcome.manifest["fields"], outcome.manifest.get("unlabelled_plan") or {}
        print(f"cropmon: {counts['n_input']} fields without ground truth, {counts['n_with_pixels']} ranked by"
              f" uncertainty, {plan.get('n_picked', 0)} to label, {total:.1f} s -> {outcome.out_dir}")
    else:
        counts = outcome.manifest["fields"]
        print(f"cropmon: {counts['n_input']} fields, {counts['n_scored']} scored, {total:.1f} s -> {outcome.out_dir}")
    return EXIT_OK


def _twin(args: argparse.Namespace) -> int:
    from cropmon import twin

    paths = twin.make_twin(args.out, scale=args.scale, seed=args.seed, compress=args.compress, quality=args.quality)
    print(f"cropmon twin: {paths.raster} and {paths.fields}")
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from cropmon.report.compare import write_comparison

    out, table, chosen = write_comparison(
        args.run_a, args.run_b, args.out, n_boot=args.bootstrap, seed=args.seed
    )
    better, worse = (", ".join(table.loc[table["verdict"] == v, "crop"]) or "none" for v in ("better", "worse"))
    print(f"cropmon compare: {chosen.source} ({len(chosen.a):,} fields); better: {better}; worse: {worse} -> {out}")
    return EXIT_OK


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (docker stop, Kubernetes, systemd) raises errors.Terminated, a KeyboardInterrupt, in the main thread:
    the run stops as on Ctrl-C (staging removed, a local cluster's workers stopped, the previous outputs kept).
    A second SIGTERM while that clean-up runs is ignored (the sender's SIGKILL follows if it will not wait).
    Python's default handler is back after the block. Only the main thread can set handlers; elsewhere a no-op."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, lambda *_: log.warning("SIGTERM again: already stopping"))
        raise errors.Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Off a terminal a run logs its stages; on a terminal, progress bars show them (-v adds the log lines).
    configure_logging(args.verbose + (1 if args.command == "run" and not sys.stderr.isatty() else 0))
    from cropmon.runtime import return_freed_memory

    return_freed_memory()
    try:
        with sigterm_interrupts():
            return {"run": _run, "twin": _twin, "compare": _compare}[args.command](args)
    except errors.InputError as exc:
        print(f"cropmon: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except errors.ClusterError as exc:
        print(f"cropmon: cluster error: {exc}", file=sys.stderr)
        return EXIT_CLUSTER
    except errors.OutputBusy as exc:
        print(f"cropmon: busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except errors.Terminated:
        print("cropmon: terminated (SIGTERM); previous outputs left as they were", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("cropmon: interrupted; previous outputs left as they were", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if errors.is_disk_full(exc):
            print(f"cropmon: disk full: {_disk_full(exc)}", file=sys.stderr)
            return EXIT_DISK_FULL
        log.exception("internal error (a bug in cropmon: please report it with this traceback)")
        return EXIT_INTERNAL


def _disk_full(exc: BaseException) -> str:
    """The one line of a full disk: the DiskFull in the chain, else the OS's words with the file and its device
    (a scratch copy, the twin's cache ... anything written outside the outputs' staging)."""
    chain = errors.chain(exc)
    for item in chain:
        if isinstance(item, errors.DiskFull):
            return str(item)
    from cropmon.io.paths import filesystem_of

    path = next((item.filename for item in chain if isinstance(item, OSError) and item.filename), None)
    if path is None:
        return f"{errors.first_line(chain[0])}. Fix: free space on that disk, or write elsewhere"
    fs = filesystem_of(path)
    return str(errors.DiskFull(path, device=fs.device, mount=fs.mount, free=fs.free, total=fs.total))
