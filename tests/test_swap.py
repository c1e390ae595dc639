"""The output swap under faults: a swap cut short at any step, a crash, a second run into the same --out, a mount
point as --out, a full disk. The mount and disk cases mount a small tmpfs (root only; skipped with the reason)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import write_random_inputs

from cropmon import errors
from cropmon.cli import EXIT_DISK_FULL, EXIT_OK, main
from cropmon.io import outputs, paths

REPO = Path(__file__).resolve().parents[1]


def write_set(directory: Path, tag: str, names=("a.csv", "b.png", "run.json")) -> None:
    """A run's outputs: files, an AOI folder, and run.json; each file says which run wrote it."""
    (directory / "aoi").mkdir()
    (directory / "aoi" / "c.txt").write_text(tag)
    for name in names:
        (directory / name).write_text(tag)


def snapshot(final: Path) -> dict[str, str]:
    """Every file under `final` but cropmon's own hidden entries, with its content."""
    if not final.is_dir():
        return {}
    return {str(p.relative_to(final)): p.read_text() for p in sorted(final.rglob("*"))
            if p.is_file() and not str(p.relative_to(final)).startswith((".cropmon-", "."))}


def complete(tag: str) -> dict[str, str]:
    return {"a.csv": tag, "b.png": tag, "run.json": tag, "aoi/c.txt": tag}


def leftovers(final: Path) -> list[str]:
    here = [p.name for p in final.parent.iterdir() if p.name.startswith(f".{final.name}.")]
    inside = [p.name for p in final.iterdir() if p.name.startswith(".cropmon-")] if final.is_dir() else []
    return here + inside


@pytest.mark.parametrize("in_place", [False, True], ids=["renamed", "in-place"])
def test_a_swap_cut_short_at_any_step_leaves_the_previous_outputs(tmp_path, monkeypatch, in_place):
    """Fail each rename of the swap in turn: the previous outputs are then back, whole. After every rename that
    did happen, a reader sees files of one run only, and run.json only beside a complete set."""
    monkeypatch.setattr(outputs, "swaps_in_place", lambda final: in_place and Path(final).is_dir())
    final = tmp_path / "out"
    with outputs.atomic_output_dir(final) as staged:
        write_set(staged.staging, "old")
    assert snapshot(final) == complete("old")

    seen: list[dict[str, str]] = []
    real_rename = Path.rename
    state = {"armed": False, "calls": 0, "fail_at": None}

    def rename(self, target):
        moving = state["armed"] and "discard" not in Path(target).name
        if moving:
            if state["calls"] == state["fail_at"]:
                state["calls"] += 1
                raise OSError(5, "injected failure")
            state["calls"] += 1
        result = real_rename(self, target)
        if moving:
            seen.append(snapshot(final))
        return result

    monkeypatch.setattr(Path, "rename", rename)
    with outputs.atomic_output_dir(final) as staged:  # a successful swap, to count its renames
        write_set(staged.staging, "new")
        state["armed"] = True
    steps, state["armed"] = state["calls"], False
    assert snapshot(final) == complete("new") and steps >= 2
    with outputs.atomic_output_dir(final) as staged:
        write_set(staged.staging, "old")

    for fail_at in range(steps):
        state.update(calls=0, fail_at=fail_at, armed=False)
        with pytest.raises(OSError, match="injected"), outputs.atomic_output_dir(final) as staged:
            write_set(staged.staging, "new")
            state["armed"] = True
        state["armed"] = False
        assert snapshot(final) == complete("old"), f"failed at rename {fail_at}"
        assert leftovers(final) == []
    for view in seen:
        tags = set(view.values())
        assert len(tags) <= 1, f"a reader saw two runs: {view}"
        if "run.json" in view:
            assert view == complete(tags.pop()), f"run.json beside an incomplete set: {view}"


CRASH = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from cropmon.io import outputs
    final, crash_at, in_place = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    outputs.swaps_in_place = lambda final: in_place and Path(final).is_dir()
    real, calls = Path.rename, [0]
    def rename(self, target):
        if calls[0] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind
        calls[0] += 1
        return real(self, target)
    with outputs.atomic_output_dir(final) as staged:
        (staged.staging / "aoi").mkdir()
        (staged.staging / "aoi" / "c.txt").write_text("new")
        for name in ("a.csv", "b.png", "run.json"):
            (staged.staging / name).write_text("new")
        if crash_at < 0:
            os.kill(os.getpid(), signal.SIGKILL)  # with the lock held and the staging written
        Path.rename = rename
""")


@pytest.mark.parametrize(("in_place", "crash_at"), [
    (False, -1), (False, 0), (False, 1),  # renamed: the old directory aside, then the new one in its place
    (True, -1), (True, 0), (True, 2), (True, 4), (True, 6),  # in place: 4 entries out (run.json first), 4 in
])
def test_a_run_killed_mid_swap_is_undone_by_the_next_run(tmp_path, in_place, crash_at, monkeypatch):
    """SIGKILL before the swap (-1: never reached, the run dies with its lock held) or after some of its renames:
    the lock was the kernel's and dies with the process, and the next run restores the previous outputs."""
    monkeypatch.setattr(outputs, "swaps_in_place", lambda final: in_place and Path(final).is_dir())
    final = tmp_path / "out"
    with outputs.atomic_output_dir(final) as staged:
        write_set(staged.staging, "old")
    proc = subprocess.run([sys.executable, "-c", CRASH, str(final), str(crash_at), "1" if in_place else "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert leftovers(final) or not final.exists(), "the killed run left nothing to recover?"
    with outputs.atomic_output_dir(final) as staged:  # not refused: the dead run's lock is gone
        assert snapshot(final) == complete("old"), "the next run did not restore the previous outputs"
        write_set(staged.staging, "next")
    assert snapshot(final) == complete("next")
    assert leftovers(final) == []


def test_a_second_run_into_the_same_out_is_refused_and_the_first_keeps_its_staging(tmp_path):
    final = tmp_path / "out"
    with outputs.atomic_output_dir(final) as first:
        write_set(first.staging, "first")
        busy = pytest.raises(errors.OutputBusy, match=rf"pid {os.getpid()} on .*Fix: wait for it")
        with busy, outputs.atomic_output_dir(final):
            pass
        assert snapshot(first.staging) == complete("first"), "the refused run touched the live run's staging"
        # In another process too (flock is per open file, so the same process already conflicts, but be sure).
        code = ("import sys; from cropmon.io import outputs; from cropmon import errors\n"
                "try:\n    outputs.atomic_output_dir(sys.argv[1]).__enter__()\n"
                "except errors.OutputBusy as e:\n    print(e); sys.exit(5)\n")
        other = subprocess.run([sys.executable, "-c", code, str(final)], capture_output=True, text=True, cwd=REPO)
        assert other.returncode == 5 and "another cropmon run" in other.stdout, other.stderr
        assert snapshot(first.staging) == complete("first")
    assert snapshot(final) == complete("first")
    assert leftovers(final) == [], "the lock file is removed at the end"


def test_a_signal_during_the_swap_waits_for_it(tmp_path, monkeypatch):
    """SIGTERM arriving mid-swap is held until the swap is done: the new outputs are whole, nothing is raised,
    and the caller's handler is back afterwards."""
    final = tmp_path / "out"
    with outputs.atomic_output_dir(final) as staged:
        write_set(staged.staging, "old")
    real_rename = Path.rename
    sent: list[bool] = []

    def terminate(signum, frame):
        raise errors.Terminated("SIGTERM")

    def rename(self, target):
        if not sent and self == final:  # the old directory going aside: the first rename of the swap
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_rename(self, target)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        monkeypatch.setattr(Path, "rename", rename)
        with outputs.atomic_output_dir(final) as staged:
            write_set(staged.staging, "new")
        monkeypatch.undo()
        assert sent and snapshot(final) == complete("new")
        assert signal.getsignal(signal.SIGTERM) is terminate
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- on mounted file systems (root only) ---------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of `size` bytes at a new directory, unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: int, name: str = "disk") -> Path:
        where = tmp_path / name
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}): needs root")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    return write_random_inputs(tmp_path_factory.mktemp("small"), np.random.default_rng(8), 120, 100, n_classes=6,
                               n_cells=300)


def run(capsys, raster, fields, out, *extra: str) -> tuple[int, str]:
    code = main(["run", "--raster", str(raster), "--fields", str(fields), "--out", str(out), "--scheduler",
                 "threads", "--progress", "off", *extra])
    return code, capsys.readouterr().err


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_mount_point_as_out_gets_its_contents_swapped(tmpfs, small_inputs, capsys):
    """docker run -v /host/out:/out ... --out /out: the mount point cannot be renamed; its contents are."""
    raster, fields = small_inputs
    out = tmpfs(64 * 2**20)
    assert outputs.swaps_in_place(out)
    code, err = run(capsys, raster, fields, out)
    assert code == EXIT_OK, err
    first = json.loads((out / "run.json").read_text())
    code, err = run(capsys, raster, fields, out, "--seed", "7")
    assert code == EXIT_OK, err
    second = json.loads((out / "run.json").read_text())
    assert second["settings"]["seed"] == 7 and first["settings"]["seed"] == 0, "the second run's outputs are in"
    assert sorted(p.name for p in out.iterdir()) == sorted(second["outputs"]), "only one run's outputs, nothing else"
    assert paths.is_mount_point(out)


def test_a_bind_mount_is_seen_as_a_mount_point(tmp_path):
    """A directory bind-mounted from the same file system: os.path.ismount misses it, mountinfo does not."""
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    proc = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({proc.stderr.strip() or 'not root'}): needs root")
    try:
        assert not os.path.ismount(target)
        assert paths.is_mount_point(target) and not paths.is_mount_point(source)
        assert outputs.swaps_in_place(target)
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_full_disk_is_one_line_and_keeps_the_previous_outputs(tmpfs, small_inputs, capsys, tmp_path):
    """The disk holds one run's outputs and half another's: the second run ends in one line naming the device
    and the space missing (exit 4), the first run's outputs byte for byte as they were, nothing left behind."""
    raster, fields = small_inputs
    probe = tmp_path / "probe"
    code, err = run(capsys, raster, fields, probe)
    assert code == EXIT_OK, err
    size = paths.tree_bytes(probe)
    disk = tmpfs(int(1.5 * size) // 4096 * 4096)
    out = disk / "out"
    code, err = run(capsys, raster, fields, out)
    assert code == EXIT_OK, err
    before = digest(out)

    for target in (out, disk):  # a directory on the disk, and the disk's mount point itself (contents swapped)
        code, err = run(capsys, raster, fields, target, "--seed", "3")
        assert code == EXIT_DISK_FULL, err
        lines = [line for line in err.splitlines() if line.startswith("cropmon:")]
        assert len(lines) == 1 and "Traceback" not in err and "ERROR" not in err, err
        assert lines[0].startswith(f"cropmon: disk full: {target}: the disk is full: tmpfs (mounted at {disk})")
        assert "more than is free" in lines[0] and f"Fix: free space on {disk}" in lines[0]
        assert digest(out) == before, "the previous outputs changed"
        assert [p.name for p in disk.iterdir()] == ["out"], "staging or lock left on the disk"


def test_disk_full_is_recognised_in_the_words_of_each_library():
    assert errors.is_disk_full(OSError(28, "No space left on device"))
    assert errors.is_disk_full(RuntimeError("sqlite3_exec(COMMIT) failed: database or disk is full"))
    wrapped = ValueError("write failed")
    wrapped.__cause__ = OSError(122, "Disk quota exceeded")
    assert errors.is_disk_full(wrapped)
    assert not errors.is_disk_full(OSError(13, "Permission denied"))
    full = errors.DiskFull("/out", device="/dev/sdb1", mount="/out", free=10, total=100, written=50, needed=80)
    again = __import__("pickle").loads(__import__("pickle").dumps(full))
    assert str(again) == str(full) and "70 B more than is free" in str(full)


def test_a_full_disk_outside_the_outputs_is_named_from_the_os_error(tmp_path):
    """A scratch copy or the twin's cache filling a disk: the CLI's one line names the file, device and space."""
    from cropmon.cli import _disk_full

    failure = RuntimeError("copying the fields failed")
    failure.__cause__ = OSError(28, "No space left on device", str(tmp_path / "copy.gpkg"))
    fs = paths.filesystem_of(tmp_path)
    line = _disk_full(failure)
    assert line.startswith(f"{tmp_path / 'copy.gpkg'}: the disk is full: {fs.device} (mounted at {fs.mount}) has ")
    assert line.endswith(f"Fix: free space on {fs.mount} or pass --out (and --scratch-dir) on another disk")
