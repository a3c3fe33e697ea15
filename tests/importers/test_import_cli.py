"""``mmfuse import csd | mmsa | folders``: thin commands over the importers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from mmfuse.cli._app import app
from mmfuse.data import open_dataset

pytest.importorskip("h5py")

from mmfuse.importers import write_csd


def test_import_csd_command(tmp_path):
    words = {v: (np.array([[0.0, 0.5], [0.5, 1.0]]), np.array([[b"a"], [b"b"]])) for v in "abc"}
    audio = {v: (np.c_[np.arange(10) / 10, np.arange(1, 11) / 10], np.arange(20.0).reshape(10, 2)) for v in "abc"}
    labels = {v: (np.array([[0.0, 1.0]]), np.array([[0.5]])) for v in "abc"}
    w = write_csd(tmp_path / "w.csd", words, root_name="words")
    a = write_csd(tmp_path / "a.csd", audio, root_name="covarep")
    lab = write_csd(tmp_path / "l.csd", labels, root_name="All Labels")
    args = ["import", "csd", "--seq", f"words={w}", "--seq", f"audio={a}", "--labels", str(lab)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    assert "Wrote data set" in res.output
    rec = open_dataset(tmp_path / "ds")[0]
    np.testing.assert_allclose(rec.values["audio"], [[4.0, 5.0], [14.0, 15.0]])  # frames 0-4 and 5-9 averaged
    bad = CliRunner().invoke(app, ["import", "csd", "--seq", "words", "--labels", str(lab), "--out", "x"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output


def test_import_mmsa_command_refuses_without_flag(tmp_path):
    split = {"text": np.ones((2, 3, 2)), "audio": np.ones((2, 3, 1)), "vision": np.ones((2, 3, 1)),
             "regression_labels": np.array([1.0, -1.0])}  # fmt: skip
    src = tmp_path / "f.pkl"
    src.write_bytes(pickle.dumps({"train": split, "valid": split, "test": split}))
    res = CliRunner().invoke(app, ["import", "mmsa", str(src), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 2 and "can run code" in res.output and not (tmp_path / "ds").exists()
    res = CliRunner().invoke(app, ["import", "mmsa", str(src), "--out", str(tmp_path / "ds"), "--allow-pickle"])
    assert res.exit_code == 0, res.output
    # the pickle warning is one line of the CLI's warning display, not Python's "file:line: Warning" + source line
    shown = [line for line in res.stderr.splitlines() if "allow_pickle=True" in line]
    assert len(shown) == 1 and shown[0].startswith(f"warning: Loading {src} with allow_pickle=True"), res.stderr
    assert "MmfuseWarning" not in res.stderr and "warnings.warn" not in res.stderr
    assert len(open_dataset(tmp_path / "ds")) == 6
