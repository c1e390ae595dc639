"""Peak memory of a process tree (a command and all its children), sampled while it runs.

Used by the benchmarks to measure "scheduler + workers + client together": the sum over the live processes of
their proportional set size (PSS: shared pages split between the processes sharing them), and of their RSS.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class TreePeak:
    pss_bytes: int = 0
    rss_bytes: int = 0
    processes: int = 0


def _tree_memory(root: psutil.Process) -> tuple[int, int, int]:
    pss = rss = n = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
        n += 1
    return pss, rss, n


def run_tracking_memory(
    cmd: list[str], *, interval: float = 0.05, **popen
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
