"""``mmfuse export``: a trained model directory to an ONNX file or a ``torch.export`` program."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli._common import console

__all__ = ["export"]


def export(
    model_dir: Annotated[Path, typer.Argument(help="A model directory (e.g. runs/X/models/<fusion>-seed0).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (.onnx or .pt2).")],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx or torch-export.")] = "onnx",
    atol: Annotated[
        float, typer.Option("--atol", min=0.0, help="Largest difference to eager PyTorch accepted on test batches.")
    ] = 1e-4,
) -> None:
    """Export a trained model with dynamic batch and time, checked against eager PyTorch on test batches.

    Inputs of the exported model, in order: inputs.<m> float32 [B, T, D_m] (normalised, as in training),
    masks.<m> bool [B, T], padding_mask bool [B, T], then context.<name> int64 [B] for a model with context;
    the output is [B, C] (sample labels) or [B, T, C] (step labels).
    """
    from mmfuse.models.export import export_model

    result = export_model(model_dir, out, format=format, atol=atol)
    console.print(f"Wrote {result.path} ({result.format})", highlight=False)
    for item in result.inputs:
        console.print(f"  input  {item.name}: {item.dtype} [{', '.join(item.shape)}]", highlight=False, markup=False)
    console.print(f"  output output: float32 [{', '.join(result.output_shape)}]", highlight=False, markup=False)
    shapes = ", ".join(f"B={b} T={t}" for b, t in result.checked_shapes)
    console.print(
        f"Checked against eager PyTorch on test batches ({shapes}): max abs difference {result.max_abs_diff:.2e}",
        highlight=False,
    )
