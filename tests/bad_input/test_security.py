"""Files that can run code while they load: TorchScript and ``torch.export`` frame models.

``torch.export.load`` falls back to an unrestricted unpickler, so a crafted ``.pt2`` runs code chosen by its
author. :class:`mmfuse.extract.TorchFileEncoder` (and ``mmfuse extract --frame-model``) refuse such files unless
the user opts in (``allow_unsafe=True`` / ``--allow-unsafe-load``, with a warning). The crafted file below writes a
marker file when it is unpickled: without the opt-in the marker must never appear.
"""

from __future__ import annotations

import io
import logging
import pathlib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from bad_input_table import ACCEPTED, Case, assert_names, clean_failure, invoke, params

from mmfuse.errors import DataError, MmfuseWarning
from mmfuse.extract import TorchFileEncoder

SURFACE = "TorchFileEncoder / mmfuse extract --frame-model (model files)"


class _Payload:
    """Unpickling this writes ``marker``: what a malicious model file would do (here, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "unpickled"))


def _crafted_pt2(path: Path, marker: Path) -> Path:
    """A valid torch.export archive whose sample-inputs entry is a pickle that writes ``marker`` when loaded."""
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    src = io.BytesIO()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 8, 8),)), src)
    payload = io.BytesIO()
    torch.save({"x": _Payload(marker)}, payload)
    with zipfile.ZipFile(io.BytesIO(src.getvalue())) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else zin.read(item.filename)
            zout.writestr(item, data)
    return path


def _script(path: Path, marker: Path) -> Path:
    torch.jit.save(torch.jit.script(torch.nn.Flatten()), str(path))
    return path


CASES = [
    Case(
        SURFACE,
        "pt2-crafted",
        "a crafted .pt2 that runs code when unpickled",
        "DataError",
        ("evil.pt2", "allow_unsafe=True", "--allow-unsafe-load"),
        ("evil.pt2", _crafted_pt2),
    ),
    Case(
        SURFACE,
        "pt2-upper-case",
        "a crafted .PT2 (upper-case suffix)",
        "DataError",
        ("evil.PT2", "allow_unsafe"),
        ("evil.PT2", _crafted_pt2),
    ),
    Case(
        SURFACE, "torchscript-pt", "a TorchScript .pt file", "DataError", ("net.pt", "TorchScript"), ("net.pt", _script)
    ),
    Case(SURFACE, "torchscript-ts", "a TorchScript .ts file", "DataError", ("net.ts", "pickled"), ("net.ts", _script)),
    Case(SURFACE, "torchscript-jit", "a TorchScript .jit file", "DataError", ("net.jit",), ("net.jit", _script)),
    Case(SURFACE, "torchscript-pth", "a TorchScript .pth file", "DataError", ("net.pth",), ("net.pth", _script)),
    Case(
        SURFACE,
        "opt-in",
        "the crafted .pt2 with allow_unsafe=True: loads, with a warning",
        ACCEPTED,
        (),
        ("evil.pt2", _crafted_pt2),
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_code_carrying_model_files_need_an_opt_in(tmp_path: Path, case: Case) -> None:
    name, make = case.data
    marker = tmp_path / "marker"
    path = make(tmp_path / name, marker)
    if case.error == ACCEPTED:
        with pytest.warns(MmfuseWarning, match="can run code"):
            enc = TorchFileEncoder(path, image_size=8, allow_unsafe=True)
        logging.disable(logging.WARNING)  # torch logs its own fallback warning
        try:
            enc._load()
        except ValueError:  # the crafted archive's sample inputs are the payload: it fails once it has run
            pass
        finally:
            logging.disable(logging.NOTSET)
        assert marker.exists()  # proof that the crafted file really runs code when it is loaded
        return
    with pytest.raises(DataError) as info:
        enc = TorchFileEncoder(path, image_size=8)
        enc._load()  # never reached
    assert_names(str(info.value), *case.names)
    assert not marker.exists()


def test_extract_cli_refuses_a_pt2_frame_model_without_the_opt_in(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    model = _crafted_pt2(tmp_path / "evil.pt2", marker)
    media = tmp_path / "media"
    media.mkdir()
    line = clean_failure(invoke("extract", media, "--out", tmp_path / "ds", "-e", "frames", "--frame-model", model))
    assert_names(line, "evil.pt2", "--allow-unsafe-load")
    assert not marker.exists() and not (tmp_path / "ds").exists()
