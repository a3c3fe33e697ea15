"""Generic building blocks: mask-aware primitives, attention, pooling, MLPs, temporal and pretrained encoders."""

from __future__ import annotations

from mmfuse.layers.attention import AttentionBlock, MaskedMultiheadAttention, resolve_num_heads
from mmfuse.layers.dropout import Dropout
from mmfuse.layers.encoders import (
    ENCODERS,
    ConvEncoder,
    IdentityEncoder,
    RNNEncoder,
    TransformerEncoder,
    make_encoder,
)
from mmfuse.layers.masking import all_present, masked_mean, masked_softmax, zero_missing
from mmfuse.layers.mlp import ACTIVATIONS, MLP, make_activation
from mmfuse.layers.pooling import POOLINGS, AttentionPool, LastStepPool, MeanPool, make_pooling
from mmfuse.layers.pretrained import (
    PretrainedTextEncoder,
    backbone_parameter_groups,
    cached_text_embeddings,
    list_pretrained,
    register_pretrained,
    resolve_pretrained,
)

__all__ = [
    "ACTIVATIONS",
    "ENCODERS",
    "MLP",
    "POOLINGS",
    "AttentionBlock",
    "AttentionPool",
    "ConvEncoder",
    "Dropout",
    "IdentityEncoder",
    "LastStepPool",
    "MaskedMultiheadAttention",
    "MeanPool",
    "PretrainedTextEncoder",
    "RNNEncoder",
    "TransformerEncoder",
    "all_present",
    "backbone_parameter_groups",
    "cached_text_embeddings",
    "list_pretrained",
    "make_activation",
    "make_encoder",
    "make_pooling",
    "masked_mean",
    "masked_softmax",
    "register_pretrained",
    "resolve_num_heads",
    "resolve_pretrained",
    "zero_missing",
]
