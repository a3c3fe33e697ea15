"""Faults around ``mmfuse align`` and ``mmfuse compare``: a full or read-only disk, and processes killed mid-write.

A full disk is a small tmpfs (64 KiB or 256 KiB) mounted for the test; where mounting is not permitted (not
root, no CAP_SYS_ADMIN) those cases are skipped with the reason. Every case checks the error is one clear
line, that nothing half-written is left (no ``.NAME.tmp-*`` folder, no ``.X.tmp`` file) and that an existing
data set survives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_input_table import Case, assert_names, clean_failure, invoke, params, tree

from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, open_dataset, write_dataset
from mmfuse.errors import DataError

SURFACE = "faults: full or read-only disk, kill -9"


def _source(root: Path, rows: int = 20, label: str = "walk") -> Path:
    """Three recordings of ``rows`` steps at 10 Hz (acc: 2 random features, gyro: 1), labels walk/run."""
    src = root / "src"
    rng = np.random.default_rng(0)
    for rec in ("r1", "r2", "r3"):
        (src / rec).mkdir(parents=True)
        np.savez(src / rec / "acc.npz", timestamps=np.arange(rows) / 10, values=rng.normal(size=(rows, 2)))
        np.savez(src / rec / "gyro.npz", timestamps=np.arange(rows) / 10, values=rng.normal(size=(rows, 1)))
    (src / "labels.csv").write_text(f"recording,label\nr1,{label}\nr2,run\nr3,walk\n", encoding="utf-8")
    return src


def _mount_tmpfs(path: Path, size: str, read_only: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here (needs root / CAP_SYS_ADMIN): {proc.stderr.strip()}")


@pytest.fixture
def mounts() -> Iterator[Callable[..., Path]]:
    done: list[Path] = []

    def mount(path: Path, size: str, read_only: bool = False) -> Path:
        _mount_tmpfs(path, size, read_only)
        done.append(path)
        return path

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------------------------
# the cases: each a function of (tmp_path, mount)


def _align(src: Path, out: Path, *extra: str) -> Any:
    """``mmfuse align SRC --out OUT --rate 10`` (and any extra options) in-process."""
    return invoke("align", src, "--out", out, "--rate", "10", *extra)


def _align_refused_onto(size: str, rows: int = 20, read_only: bool = False) -> Callable[..., None]:
    """The case: align of ``rows`` steps per recording onto a ``size`` tmpfs (read-only if asked) is refused cleanly."""

    def case(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
        src = _source(tmp, rows=rows)
        disk = mount(tmp / "disk", size, read_only=read_only)
        line = clean_failure(_align(src, disk / "ds"))
        assert_names(line, *names)
        assert list(disk.iterdir()) == []

    return case


def align_overwrite_full_disk_keeps_the_old(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    disk = mount(tmp / "disk", "256k")
    out = disk / "ds"
    assert _align(_source(tmp / "small"), out).exit_code == 0
    before = tree(out)
    big = _source(tmp / "big", rows=12_000)
    line = clean_failure(_align(big, out, "--overwrite"))
    assert_names(line, *names)
    assert tree(out) == before and _hidden(disk) == []
    assert len(open_dataset(out)) == 3


def compare_disk_full(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    src = _source(tmp, rows=40)
    ds = tmp / "ds"
    assert _align(src, ds).exit_code == 0
    disk = mount(tmp / "disk", "64k")
    result = invoke("compare", "--dataset", ds, "-f", "concat", "-s", "1", "-e", "1", "--out", disk / "run")
    line = clean_failure(result)
    assert_names(line, *names)
    assert list(disk.iterdir()) == [], "a new run on a full disk left model files or a run directory behind"


def compare_read_only(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    src = _source(tmp, rows=40)
    ds = tmp / "ds"
    assert _align(src, ds).exit_code == 0
    disk = mount(tmp / "disk", "64k", read_only=True)
    line = clean_failure(invoke("compare", "--dataset", ds, "-f", "concat", "-s", "1", "--out", disk / "run"))
    assert_names(line, *names)
    assert list(disk.iterdir()) == []


def killed_write_leftover_is_removed(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    src = _source(tmp)
    leftover = tmp / f".ds.tmp-{_dead_pid()}-abcd1234"
    (leftover / "modalities").mkdir(parents=True)
    (leftover / "modalities" / "acc.parquet").write_bytes(b"half")
    result = _align(src, tmp / "ds")
    assert result.exit_code == 0, result.output
    assert "removed the temporary directory" in result.stderr and leftover.name in result.stderr
    assert not leftover.exists() and len(open_dataset(tmp / "ds")) == 3


def live_writer_leftover_is_kept(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    src = _source(tmp)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp / f".ds.tmp-{sleeper.pid}-abcd1234"
        busy.mkdir()
        result = _align(src, tmp / "ds")
        assert result.exit_code == 0, result.output
        assert busy.is_dir(), "the temporary folder of a running writer was deleted"
    finally:
        sleeper.kill()
        sleeper.wait()


def old_leftover_is_named(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    src = _source(tmp)
    (tmp / ".ds.tmp-xyz").mkdir()
    result = _align(src, tmp / "ds")
    assert result.exit_code == 0, result.output
    assert ".ds.tmp-xyz" in result.stderr and "older mmfuse" in result.stderr


def overwrite_crash_between_renames_rolls_back(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    src = _source(tmp)
    out = tmp / "ds"
    assert _align(src, out).exit_code == 0
    before = tree(out)
    pid = _dead_pid()
    aside = tmp / f".ds.old-{pid}-abcd1234"
    aside.mkdir()
    out.rename(aside / "old")  # the first rename happened, the process died before the second
    (tmp / f".ds.tmp-{pid}-efgh5678").mkdir()  # the new data set, never moved in
    line = clean_failure(_align(src, out))
    assert_names(line, *names)
    assert tree(out) == before and _hidden(tmp) == []


def open_after_overwrite_crash_names_the_old_copy(
    tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]
) -> None:
    src = _source(tmp)
    out = tmp / "ds"
    assert _align(src, out).exit_code == 0
    aside = tmp / f".ds.old-{_dead_pid()}-abcd1234"
    aside.mkdir()
    out.rename(aside / "old")
    with pytest.raises(DataError) as info:
        open_dataset(out)
    assert_names(str(info.value), *names, str(aside / "old"))


def overwrite_crash_after_swap_cleans_the_old_copy(
    tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]
) -> None:
    src = _source(tmp)
    out = tmp / "ds"
    assert _align(src, out).exit_code == 0
    aside = tmp / f".ds.old-{_dead_pid()}-abcd1234"
    (aside / "old").mkdir(parents=True)
    (aside / "old" / "meta.json").write_text("{}")
    result = _align(_source(tmp / "v2", label="jog"), out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert _hidden(tmp) == [] and open_dataset(out).task.class_names == ("jog", "run", "walk")


_KILL_SCRIPT = """
import sys
from mmfuse.align import align_folder
align_folder(sys.argv[1], sys.argv[2], rate=10.0, overwrite=sys.argv[3] == "1")
"""


def _kill_align_mid_write(tmp: Path, src: Path, out: Path, overwrite: bool) -> None:
    """Run align in a child process and kill -9 it once its temporary data set folder has appeared."""
    script = tmp / "align.py"
    script.write_text(_KILL_SCRIPT, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), str(src), str(out), "1" if overwrite else "0"])
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(".ds.tmp-") and (p / "modalities").is_dir() for p in tmp.iterdir()):
            break
        time.sleep(0.005)
    alive = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive, "align finished before it could be killed mid-write"


def kill_9_align_mid_write(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    src = _source(tmp / "in", rows=30_000)
    out = tmp / "ds"
    _kill_align_mid_write(tmp, src, out, overwrite=False)
    assert not out.exists(), "a killed align left a data set that may be half-written"
    assert [n for n in _hidden(tmp) if n.startswith(".ds.tmp-")], "no temporary folder: the kill came too late"
    result = _align(src, out)
    assert result.exit_code == 0, result.output
    assert "removed the temporary directory" in result.stderr
    assert _hidden(tmp) == [] and len(open_dataset(out)) == 3


def kill_9_align_overwrite_keeps_the_old(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    out = tmp / "ds"
    assert _align(_source(tmp / "old"), out).exit_code == 0
    before = tree(out)
    src = _source(tmp / "in", rows=30_000)
    _kill_align_mid_write(tmp, src, out, overwrite=True)
    assert tree(out) == before, "a killed overwrite changed the old data set"
    result = _align(src, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert _hidden(tmp) == [] and len(open_dataset(out)) == 3 and tree(out) != before


def write_dataset_full_disk_names_the_file(tmp: Path, mount: Callable[..., Path], names: tuple[str, ...]) -> None:
    disk = mount(tmp / "disk", "64k")
    rng = np.random.default_rng(0)
    records = [
        SequenceRecord(f"s{i}", "g", "train", {"x": rng.normal(size=(3000, 4)).astype(np.float32)}, {}, 0)
        for i in range(3)
    ]
    task = TaskSpec("classification", "sample", ("a", "b"))
    with pytest.raises(DataError) as info:
        write_dataset(disk / "ds", records, name="ds", modalities=[ModalitySpec("x", 4)], task=task)
    assert_names(str(info.value), *names)
    assert list(disk.iterdir()) == []


_ROWS: list[tuple[str, str, str, tuple[str, ...], Callable[..., None]]] = [
    (
        "align-disk-full-64k",
        "mmfuse align onto a full 64 KiB disk",
        "exit 2, nothing written",
        ("Cannot write the data set", "disk/ds", "disk is full", "Nothing was written"),
        _align_refused_onto("64k", rows=3_000),  # about 100 KB of data set
    ),
    (
        "align-disk-full-256k",
        "mmfuse align of 400 KB onto a 256 KiB disk",
        "exit 2, nothing written",
        ("Cannot write the data set", "disk/ds", "disk is full", "Nothing was written"),
        _align_refused_onto("256k", rows=12_000),  # about 400 KB of data set: does not fit
    ),
    (
        "align-read-only",
        "mmfuse align onto a read-only file system",
        "exit 2, nothing written",
        ("Cannot write the data set", "disk/ds", "read-only", "Nothing was written"),
        _align_refused_onto("64k", read_only=True),
    ),
    (
        "align-overwrite-full-disk",
        "mmfuse align --overwrite onto a full disk",
        "exit 2, the old data set kept",
        ("disk is full", "the existing data set at", "is unchanged"),
        align_overwrite_full_disk_keeps_the_old,
    ),
    (
        "write-dataset-full-disk",
        "write_dataset onto a full 64 KiB disk",
        "DataError, nothing written",
        ("Cannot write the data set", "disk/ds", "disk is full", "Nothing was written"),
        write_dataset_full_disk_names_the_file,
    ),
    (
        "compare-disk-full",
        "mmfuse compare onto a full 64 KiB disk",
        "exit 2, no run directory or model file left",
        ("No space left on device", "disk is full"),
        compare_disk_full,
    ),
    (
        "compare-read-only",
        "mmfuse compare onto a read-only file system",
        "exit 2, nothing written",
        ("read-only", "disk/run"),
        compare_read_only,
    ),
    (
        "killed-write-leftover",
        "a .ds.tmp-PID-* folder of a dead process beside --out",
        "removed by the next align, with a warning",
        (),
        killed_write_leftover_is_removed,
    ),
    (
        "live-writer-leftover",
        "a .ds.tmp-PID-* folder of a process that still runs",
        "left alone",
        (),
        live_writer_leftover_is_kept,
    ),
    (
        "old-style-leftover",
        "a .ds.tmp-* folder without a process id (older mmfuse)",
        "named in a warning",
        (),
        old_leftover_is_named,
    ),
    (
        "overwrite-crash-between-renames",
        "--out absent, the old data set in .ds.old-PID-*/old",
        "rolled back: the old data set restored",
        ("already exists", "overwrite"),
        overwrite_crash_between_renames_rolls_back,
    ),
    (
        "open-after-overwrite-crash",
        "open_dataset of a data set whose overwrite was interrupted (the folder absent)",
        "DataError",
        ("is not a directory", "An overwrite of it was interrupted", "puts it back"),
        open_after_overwrite_crash_names_the_old_copy,
    ),
    (
        "overwrite-crash-after-swap",
        "the new data set in place, the old copy left in .ds.old-PID-*",
        "the old copy deleted",
        (),
        overwrite_crash_after_swap_cleans_the_old_copy,
    ),
    (
        "kill-9-align-mid-write",
        "align killed (SIGKILL) while writing",
        "no data set; the next run cleans up",
        (),
        kill_9_align_mid_write,
    ),
    (
        "kill-9-align-overwrite",
        "align --overwrite killed (SIGKILL) while writing",
        "the old data set intact",
        (),
        kill_9_align_overwrite_keeps_the_old,
    ),
]

CASES = [Case(SURFACE, cid, what, expected, names, fn) for cid, what, expected, names, fn in _ROWS]


@pytest.mark.parametrize("case", params(CASES))
def test_fault(tmp_path: Path, case: Case, mounts: Callable[..., Path]) -> None:
    case.data(tmp_path, mounts, case.names)
