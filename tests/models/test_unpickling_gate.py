"""One gate in front of every file that holds pickled data: ``run_exported`` (a ``.pt2`` program),
``TorchFileEncoder`` (a TorchScript or ``.pt2`` frame model) and ``import_mmsa`` (an MMSA feature pickle) refuse with
the same exception and message shape, and load with their option (warning even then)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mmfuse.errors import DataError, MmfuseError, MmfuseWarning, UnsafeLoadError
from mmfuse.extract import TorchFileEncoder
from mmfuse.importers import import_mmsa
from mmfuse.models.export import run_exported

REFUSED = (
    r"{path}: refusing to load this {kind} file: it holds pickled data, and loading it can run code chosen by "
    r"whoever wrote it\. If you trust the file, pass {option}=True{cli}; otherwise .+\."
)
WARNED = r"Loading {path} with allow_unsafe=True: this {kind} file holds pickled data and can run code while it"


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``torch.export`` program: ``[B, 3] -> [B, 3]`` doubled."""
    path = tmp_path_factory.mktemp("gate") / "double.pt2"
    torch.export.save(torch.export.export(_Double(), (torch.ones(2, 3),)), path)
    return path


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def _refuse_export(path: Path) -> None:
    run_exported(path, [torch.ones(2, 3)])


def _refuse_frames(path: Path) -> None:
    TorchFileEncoder(path, image_size=8)


def _refuse_mmsa(path: Path) -> None:
    import_mmsa(path, path.with_suffix(".ds"))


UNSAFE = ("allow_unsafe", " (CLI: --allow-unsafe-load)")


@pytest.mark.parametrize(
    ("load", "name", "kind", "option", "cli"),
    [
        (_refuse_export, "model.pt2", "torch.export", "allow_unsafe", ""),
        (_refuse_frames, "frames.pt2", "torch.export", *UNSAFE),
        (_refuse_frames, "frames.pt", "TorchScript", *UNSAFE),
        (_refuse_mmsa, "features.pkl", "MMSA feature", "allow_pickle", " (CLI: --allow-pickle)"),
    ],
)
def test_every_loader_refuses_with_one_exception_and_message(
    tmp_path: Path, load: Callable[[Path], None], name: str, kind: str, option: str, cli: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"not even an archive")  # refused before a byte is read: no parse error can come first
    with pytest.raises(UnsafeLoadError) as info:
        load(path)
    pattern = REFUSED.format(path=re.escape(str(path)), kind=re.escape(kind), option=option, cli=re.escape(cli))
    assert re.fullmatch(pattern, str(info.value)), str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, MmfuseError)  # what callers already catch


def test_the_model_loaders_load_with_the_option_and_warn(program: Path) -> None:
    warned = WARNED.format(path=re.escape(str(program)), kind="torch.export")
    with pytest.warns(MmfuseWarning, match=warned):
        out = run_exported(program, [torch.ones(2, 3)], allow_unsafe=True)
    assert torch.equal(out, torch.full((2, 3), 2.0))
    with pytest.warns(MmfuseWarning, match=warned):
        encoder = TorchFileEncoder(program, image_size=8, allow_unsafe=True)
    assert encoder.allow_unsafe is True


@pytest.mark.parametrize("opt_in", [1, "yes", None])
def test_only_true_opens_the_gate(program: Path, opt_in: object) -> None:
    with pytest.raises(UnsafeLoadError, match="pass allow_unsafe=True"):
        run_exported(program, [torch.ones(2, 3)], allow_unsafe=opt_in)  # type: ignore[arg-type]
