import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import mmfuse


def test_every_public_name_resolves():
    for name in mmfuse.__all__:
        assert getattr(mmfuse, name) is not None, name


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mmfuse.nope


def test_every_module_declares_all():
    missing = []
    for info in pkgutil.walk_packages(mmfuse.__path__, prefix="mmfuse."):
        module = importlib.import_module(info.name)
        if not hasattr(module, "__all__"):
            missing.append(info.name)
    assert missing == []


def test_layers_import_only_downwards():
    """A lower layer never imports a higher one (types -> data -> align -> preprocess -> ... -> cli).

    ``metrics`` is a pure functional core (NumPy, SciPy, scikit-learn, torch and the registry) that every layer
    may use, so it ranks just above ``types``; ``_version``, ``_registry``, ``_io`` and ``errors`` are below all.
    """
    order = ["types", "data", "align", "preprocess", "importers", "layers", "fusion", "models", "train", "evaluate"]
    order += ["monitor", "stream"]
    order += ["cli"]
    rank: dict[str, float] = {name: float(i) for i, name in enumerate(order)}
    rank["metrics"] = rank["types"] + 0.5
    rank["extract"] = rank["preprocess"] + 0.5  # raw media -> streams and data sets (uses data/align)
    root = Path(mmfuse.__file__).parent
    violations = []
    for path in root.rglob("*.py"):
        owner = path.relative_to(root).parts[0].removesuffix(".py")
        if owner not in rank:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmfuse."):
                target = node.module.split(".")[1]
                if target in rank and rank[target] > rank[owner]:
                    violations.append(f"{path.relative_to(root)} imports {node.module}")
    assert violations == []


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from mmfuse._io import atomic_write_text

    umask = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # 0666 less the umask, not mkstemp's private 0600
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640  # a replaced file keeps its permissions
        assert kept.read_text() == "new"
    finally:
        os.umask(umask)


def test_metrics_imports_nothing_of_mmfuse_above_types() -> None:
    root = Path(mmfuse.__file__).parent / "metrics"
    allowed = {"mmfuse._registry", "mmfuse.errors", "mmfuse.types"}
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmfuse"):
                if not node.module.startswith("mmfuse.metrics"):
                    found.add(node.module)
    assert found <= allowed, found - allowed
