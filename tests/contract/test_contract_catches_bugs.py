"""The contract suite must fail fusions that break the contract (otherwise it proves nothing)."""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from mmfuse.fusion import Fusion
from mmfuse.testing import FUSION_CHECKS, FusionContractError, check_fusion, run_check


class _SumFusion(Fusion):
    """A correct minimal fusion: project each modality and sum."""

    def __init__(self, modality_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(modality_dims, out_dim)
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in self.modality_dims.values())

    def fuse(self, values: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        out = torch.stack([p(x) for p, x in zip(self.proj, values, strict=True)]).sum(0)
        return out, None


class _MultipliesByMask(_SumFusion):
    """Bypasses the base class zeroing and multiplies by the mask: NaN leaks."""

    def forward_with_weights(self, inputs, masks):  # type: ignore[override]
        values = [inputs[m] * masks[m].unsqueeze(-1) for m in self.modalities]
        return self.fuse(values, [masks[m] for m in self.modalities])


class _ClaimsCausalButPeeks(_SumFusion):
    """Declares is_causal but mixes in the sequence mean."""

    def fuse(self, values, masks):  # type: ignore[override]
        out, _ = super().fuse(values, masks)
        return out + out.mean(dim=1, keepdim=True), None


class _MixesBatch(_SumFusion):
    def fuse(self, values, masks):  # type: ignore[override]
        out, _ = super().fuse(values, masks)
        return out + out.mean(dim=0, keepdim=True), None


class _DeadParameter(_SumFusion):
    def __init__(self, modality_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(modality_dims, out_dim)
        self.unused = nn.Parameter(torch.zeros(3))


class _OrderSensitive(_SumFusion):
    def forward_with_weights(self, inputs, masks):  # type: ignore[override]
        values = [torch.where(masks[m].unsqueeze(-1), inputs[m], 0.0) for m in inputs]  # dict order, not sorted
        return self.fuse(values, [masks[m] for m in inputs])


class _DropsAnOutput(_SumFusion):
    def fuse(self, values, masks):  # type: ignore[override]
        out, _ = super().fuse(values, masks)
        return out[..., :-1], None


class _CausalFlagNotABool(_SumFusion):
    is_causal = "yes"  # type: ignore[assignment]


class _UnseededInit(_SumFusion):
    """Draws a weight from Python's own generator, which the check's torch seed does not fix."""

    def __init__(self, modality_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(modality_dims, out_dim)
        self.bias = nn.Parameter(torch.tensor(random.random()))

    def fuse(self, values, masks):  # type: ignore[override]
        out, _ = super().fuse(values, masks)
        return out + self.bias, None


class _StateOutsideStateDict(_SumFusion):
    """Keeps a random offset as a plain attribute: load_state_dict cannot carry it."""

    def __init__(self, modality_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(modality_dims, out_dim)
        self.offset = torch.randn(out_dim)

    def fuse(self, values, masks):  # type: ignore[override]
        out, _ = super().fuse(values, masks)
        return out + self.offset, None


class _CopySharesParameters(_SumFusion):
    def __deepcopy__(self, memo: dict[int, Any]) -> _CopySharesParameters:
        return self


class _DeclaresNoExport(_SumFusion):
    supports_export: ClassVar[bool] = False
    limitations: ClassVar[Mapping[str, str]] = {"supports_export": "uses a data-dependent Python branch"}


DIMS = {"a": 3, "b": 3, "c": 3}  # equal sizes so an order-sensitive fusion still runs


def test_correct_minimal_fusion_passes(device: str) -> None:
    results = check_fusion(_SumFusion, DIMS, device=device, checks=["output_shape", "gradients", "causality"])
    assert [r.status for r in results] == ["passed", "passed", "passed"]


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (_MultipliesByMask, "nan_in_masked_steps"),
        (_MultipliesByMask, "all_missing"),
        (_ClaimsCausalButPeeks, "causality"),
        (_MixesBatch, "batch_independence"),
        (_DeadParameter, "gradients"),
        (_OrderSensitive, "input_order"),
        (_DropsAnOutput, "output_shape"),
        (_DropsAnOutput, "all_missing"),
        (_CausalFlagNotABool, "builds"),
        (_UnseededInit, "determinism"),
        (_StateOutsideStateDict, "state_dict_roundtrip"),
        (_CopySharesParameters, "deepcopy"),
    ],
)
def test_broken_fusion_fails_its_check(cls: type[Fusion], check: str, device: str) -> None:
    result = run_check(check, cls, DIMS, device=device)
    assert result.status == "failed", result
    assert result.message


def test_check_fusion_raises_listing_failures() -> None:
    with pytest.raises(FusionContractError, match="causality"):
        check_fusion(_ClaimsCausalButPeeks, DIMS, checks=["output_shape", "causality"])


def test_declared_limitation_skips_with_reason() -> None:
    result = run_check("export", _DeclaresNoExport, DIMS)
    assert result.status == "skipped"
    assert "data-dependent" in result.message


def test_factory_must_return_a_fusion() -> None:
    result = run_check("builds", lambda dims, out: nn.Linear(3, out), DIMS)
    assert result.status == "failed"
    assert "Fusion" in result.message


def test_unknown_check_name() -> None:
    with pytest.raises(ValueError, match="Valid names"):
        run_check("nonsense", "concat")


def test_every_check_is_public_with_the_shared_signature() -> None:
    shared = ["fusion", "modality_dims", "out_dim", "device"]
    for name, check in FUSION_CHECKS.items():
        assert check.__name__ == f"check_{name}"
        assert check.__doc__, name
        params = inspect.signature(check).parameters
        assert list(params)[:4] == shared, (name, list(params))
        assert params["device"].kind is inspect.Parameter.KEYWORD_ONLY


def test_a_correct_fusion_passes_the_checks_the_broken_ones_fail() -> None:
    checks = ["builds", "output_shape", "determinism", "state_dict_roundtrip", "deepcopy"]
    assert [r.status for r in check_fusion(_SumFusion, DIMS, checks=checks)] == ["passed"] * len(checks)
