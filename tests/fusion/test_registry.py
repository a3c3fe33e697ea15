from __future__ import annotations

import pytest

from mmfuse.fusion import (
    ConcatFusion,
    Fusion,
    create_fusion,
    fusion_kwargs,
    get_fusion_class,
    is_fusion,
    list_fusions,
    register_fusion,
)


def test_builtins_registered() -> None:
    assert {"concat", "gated", "weighted", "cross_attention"} <= set(list_fusions())
    assert list_fusions() == sorted(list_fusions())
    assert is_fusion("concat") and not is_fusion("no-such-fusion")
    assert get_fusion_class("concat") is ConcatFusion


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown fusion 'bogus'.*concat.*gated"):
        create_fusion("bogus", {"a": 2}, 4)


def test_duplicate_name_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_fusion("gated")(ConcatFusion)


def test_registering_a_non_fusion_refused() -> None:
    with pytest.raises(TypeError, match="subclass of Fusion"):
        register_fusion("not-a-fusion-test")(dict)  # type: ignore[arg-type]
    assert not is_fusion("not-a-fusion-test")


def test_limitation_without_reason_refused() -> None:
    class NoExport(ConcatFusion):
        supports_export = False

    with pytest.raises(TypeError, match="supports_export=False but gives no reason"):
        register_fusion("no-export-test")(NoExport)
    assert not is_fusion("no-export-test")


def test_unknown_kwarg_lists_accepted() -> None:
    with pytest.raises(ValueError, match=r"\['heads'\].*accepted.*num_heads"):
        create_fusion("cross_attention", {"a": 2, "b": 3}, 8, heads=2)


def test_kwargs_forwarded() -> None:
    f = create_fusion("cross_attention", {"a": 2, "b": 3}, 8, causal=True, num_heads=2)
    assert isinstance(f, Fusion) and f.is_causal
    assert fusion_kwargs("gated") == {"dropout": 0.0, "eps": 1e-6}
