"""Peak memory of a process tree (a command and all its children), sampled while it runs.

Used by the benchmarks to measure "scheduler + workers + client together": the sum over the live processes of
their proportional set size (PSS: shared pages split between the processes sharing them), and of their RSS.
Read from /proc/PID/smaps_rollup, which the kernel sums for us: the sampler costs ~1 % of a core, so it does not
slow the run it measures (psutil's memory_full_info parses the whole smaps file and costs a large share of a core).

The benchmarks need the `bench` extra (psutil, exactextract): `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

try:
    import psutil
except ImportError as exc:  # the benchmarks' own dependencies are an extra, not the package's
    raise SystemExit('the benchmarks need the bench extra: pip install -e ".[bench]"') from exc


@dataclass
class TreePeak:
    pss_bytes: int = 0
    rss_bytes: int = 0
    processes: int = 0


def _rollup(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes of one process, 0 if it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return pss, rss


def _tree_memory(root: psutil.Process) -> tuple[int, int, int]:
    try:
        pids = [root.pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    sizes = [_rollup(pid) for pid in pids]
    return sum(p for p, _ in sizes), sum(r for _, r in sizes), sum(1 for p, _ in sizes if p)


def run_tracking_memory(
    cmd: list[str], *, interval: float = 0.1, **popen
) -> tuple[subprocess.CompletedProcess, TreePeak, float]:
    """Run `cmd`, sampling the memory of its process tree; return (result, peak, wall seconds)."""
    peak = TreePeak()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    root = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss, rss, n = _tree_memory(root)
            if pss > peak.pss_bytes:
                peak.pss_bytes, peak.processes = pss, n
            peak.rss_bytes = max(peak.rss_bytes, rss)
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None), peak, wall
