"""The attention fusions' shared base (``mmfuse.fusion._attention.AttentionFusion``).

Their parameter names are what saved model directories hold (``load_model`` checks them), so they are spelled
out here: a refactor that renames a submodule fails this file before it breaks a user's model.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mmfuse.fusion import ATCMFusion, CrossAttentionFusion, GraphAttentionFusion, MulTFusion
from mmfuse.fusion._attention import AttentionFusion

DIMS = {"b": 3, "a": 2}  # canonical order: a, b
CLASSES = [ATCMFusion, CrossAttentionFusion, GraphAttentionFusion, MulTFusion]


def _pair(prefix: str, *names: str) -> list[str]:
    return [f"{prefix}.{n}" for n in names]


def _linear(prefix: str) -> list[str]:
    return _pair(prefix, "weight", "bias")


def _mha(prefix: str) -> list[str]:
    return [k for p in ("q", "k", "v", "out") for k in _linear(f"{prefix}.{p}_proj")]


def _block(prefix: str, *, cross: bool) -> list[str]:
    kv = _linear(f"{prefix}.norm_kv") if cross else []
    ffn = [*_linear(f"{prefix}.ffn.0"), *_linear(f"{prefix}.ffn.3")]
    return [*_linear(f"{prefix}.norm_q"), *kv, *_mha(f"{prefix}.attn"), *_linear(f"{prefix}.norm_ff"), *ffn]


def _gat(prefix: str) -> list[str]:
    return _pair(prefix, "att_dst", "att_src", "bias", "lin.weight")


TOKENS = ["modality_embedding", *_linear("in_proj.0"), *_linear("in_proj.1")]
ENCODER_LAYER = [
    *_linear("global_encoder.layers.0.norm_q"),
    *_mha("global_encoder.layers.0.attn"),
    *_linear("global_encoder.layers.0.norm_ff"),
    *_linear("global_encoder.layers.0.ffn.0"),
    *_linear("global_encoder.layers.0.ffn.3"),
    *_linear("global_encoder.norm"),
]
STATE_KEYS = {
    ATCMFusion: [
        *TOKENS,
        "offset_embedding",
        "query",
        *_mha("local_attn"),
        *ENCODER_LAYER,
        *_linear("out_norm"),
        *_linear("out_proj"),
    ],
    CrossAttentionFusion: [
        *TOKENS,
        *_mha("attn.0"),
        *_mha("attn.1"),
        *_linear("norms.0"),
        *_linear("norms.1"),
        *_linear("out_proj"),
    ],
    GraphAttentionFusion: [
        *TOKENS,
        *_gat("intra.0.0"),
        *_gat("intra.0.1"),
        *_linear("intra_norms.0.0"),
        *_linear("intra_norms.0.1"),
        *_gat("cross"),
        *_linear("cross_norm"),
        *_linear("out_proj"),
    ],
    MulTFusion: [
        *_linear("in_proj.0"),
        *_linear("in_proj.1"),
        *(k for i in (0, 1) for k in [*_block(f"cross.{i}.blocks.0", cross=True), *_linear(f"cross.{i}.norm")]),
        *(
            k
            for i in (0, 1)
            for k in [*_block(f"self_attn.{i}.blocks.0", cross=False), *_linear(f"self_attn.{i}.norm")]
        ),
        *_linear("out_proj"),
    ],
}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_parameter_names_are_those_saved_model_directories_hold(cls: Any) -> None:
    assert sorted(cls(DIMS, 4).state_dict()) == sorted(STATE_KEYS[cls])


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_input_projections_are_created_first(cls: Any) -> None:
    """Seeded initialisation depends on creation order: the per-modality input projections come first."""
    torch.manual_seed(3)
    fusion = cls(DIMS, 4, hidden=8)
    torch.manual_seed(3)
    first = nn.Conv1d(2, 8, 1) if cls is MulTFusion else nn.Linear(2, 8)
    torch.testing.assert_close(fusion.in_proj[0].weight, first.weight, rtol=0, atol=0)
    torch.testing.assert_close(fusion.in_proj[0].bias, first.bias, rtol=0, atol=0)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_shared_settings(cls: Any) -> None:
    assert issubclass(cls, AttentionFusion)
    assert cls.is_causal is False and cls.contract_variants == ({}, {"causal": True})
    fusion = cls(DIMS, 4, hidden=6, causal=True, dropout=0.25)
    assert (fusion.hidden, fusion.num_heads, fusion.is_causal, fusion.dropout.p) == (6, 2, True, 0.25)
    assert "hidden=6, num_heads=2, causal=True" in repr(fusion)
    assert cls(DIMS, 4, hidden=5).num_heads == 1 and cls(DIMS, 4, hidden=8, num_heads=2).num_heads == 2


def test_hidden_defaults_to_out_dim_except_where_the_signature_says_otherwise() -> None:
    assert [cls(DIMS, 12).hidden for cls in CLASSES] == [12, 12, 12, 32]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": 0}, "'hidden' parameter of {} must be a positive integer. Got 0 instead"),
        (
            {"hidden": 8, "num_heads": 3},
            r"'num_heads' parameter of {} must be a positive divisor of hidden \(8\). Got 3",
        ),
        ({"hidden": 8, "num_heads": True}, r"'num_heads' parameter of {} must be a positive divisor of hidden \(8\)"),
        ({"causal": 1}, "'causal' parameter of {} must be a bool. Got 1 instead"),
        ({"dropout": 1.0}, r"'dropout' parameter of {} must be a number in \[0, 1\). Got 1.0 instead"),
    ],
)
def test_shared_errors_name_the_fusion(cls: Any, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.format(cls.__name__)):
        cls(DIMS, 4, **kwargs)


def test_embed_projects_and_tags_each_modality() -> None:
    fusion = CrossAttentionFusion(DIMS, 4)
    values = [torch.randn(2, 3, 2), torch.randn(2, 3, 3)]
    tokens = fusion.embed(values)
    assert [tuple(t.shape) for t in tokens] == [(2, 3, 4), (2, 3, 4)]
    torch.testing.assert_close(tokens[1], fusion.in_proj[1](values[1]) + fusion.modality_embedding[1])
