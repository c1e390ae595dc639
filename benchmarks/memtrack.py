"""Peak memory and CPU seconds of a process tree (a command and all its children), sampled while it runs.

Used by the benchmarks to measure "scheduler + workers + client together": the sum over the live processes of
their proportional set size (PSS: shared pages split between the processes sharing them), and of their RSS.
Read from /proc/PID/smaps_rollup, which the kernel sums for us: the sampler costs ~1 % of a core, so it does not
slow the run it measures (psutil's memory_full_info parses the whole smaps file and costs a large share of a core).

The benchmarks need the `bench` extra (psutil, exactextract): `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field

try:
    import psutil
except ImportError as exc:  # the benchmarks' own dependencies are an extra, not the package's
    raise SystemExit('the benchmarks need the bench extra: pip install -e ".[bench]"') from exc


@dataclass
class TreePeak:
    pss_bytes: int = 0
    rss_bytes: int = 0
    processes: int = 0
    root_pid: int = 0
    cpu_s: dict[int, float] = field(default_factory=dict)  # pid -> user + system CPU seconds, last seen
    names: dict[int, str] = field(default_factory=dict)  # pid -> what it is (its command line, short)
    peak_pss_by_pid: dict[int, int] = field(default_factory=dict)
    total_cpu_s: float = 0.0  # the whole tree, exact (getrusage of the reaped tree)

    @property
    def client_cpu_s(self) -> float:
        """The root's own CPU seconds: the exact total less its children's samples (which may miss the last
        sampling interval of each child: this errs towards a larger client share)."""
        return max(self.total_cpu_s - self.children_cpu_s, self.root_cpu_s)

    @property
    def root_cpu_s(self) -> float:
        return self.cpu_s.get(self.root_pid, 0.0)

    @property
    def children_cpu_s(self) -> float:
        return sum(v for pid, v in self.cpu_s.items() if pid != self.root_pid)


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


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _sample_cpu(processes: list[psutil.Process], peak: TreePeak) -> None:
    """Each live process's CPU seconds so far (a process's last sample before it exits is what counts: up to one
    sampling interval of its CPU time can be missed)."""
    for proc in processes:
        try:
            times = proc.cpu_times()
            peak.cpu_s[proc.pid] = times.user + times.system
            if proc.pid not in peak.names:
                peak.names[proc.pid] = " ".join(proc.cmdline())[:120]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def run_tracking_memory(
    cmd: list[str], *, interval: float = 0.1, **popen
) -> tuple[subprocess.CompletedProcess, TreePeak, float]:
    """Run `cmd`, sampling the memory of its process tree; return (result, peak, wall seconds)."""
    peak = TreePeak()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tree's exact CPU total, once all are reaped
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    root = psutil.Process(proc.pid)
    done = threading.Event()

    peak.root_pid = proc.pid

    def sample() -> None:
        while not done.is_set():
            processes = _tree(root)
            sizes = [(p.pid, *_rollup(p.pid)) for p in processes]
            pss, rss = sum(s[1] for s in sizes), sum(s[2] for s in sizes)
            if pss > peak.pss_bytes:
                peak.pss_bytes, peak.processes = pss, sum(1 for s in sizes if s[1])
            peak.rss_bytes = max(peak.rss_bytes, rss)
            for pid, p_pss, _ in sizes:
                peak.peak_pss_by_pid[pid] = max(peak.peak_pss_by_pid.get(pid, 0), p_pss)
            _sample_cpu(processes, peak)
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak.total_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None), peak, wall
