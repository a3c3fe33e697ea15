"""Atomic file writes shared by every module that saves state, and the one reader of settings files.

A write goes to a temporary file in the destination folder, is flushed and fsynced, then renamed over the
target with :func:`os.replace`, which is atomic on POSIX and Windows: readers see the old file or the new
one, never half of one. :func:`read_settings_file` reads the YAML or JSON files users write (experiment files,
presets) and :func:`atomic_write_yaml` writes them back. :func:`json_fields` is the one ``to_dict`` of a
dataclass (or any object): its attributes as a JSON-safe dict. :func:`check_unpickling_allowed` is the one gate
in front of every file that holds pickled data (checkpoints and saved state never do; users' model files may).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from mmfuse.errors import MmfuseWarning, UnsafeLoadError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_yaml",
    "check_unpickling_allowed",
    "json_fields",
    "read_settings_file",
]


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], object], *, suffix: str = ".tmp") -> Path:
    """Call ``writer(tmp_path)`` to fill a temporary file, then move it onto ``path`` atomically.

    The temporary file is named ``.<name>.<random><suffix>`` in the folder of ``path`` (created if needed). It
    is removed when ``writer`` raises, so nothing half-written is left behind; a writer may raise on purpose
    (say, on a checksum mismatch) to leave ``path`` untouched.

    Args:
        path: Target file.
        writer: Fills the temporary file it is given (it may open it, or hand it to a library such as
            ``safetensors.torch.save_file``); its return value is ignored.
        suffix: Ending of the temporary file's name, so that a crash leaves a recognisable leftover
            (``".part"`` for downloads).

    Returns:
        ``path`` as a Path.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write(d / "x.txt", lambda p: p.write_text("hi")).read_text()
        'hi'
        >>> def broken(p):
        ...     _ = p.write_text("half")
        ...     raise RuntimeError("stop")
        >>> try:
        ...     _ = atomic_write(d / "x.txt", broken, suffix=".part")
        ... except RuntimeError:
        ...     pass
        >>> (d / "x.txt").read_text(), sorted(q.name for q in d.iterdir())
        ('hi', ['x.txt'])

    The new file keeps the permissions of the file it replaces, or gets ``0666`` less the process umask, as
    ``open(path, "w")`` would give it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the mode an ordinary write would have
        os.chmod(tmp, _file_mode(target))
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        os_error = _os_error_of(exc, target)
        if os_error is not None:
            raise os_error from exc
        raise
    return target


def _os_error_of(exc: BaseException, target: Path) -> OSError | None:
    """The OSError behind a library's own I/O error, or None.

    Libraries written in Rust (safetensors, tokenizers) report a failed write as their own exception whose text
    ends in ``(os error 28)``; it is raised as the ``OSError`` it is (here: no space left), naming the target,
    so callers and the CLI handle a full or read-only disk one way.

    Example:
        >>> _os_error_of(RuntimeError("I/O error: No space left on device (os error 28)"), Path("m.bin")).errno
        28
        >>> _os_error_of(ValueError("bad"), Path("m.bin")) is None
        True
    """
    if isinstance(exc, OSError) or not isinstance(exc, Exception):
        return None
    import re

    match = re.search(r"\(os error (\d+)\)", str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code), str(target))


def _file_mode(target: Path) -> int:
    """The permission bits an ordinary write of ``target`` would leave."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, *, newline: str | None = None) -> Path:
    r"""Write ``text`` (UTF-8) to ``path`` atomically.

    ``newline`` is passed to :func:`open`: ``None`` writes ``\n`` as the platform's line separator, ``"\n"``
    writes it unchanged on every platform.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_text(d / "a.md", "x\ny\n", newline="\n").read_bytes()
        b'x\ny\n'
    """
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8", newline=newline))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (``allow_nan=False``: NaN is written as null)."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=indent, allow_nan=False) + "\n")


def _json_safe(obj: Any) -> Any:
    """Replace float NaN/inf by None and numpy scalars/arrays by Python values, recursively."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_fields(
    obj: Any, names: Iterable[str] | None = None, *, exclude: Collection[str] = (), **values: Any
) -> dict[str, Any]:
    """Return ``obj``'s attributes as a JSON-safe dict: the ``to_dict`` of a dataclass, written once.

    Values are made JSON-safe as :func:`atomic_write_json` writes them: a Path becomes a string, a tuple a list,
    a numpy array or scalar a Python list or number, a NaN or infinite float None, mapping keys strings
    (recursively).

    Args:
        obj: A dataclass instance, or any object when ``names`` is given.
        names: The attributes to read (fields or properties), in the order of the dict. Default: ``obj``'s
            dataclass fields in declaration order.
        exclude: Names left out (a model, a live object, a bulky field).
        values: Computed entries: one named like an attribute takes its place in the order, a new one is added
            after them.

    Returns:
        A new dict; nothing in it is shared with ``obj``.

    Raises:
        TypeError: ``names`` is not given and ``obj`` is not a dataclass instance.

    Example:
        >>> from dataclasses import dataclass
        >>> from pathlib import Path
        >>> @dataclass
        ... class Row:
        ...     path: Path
        ...     score: float
        ...     span: tuple[float, float] = (0.0, 1.0)
        ...     scratch: object = None
        >>> r = Row(Path("runs/a"), float("nan"))
        >>> json_fields(r, exclude=("scratch",))
        {'path': 'runs/a', 'score': None, 'span': [0.0, 1.0]}
        >>> json_fields(r, ["score", "path"], score=0.5, note="kept")
        {'score': 0.5, 'path': 'runs/a', 'note': 'kept'}
    """
    if names is None:
        if not is_dataclass(obj) or isinstance(obj, type):
            raise TypeError(f"json_fields needs a dataclass instance when 'names' is not given. Got {obj!r}.")
        names = [f.name for f in fields(obj)]
    keys = list(names)
    out = {k: values[k] if k in values else getattr(obj, k) for k in keys if k not in exclude}
    out.update(values)  # a key already there keeps its place
    return _json_safe(out)


def atomic_write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], *, nan: str = "nan") -> Path:
    r"""Write dict rows as CSV atomically: columns in first-seen order, floats as ``%.6g``, None as empty.

    Args:
        path: Target file.
        rows: One mapping per row; a row may lack some columns (written empty).
        nan: How a NaN float is written (``"nan"``, or ``""`` to leave the cell empty).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_csv(d / "r.csv", [{"a": 1, "b": 0.123456789}, {"a": 2, "c": None}]).read_text()
        'a,b,c\n1,0.123457,\n2,,\n'
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)

    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return nan if math.isnan(value) else f"{value:.6g}"
        return "" if value is None else value

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: cell(row.get(k)) for k in columns})
    return atomic_write_text(path, buf.getvalue(), newline="\n")


def _yaml_loader() -> type:
    """PyYAML's safe loader, reading ``1e-3`` as a float as YAML 1.2 and JSON do (YAML 1.1 reads it as text)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


def read_settings_file(path: str | os.PathLike[str], what: str = "settings file") -> dict[str, Any]:
    r"""Read a YAML or JSON file that must hold a mapping (``.json``: JSON; anything else: YAML, safely).

    Args:
        path: The file.
        what: What the file is, for the error messages (``"experiment file"``, ``"preset"``).

    Raises:
        FileNotFoundError: the file does not exist (the path is named).
        ValueError: it cannot be parsed (with the line), or it holds something other than a mapping.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "exp.yaml"
        >>> _ = f.write_text("seeds: 2\nlr: 1e-3\nfusion: [concat, gated]\n")
        >>> read_settings_file(f)
        {'seeds': 2, 'lr': 0.001, 'fusion': ['concat', 'gated']}
    """
    import yaml

    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(2, f"The {what} does not exist or is not a file", str(target))
    text = target.read_text(encoding="utf-8")
    try:
        if target.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass: plain data only
    except json.JSONDecodeError as exc:
        raise ValueError(f"The {what} '{target}' is not valid JSON: {exc}.") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"The {what} '{target}' is not valid YAML: {exc}.") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(
            f"The {what} '{target}' must hold a mapping of keys to values. Got a {type(data).__name__} instead."
        )
    return data


def atomic_write_yaml(path: str | os.PathLike[str], obj: Mapping[str, Any], *, header: str = "") -> Path:
    """Write a mapping as block-style YAML atomically, keys in the given order (NaN/inf as null, paths as text).

    ``header`` is written first as ``#`` comment lines.

    Example:
        >>> import tempfile, pathlib
        >>> f = atomic_write_yaml(pathlib.Path(tempfile.mkdtemp()) / "c.yaml", {"seeds": 2, "lr": 1e-3})
        >>> read_settings_file(f)
        {'seeds': 2, 'lr': 0.001}
    """
    import yaml

    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    body = yaml.safe_dump(_json_safe(dict(obj)), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return atomic_write_text(path, comment + body, newline="\n")


def check_unpickling_allowed(
    path: str | os.PathLike[str],
    kind: str,
    *,
    allowed: bool,
    instead: str,
    option: str = "allow_unsafe",
    cli_option: str | None = None,
) -> None:
    """Refuse to load ``path``, a ``kind`` file that holds pickled data, unless the user allowed it; warn if so.

    Unpickling runs code chosen by whoever wrote the file, so mmfuse never writes such files and loads one only when
    the caller passed ``option=True``. Every loader of such a file calls this first: one rule, one exception, one
    message.

    Args:
        path: The file (named in the error and the warning).
        kind: What the file is, e.g. ``"TorchScript"`` or ``"torch.export"``.
        allowed: The value of the caller's opt-in; only True allows the load.
        instead: What to do rather than trust the file (e.g. ``"export to ONNX"``).
        option: The caller's keyword argument that allows the load.
        cli_option: The command-line flag that sets ``option``, when there is one.

    Raises:
        UnsafeLoadError: ``allowed`` is not True (a :class:`~mmfuse.errors.DataError`; nothing has been read).

    Warns:
        MmfuseWarning: ``allowed`` is True; at the line that called the caller.

    Example:
        >>> try:
        ...     check_unpickling_allowed("net.pt", "TorchScript", allowed=False, instead="use .safetensors")
        ... except ValueError as e:
        ...     print(e)
        net.pt: refusing to load this TorchScript file: it holds pickled data, and loading it can run code chosen \
by whoever wrote it. If you trust the file, pass allow_unsafe=True; otherwise use .safetensors.
    """
    if allowed is not True:
        flag = f" (CLI: {cli_option})" if cli_option else ""
        raise UnsafeLoadError(
            f"{path}: refusing to load this {kind} file: it holds pickled data, and loading it can run code chosen by "
            f"whoever wrote it. If you trust the file, pass {option}=True{flag}; otherwise {instead}."
        )
    warnings.warn(
        f"Loading {path} with {option}=True: this {kind} file holds pickled data and can run code while it is loaded; "
        "load only files you trust.",
        MmfuseWarning,
        stacklevel=3,
    )
