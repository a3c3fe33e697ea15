"""Public contract checks: validate your own components the way mmfuse validates its built-ins.

Example:
    >>> from mmfuse.testing import check_fusion
    >>> all(r.status != "failed" for r in check_fusion("weighted", checks=["output_shape", "all_missing"]))
    True
"""

from __future__ import annotations

from mmfuse.testing.fusion_contract import (
    DEFAULT_MODALITY_DIMS,
    DEFAULT_OUT_DIM,
    FUSION_CHECKS,
    CheckResult,
    CheckSkipped,
    FusionContractError,
    FusionFactory,
    check_all_missing,
    check_batch_independence,
    check_builds,
    check_causality,
    check_compile,
    check_deepcopy,
    check_determinism,
    check_export,
    check_fusion,
    check_gradients,
    check_input_order,
    check_nan_in_masked_steps,
    check_output_shape,
    check_state_dict_roundtrip,
    fusion_variants,
    make_fusion_inputs,
    resolve_factory,
    run_check,
)

__all__ = [
    "DEFAULT_MODALITY_DIMS",
    "DEFAULT_OUT_DIM",
    "FUSION_CHECKS",
    "CheckResult",
    "CheckSkipped",
    "FusionContractError",
    "FusionFactory",
    "check_all_missing",
    "check_batch_independence",
    "check_builds",
    "check_causality",
    "check_compile",
    "check_deepcopy",
    "check_determinism",
    "check_export",
    "check_fusion",
    "check_gradients",
    "check_input_order",
    "check_nan_in_masked_steps",
    "check_output_shape",
    "check_state_dict_roundtrip",
    "fusion_variants",
    "make_fusion_inputs",
    "resolve_factory",
    "run_check",
]
