"""Export a trained :class:`~mmfuse.models.MultimodalModel` to ONNX or a ``torch.export`` program.

The exported graph takes flat tensors (:func:`export_signature`), with the batch size ``B`` and the number of
steps ``T`` dynamic, and returns what ``model(batch)`` returns: ``[B, C]`` for sample labels, ``[B, T, C]`` for
step labels. Inputs, in this order:

* ``inputs.<m>``: float32 ``[B, T, D_m]`` per modality ``m`` (sorted names), *normalised* as the model saw them in
  training (the model directory's ``normalizers.json``: ``ModalityNormalizers.transform_arrays``);
* ``masks.<m>``: bool ``[B, T]`` per modality, True where the modality is present;
* ``padding_mask``: bool ``[B, T]``, True at real steps, which must be a prefix of each row (as
  :func:`mmfuse.data.collate` pads); the graph does not check it (the eager model does);
* ``context.<name>``: int64 ``[B]`` category index per categorical context, only for a model with
  ``context_sizes`` (indices must lie in ``[0, size)``; the graph does not check them).

What cannot export is refused with the reason, read from capability attributes (STYLE rule 9): the fusion's
``supports_export`` and each temporal encoder's ``supports_export``, with the reason in their ``limitations``.
Recurrent encoders (``gru``, ``lstm``) do not export: tracing unrolls them over the example's steps, so ``T``
would not stay dynamic. :func:`export_model` checks the exported file against eager PyTorch on test batches of
several shapes (missing steps and padding included) and refuses to keep a file that disagrees.

ONNX export needs the ``export`` extra (``onnx``, ``onnxscript``, ``onnxruntime``).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse._io import atomic_write, check_unpickling_allowed
from mmfuse.errors import MmfuseError
from mmfuse.models.build import load_model
from mmfuse.models.model import MultimodalModel
from mmfuse.types import Batch, LabelLevel

__all__ = [
    "CHECK_SHAPES",
    "EXPORT_FORMATS",
    "ExportError",
    "ExportInput",
    "ExportResult",
    "example_inputs",
    "export_blockers",
    "export_model",
    "export_signature",
    "run_exported",
]

EXPORT_FORMATS = ("onnx", "torch-export")
"""The formats :func:`export_model` writes: an ONNX file, or a ``torch.export`` program (``.pt2``)."""

CHECK_SHAPES: tuple[tuple[int, int], ...] = ((3, 7), (1, 1), (2, 12))
"""``(B, T)`` of the test batches an export is checked on (none of them the shape it was traced with)."""

_TRACE_SHAPE = (2, 5)


class ExportError(MmfuseError, ValueError):
    """An exported model disagrees with the eager model, or the export itself failed."""


@dataclass(frozen=True)
class ExportInput:
    """One input of an exported model.

    Attributes:
        name: The input's name (ONNX input name; the position in the ``torch.export`` program's arguments).
        dtype: ``"float32"``, ``"bool"`` or ``"int64"``.
        shape: Symbolic shape, e.g. ``("B", "T", "3")``.
    """

    name: str
    dtype: str
    shape: tuple[str, ...]


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how it was checked.

    Attributes:
        path: The exported file.
        format: ``"onnx"`` or ``"torch-export"``.
        inputs: The exported model's inputs, in order.
        output_shape: Symbolic shape of the output (``("B", "C")`` or ``("B", "T", "C")``).
        max_abs_diff: Largest absolute difference to eager PyTorch over the checked batches.
        checked_shapes: The ``(B, T)`` shapes checked.
    """

    path: Path
    format: str
    inputs: list[ExportInput]
    output_shape: tuple[str, ...]
    max_abs_diff: float
    checked_shapes: list[tuple[int, int]] = field(default_factory=list)


def export_signature(model: MultimodalModel) -> list[ExportInput]:
    """The inputs of ``model`` once exported, in order (see the module docstring).

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> model = build_model(ModelConfig({"text": 5, "audio": 3}, out_dim=2, hidden=8))
        >>> [(i.name, i.dtype, i.shape) for i in export_signature(model)][::2]
        [('inputs.audio', 'float32', ('B', 'T', '3')), ('masks.audio', 'bool', ('B', 'T')), ('padding_mask', 'bool', ('B', 'T'))]
    """  # noqa: E501
    dims = model.config.modality_dims
    out = [ExportInput(f"inputs.{m}", "float32", ("B", "T", str(dims[m]))) for m in model.modalities]
    out += [ExportInput(f"masks.{m}", "bool", ("B", "T")) for m in model.modalities]
    out.append(ExportInput("padding_mask", "bool", ("B", "T")))
    out += [ExportInput(f"context.{c}", "int64", ("B",)) for c in sorted(model.config.context_sizes)]
    return out


def _output_shape(model: MultimodalModel) -> tuple[str, ...]:
    return ("B", "C") if model.config.label_level is LabelLevel.SAMPLE else ("B", "T", "C")


def export_blockers(model: MultimodalModel, format: str) -> list[str]:
    """Why ``model`` cannot be exported to ``format``: one reason per part that declares it cannot, or ``[]``.

    Reads the ``supports_export`` of the fusion, of each temporal encoder and of each pretrained (token)
    encoder, with the reasons from their ``limitations``. Both formats trace the model through ``torch.export``,
    so they share the flags.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> export_blockers(build_model(ModelConfig({"a": 3}, out_dim=2, hidden=8, encoder="conv")), "onnx")
        []
        >>> export_blockers(build_model(ModelConfig({"a": 3}, out_dim=2, hidden=8, encoder="gru")), "onnx")[0][:37]
        "encoder of modality 'a' (RNNEncoder):"
    """
    _check_format(format)
    reasons = []
    fusion = model.fusion
    if not getattr(fusion, "supports_export", True):
        why = fusion.limitations.get("supports_export", "supports_export=False")
        reasons.append(f"fusion {model.config.fusion!r} ({type(fusion).__name__}): {why}")
    blocked: dict[tuple[str, str, str], list[str]] = {}  # (part, class, reason) -> modalities
    for m in model.modalities:
        parts = [("pretrained encoder", model.pretrained[m])] if m in model.pretrained else []
        for part, module in [*parts, ("encoder", model.encoders[m])]:
            if not getattr(module, "supports_export", True):
                why = getattr(module, "limitations", {}).get("supports_export", "supports_export=False")
                blocked.setdefault((part, type(module).__name__, why), []).append(m)
    for (part, name, why), mods in blocked.items():
        reasons.append(f"{part} of modality {', '.join(map(repr, mods))} ({name}): {why}")
    return reasons


class _Flat(nn.Module):
    """``model(batch)`` over flat tensors in :func:`export_signature` order, as export needs."""

    def __init__(self, model: MultimodalModel) -> None:
        super().__init__()
        self.model = model
        self.modalities = model.modalities
        self.contexts = tuple(sorted(model.config.context_sizes))

    def forward(self, *tensors: Tensor) -> Tensor:
        m = len(self.modalities)
        inputs = dict(zip(self.modalities, tensors[:m], strict=True))
        masks = dict(zip(self.modalities, tensors[m : 2 * m], strict=True))
        context = dict(zip(self.contexts, tensors[2 * m + 1 :], strict=True))
        return self.model(Batch(inputs=inputs, masks=masks, padding_mask=tensors[2 * m], context=context))


def example_inputs(model: MultimodalModel, batch: int, steps: int, *, seed: int = 0) -> tuple[Tensor, ...]:
    """Random inputs in :func:`export_signature` order: row lengths from ``steps`` down, about 30% missing steps.

    Example:
        >>> from mmfuse.models import ModelConfig, build_model
        >>> model = build_model(ModelConfig({"a": 3, "b": 2}, out_dim=2, hidden=8))
        >>> [tuple(t.shape) for t in example_inputs(model, 2, 4)]
        [(2, 4, 3), (2, 4, 2), (2, 4), (2, 4), (2, 4)]
    """
    g = torch.Generator().manual_seed(seed)
    dims = model.config.modality_dims
    values = [torch.randn(batch, steps, dims[m], generator=g) for m in model.modalities]
    masks = [torch.rand(batch, steps, generator=g) > 0.3 for _ in model.modalities]
    lengths = torch.linspace(steps, 1, batch).round().long() if batch > 1 else torch.tensor([steps])  # [B]
    padding = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T], a prefix of each row
    sizes = model.config.context_sizes
    context = [torch.randint(0, sizes[c], (batch,), generator=g) for c in sorted(sizes)]
    return (*values, *masks, padding, *context)


def _check_format(format: str) -> None:
    if format not in EXPORT_FORMATS:
        raise ValueError(f"The 'format' parameter of export_model must be one of {EXPORT_FORMATS}. Got {format!r}.")


def _dynamic_shapes(signature: Sequence[ExportInput]) -> tuple[tuple[dict[int, Any], ...]]:
    batch, time = torch.export.Dim("B", min=1), torch.export.Dim("T", min=1)
    return (tuple({0: batch} if i.shape == ("B",) else {0: batch, 1: time} for i in signature),)


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs the 'export' extra: pip install 'mmfuse[export]'.") from exc
    return onnxruntime


def run_exported(
    path: str | os.PathLike[str],
    inputs: Sequence[Tensor],
    format: str | None = None,
    *,
    allow_unsafe: bool = False,
) -> Tensor:
    """Run an exported model file on inputs in :func:`export_signature` order (ONNX through onnxruntime).

    Args:
        path: A file :func:`export_model` wrote.
        inputs: The tensors, in signature order.
        format: ``"onnx"`` or ``"torch-export"``; default from the file's ending (``.onnx`` or else ``.pt2``).
        allow_unsafe: Load a ``torch-export`` (``.pt2``) file. It holds pickled data and ``torch.export.load`` can
            run code chosen by whoever wrote the file, so it is refused unless you opt in (a warning is issued even
            then: :func:`mmfuse._io.check_unpickling_allowed`). ONNX files hold no pickled data and need no opt-in.

    Raises:
        UnsafeLoadError: a ``.pt2`` file without ``allow_unsafe=True`` (a DataError, as every refused file is).
    """
    path = Path(path)
    format = format or ("onnx" if path.suffix == ".onnx" else "torch-export")
    _check_format(format)
    if format == "torch-export":
        check_unpickling_allowed(path, "torch.export", allowed=allow_unsafe, instead="export to ONNX")
        program = torch.export.load(str(path))
        with torch.no_grad():
            return program.module()(*inputs)
    session = _onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})[0])


def export_model(
    model: MultimodalModel | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str = "onnx",
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` (or the model directory it names) to ``out`` and check it against eager PyTorch.

    The file is written atomically, and only once the exported model agrees with ``model`` within ``atol`` on
    test batches of the shapes :data:`CHECK_SHAPES` (with missing steps and padding).

    Args:
        model: A :class:`MultimodalModel` (a CPU copy in evaluation mode is exported; the model itself is left
            as it is), or a directory written by :func:`mmfuse.models.save_model`.
        out: The file to write (``.onnx`` or ``.pt2`` by convention).
        format: ``"onnx"`` or ``"torch-export"``.
        atol: Largest absolute difference to eager PyTorch accepted.

    Raises:
        ValueError: an unknown format, or a model part that cannot export to it (with the reason).
        ExportError: the export failed, or the exported model disagrees with the eager one.

    Example:
        >>> import tempfile
        >>> from mmfuse.models import ModelConfig, build_model
        >>> model = build_model(ModelConfig({"a": 3, "b": 2}, out_dim=2, hidden=8, encoder="conv"))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     result = export_model(model, f"{d}/model.pt2", format="torch-export")
        >>> [i.name for i in result.inputs], result.max_abs_diff < 1e-4
        (['inputs.a', 'inputs.b', 'masks.a', 'masks.b', 'padding_mask'], True)
    """
    _check_format(format)
    if not isinstance(model, MultimodalModel):
        model = load_model(model)
    # Export a CPU copy in evaluation mode: the caller's model keeps its device and mode, and the exported
    # graph runs wherever onnxruntime / torch.export.load puts it.
    model = copy.deepcopy(model).cpu().eval()
    blockers = export_blockers(model, format)
    if blockers:
        raise ValueError(f"This model cannot be exported to {format}: " + "; ".join(blockers) + ".")
    signature = export_signature(model)
    flat = _Flat(model).eval()
    trace = example_inputs(model, *_TRACE_SHAPE, seed=1)
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # the exporter logs every optional operator library it skips
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' own chatter (deprecations, graph notes)
            if format == "torch-export":
                program = torch.export.export(flat, trace, dynamic_shapes=_dynamic_shapes(signature))
                writer = lambda tmp: torch.export.save(program, str(tmp))  # noqa: E731
            else:
                _onnxruntime()
                onnx_program = torch.onnx.export(
                    flat,
                    trace,
                    dynamo=True,
                    dynamic_shapes=_dynamic_shapes(signature),
                    input_names=[i.name for i in signature],
                    output_names=["output"],
                    verbose=False,
                )
                if onnx_program is None:  # pragma: no cover - the dynamo exporter always returns a program
                    raise ExportError("torch.onnx.export returned no program.")
                writer = lambda tmp: onnx_program.save(str(tmp))  # noqa: E731
    except (ImportError, ValueError):
        raise
    except Exception as exc:
        raise ExportError(f"Exporting the model to {format} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        onnx_logger.setLevel(level)

    suffix = ".onnx" if format == "onnx" else ".pt2"

    def write_checked(tmp: Path) -> None:
        writer(tmp)
        worst = 0.0
        for k, (b, t) in enumerate(CHECK_SHAPES):
            inputs = example_inputs(model, b, t, seed=100 + k)
            with torch.no_grad():
                expected = flat(*inputs)
            with warnings.catch_warnings():  # the file this call has just written itself
                warnings.simplefilter("ignore")
                got = run_exported(tmp, inputs, format, allow_unsafe=True)
            if got.shape != expected.shape:
                raise ExportError(
                    f"The exported model gives shape {list(got.shape)} on a batch of B={b}, T={t}; the eager "
                    f"model gives {list(expected.shape)}."
                )
            worst = max(worst, float((got.float() - expected).abs().max()))
        if not worst <= atol:
            raise ExportError(
                f"The exported model differs from eager PyTorch by up to {worst:.3g} (atol {atol:g}) on test "
                f"batches of shapes {list(CHECK_SHAPES)}; the file was not kept."
            )
        checked.append(worst)

    checked: list[float] = []
    path = atomic_write(out, write_checked, suffix=suffix)
    return ExportResult(
        path=path,
        format=format,
        inputs=signature,
        output_shape=_output_shape(model),
        max_abs_diff=checked[0],
        checked_shapes=list(CHECK_SHAPES),
    )
