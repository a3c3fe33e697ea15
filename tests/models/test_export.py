"""``mmfuse.models.export`` and ``mmfuse export``: exported models equal eager PyTorch with dynamic B and T.

Exports take seconds each, so one ONNX and one ``torch.export`` file are shared by the module.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from mmfuse.cli._app import app
from mmfuse.errors import MmfuseWarning, UnsafeLoadError
from mmfuse.models import ModelConfig, MultimodalModel, build_model, save_model
from mmfuse.models.export import (
    ExportError,
    ExportResult,
    example_inputs,
    export_blockers,
    export_model,
    export_signature,
    run_exported,
)

pytest.importorskip("onnxruntime")


def _model(**changes: object) -> MultimodalModel:
    kwargs: dict[str, object] = {"out_dim": 3, "hidden": 8, "encoder": "conv", "num_heads": 2}
    kwargs.update(changes)
    torch.manual_seed(0)
    return build_model(ModelConfig({"audio.lld": 3, "text": 5}, **kwargs)).eval()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultimodalModel, ExportResult]:
    """A step-level decision-level fusion with categorical context: every kind of input the signature has."""
    model = _model(fusion="late", label_level="step", context_sizes={"domain": 3})
    return model, export_model(model, tmp_path_factory.mktemp("onnx") / "model.onnx", format="onnx")


@pytest.fixture(scope="module")
def program_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultimodalModel, ExportResult]:
    """A causal sample-level model (what compare --causal trains) as a torch.export program."""
    model = _model(
        fusion="cross_attention",
        fusion_kwargs={"causal": True},
        encoder="transformer",
        causal=True,
        bidirectional=False,
        pooling="last",
    )
    return model, export_model(model, tmp_path_factory.mktemp("pt2") / "model.pt2", format="torch-export")


@pytest.fixture(scope="module")
def onnx_transformer_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultimodalModel, ExportResult]:
    """Step-level, two transformer-encoder layers (AttentionBlocks) per modality, as ONNX."""
    model = _model(encoder="transformer", encoder_layers=2, fusion="concat", label_level="step")
    return model, export_model(model, tmp_path_factory.mktemp("onnx-tf") / "model.onnx", format="onnx")


@pytest.mark.parametrize("which", ["onnx_export", "onnx_transformer_export", "program_export"])
@pytest.mark.parametrize(("batch", "steps"), [(4, 9), (1, 3), (5, 1)])
def test_exported_model_equals_eager_on_new_shapes(
    request: pytest.FixtureRequest, which: str, batch: int, steps: int
) -> None:
    model, result = request.getfixturevalue(which)
    inputs = example_inputs(model, batch, steps, seed=7)
    inputs[len(model.modalities)][0, :2] = False  # a modality missing at the first steps of row 0
    with torch.no_grad():
        expected = _eager(model, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the .pt2 opt-in warning; its own test is below
        got = run_exported(result.path, inputs, allow_unsafe=True)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def _eager(model: MultimodalModel, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    from mmfuse.types import Batch

    mods = model.modalities
    m = len(mods)
    contexts = sorted(model.config.context_sizes)
    return model(
        Batch(
            inputs=dict(zip(mods, inputs[:m], strict=True)),
            masks=dict(zip(mods, inputs[m : 2 * m], strict=True)),
            padding_mask=inputs[2 * m],
            context=dict(zip(contexts, inputs[2 * m + 1 :], strict=True)),
        )
    )


def test_onnx_inputs_are_named_as_documented_with_dynamic_batch_and_time(
    onnx_export: tuple[MultimodalModel, ExportResult],
) -> None:
    import onnxruntime

    model, result = onnx_export
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert (
        names
        == [i.name for i in export_signature(model)]
        == [
            "inputs.audio.lld",
            "inputs.text",
            "masks.audio.lld",
            "masks.text",
            "padding_mask",
            "context.domain",
        ]
    )
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert isinstance(shapes["inputs.text"][0], str) and isinstance(shapes["inputs.text"][1], str)  # symbolic
    assert shapes["inputs.text"][2] == 5
    assert result.output_shape == ("B", "T", "C") and result.max_abs_diff < 1e-4


def test_recurrent_encoders_are_refused_with_the_reason(tmp_path: Path) -> None:
    model = _model(encoder="gru")
    reasons = export_blockers(model, "onnx")
    assert len(reasons) == 1 and "'audio.lld', 'text' (RNNEncoder)" in reasons[0] and "unrolls" in reasons[0]
    with pytest.raises(ValueError, match="cannot be exported to torch-export: encoder of modality"):
        export_model(model, tmp_path / "m.pt2", format="torch-export")
    assert not (tmp_path / "m.pt2").exists()


def test_a_fusion_that_declares_it_cannot_export_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = _model(fusion="gated")
    cls = type(model.fusion)
    monkeypatch.setattr(cls, "supports_export", False)
    monkeypatch.setattr(cls, "limitations", {"supports_export": "data-dependent control flow"})
    with pytest.raises(ValueError, match=r"fusion 'gated' \(GatedFusion\): data-dependent control flow"):
        export_model(model, tmp_path / "m.onnx")


def test_an_export_that_disagrees_with_eager_is_not_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import mmfuse.models.export as export

    real = export.run_exported
    monkeypatch.setattr(export, "run_exported", lambda *a, **k: real(*a, **k) + 1e-2)
    with pytest.raises(ExportError, match=r"differs from eager PyTorch by up to 0\.01"):
        export_model(_model(encoder="none"), tmp_path / "m.pt2", format="torch-export")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one is left


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'format' parameter of export_model must be one of .*Got 'tflite'"):
        export_model(_model(), tmp_path / "m", format="tflite")


def test_cli_exports_a_model_directory(tmp_path: Path) -> None:
    save_model(_model(encoder="none", fusion="concat"), tmp_path / "model")
    out = tmp_path / "model.pt2"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "model"), "--format", "torch-export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "inputs.audio.lld: float32 [B, T, 3]" in result.output and "max abs difference" in result.output
    refused = CliRunner().invoke(app, ["export", str(tmp_path / "model"), "--format", "tflite", "--out", str(out)])
    assert refused.exit_code != 0 and "must be one of" in refused.output


def test_export_leaves_the_callers_model_as_it_was(tmp_path: Path) -> None:
    model = _model(encoder="none", fusion="concat").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, tmp_path / "m.pt2", format="torch-export")
    assert model.training  # not switched to eval behind the caller's back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_torch_export_file_is_refused_without_the_unsafe_opt_in(program_export: Any) -> None:
    model, result = program_export
    inputs = example_inputs(model, 2, 3, seed=1)
    with pytest.raises(UnsafeLoadError, match=r"refusing to load this torch.export file: it holds pickled data"):
        run_exported(result.path, inputs)
    with pytest.warns(MmfuseWarning, match="allow_unsafe=True"):
        run_exported(result.path, inputs, allow_unsafe=True)
