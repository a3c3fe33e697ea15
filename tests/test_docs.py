"""Every fenced code block in README.md and docs/*.md runs as written.

```python blocks run in a subprocess; ```bash / ```console blocks that call ``mmfuse`` or ``python`` run as a bash
script (with the venv's ``bin`` first on ``PATH``). The blocks of one page run in order in one fresh folder, so a
later block can read what an earlier one wrote (as a reader following the page would). A block that cannot run in
CI carries a visible marker on the line before its fence::

    <!-- doctest: skip (the reason) -->

and a Python block that continues the page's previous Python block (its names are used) carries
``<!-- doctest: continue -->``. The skipped blocks are listed in the test output (``-rs``). Blocks of any other
language (``text``, untagged layouts) are not code and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash", "console")
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*doctest:\s*(skip|continue)\s*(?:\((.+)\))?\s*-->$")
_COMMAND = re.compile(r"^\s*(?:\$\s*)?(?:\.venv/bin/)?(?:mmfuse|python3?)\b")
#: Seconds one block may take before the test names it as too slow.
_BLOCK_TIMEOUT = 240

#: Data a page's blocks read but do not make themselves (a run directory the page assumes), made first in the
#: page's folder: small stand-ins, so the page runs in seconds.
SETUP: dict[str, list[str]] = {
    "docs/report.md": [
        "mmfuse compare --dataset basic-motions --fusion concat --seeds 1 --epochs 1 --device cpu "
        "--out runs/basic-motions"
    ],
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str  # "", "skip" or "continue"
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one markdown page, with the doctest marker on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i >= len(lines):
            raise AssertionError(f"{page}:{start + 1}: a code fence is never closed.")
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = _MARKER.match(lines[j].strip()) if j >= 0 else None
        if marker is not None and marker.group(1) == "skip" and not marker.group(2):
            raise AssertionError(f"{page}:{j + 1}: a doctest skip marker must give its reason in parentheses.")
        blocks.append(
            Block(
                page,
                start + 1,
                lang,
                "\n".join(body) + "\n",
                marker.group(1) if marker else "",
                (marker.group(2) or "") if marker else "",
            )
        )
        i += 1
    return blocks


def _runs(block: Block) -> bool:
    if block.lang == "python":
        return True
    if block.lang in ("bash", "console"):
        return any(_COMMAND.match(line) for line in block.code.splitlines())
    return False


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    return env


def _run(block: Block, code: str, cwd: Path) -> None:
    if block.lang == "python":
        script = cwd / f"_block_{block.line}.py"
        script.write_text(code, encoding="utf-8")
        argv = [sys.executable, script.name]
    else:
        script = cwd / f"_block_{block.line}.sh"
        script.write_text("set -euo pipefail\n" + code, encoding="utf-8")
        argv = ["bash", script.name]
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=_BLOCK_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: the {block.lang} block ran past {_BLOCK_TIMEOUT} s.")
    if done.returncode != 0:
        pytest.fail(
            f"{block.where}: the {block.lang} block failed as written (exit {done.returncode}).\n"
            f"--- code ---\n{code}--- stderr (tail) ---\n{done.stderr[-4000:]}"
        )


ALL_BLOCKS = [b for page in PAGES for b in read_blocks(page)]


def test_markers_sit_on_runnable_blocks() -> None:
    """A marker on prose or a layout block is a mistake (it would hide nothing, or the wrong block)."""
    wrong = [b.where for b in ALL_BLOCKS if b.marker and not _runs(b)]
    assert not wrong, f"doctest markers before blocks that would not run anyway: {wrong}"
    first = [b.where for b in ALL_BLOCKS if b.marker == "continue" and b.lang != "python"]
    assert not first, f"'continue' is for Python blocks only: {first}"


def test_skipped_blocks_are_listed() -> None:
    """What the doc test leaves out, visible in every run (the reason comes from the marker in the page)."""
    skipped = [b for b in ALL_BLOCKS if b.marker == "skip"]
    for b in skipped:
        assert b.reason.strip(), b.where
    ran = [b for b in ALL_BLOCKS if _runs(b) and b.marker != "skip"]
    assert len(ran) > len(skipped), "most code blocks in the docs must run"
    if skipped:
        listing = "; ".join(f"{b.where} ({b.reason})" for b in skipped)
        pytest.skip(f"{len(skipped)} doc blocks are not run: {listing}")


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_runs_as_written(page: str, tmp_path: Path) -> None:
    """The page's runnable blocks, in order, in one fresh folder."""
    blocks = [b for b in ALL_BLOCKS if b.page == page and _runs(b)]
    todo = [b for b in blocks if b.marker != "skip"]
    if not todo:
        pytest.skip(f"{page}: no runnable code block")
    for command in SETUP.get(page, []):
        _run(Block(page, 0, "bash", command + "\n", "", "setup"), command + "\n", tmp_path)
    previous_python = ""
    for k, block in enumerate(blocks):
        code = block.code
        continued = next((b.marker == "continue" for b in blocks[k + 1 :] if b.lang == "python"), False)
        if block.marker == "continue":
            if not previous_python:
                raise AssertionError(f"{block.where}: 'continue' but no earlier Python block on the page.")
            code = previous_python + code
        if block.lang == "python":
            previous_python = code
        if block.marker == "skip" or (continued and block.lang == "python"):
            continue  # a block that the next one continues runs once, inside it
        _run(block, code, tmp_path)


def test_readme_counts_the_registered_fusions() -> None:
    from mmfuse.fusion import list_fusions

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    claimed = re.findall(r"(\d+) fusions \(below\)|\((\d+) fusions and", readme)
    assert claimed, "README.md no longer states how many fusions there are"
    for a, b in claimed:
        assert int(a or b) == len(list_fusions()), (
            f"README.md says {a or b} fusions; {len(list_fusions())} are registered"
        )
