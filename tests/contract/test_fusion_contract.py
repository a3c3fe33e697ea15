"""The public fusion contract over every registered fusion (and its declared variants)."""

from __future__ import annotations

import pytest

from mmfuse.fusion import list_fusions
from mmfuse.testing import FUSION_CHECKS, fusion_variants, run_check

VARIANTS = fusion_variants()


def test_every_registered_fusion_is_covered() -> None:
    covered = {vid.split("[")[0] for vid, _ in VARIANTS}
    assert covered == set(list_fusions())
    assert {"concat", "gated", "weighted", "cross_attention"} <= covered


@pytest.mark.contract
@pytest.mark.parametrize("check", list(FUSION_CHECKS))
@pytest.mark.parametrize(("variant", "factory"), VARIANTS, ids=[vid for vid, _ in VARIANTS])
def test_fusion_contract(variant: str, factory, check: str, device: str) -> None:
    result = run_check(check, factory, device=device)
    if result.status == "skipped":
        pytest.skip(result.message)
    assert result.status == "passed", f"{variant}: {check}: {result.message}"
