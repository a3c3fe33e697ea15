"""The fusion zoo and its registry.

A fusion maps per-modality sequences ``{m: [B, T, D_m]}`` with availability masks ``{m: [B, T]}`` to one
sequence ``[B, T, out_dim]``. Build one by name with :func:`create_fusion`; add your own with
:func:`register_fusion` and check it with :func:`mmfuse.testing.check_fusion`.
"""

from __future__ import annotations

# Importing the zoo modules registers the built-in fusions.
from mmfuse.fusion.atcm import ATCMFusion
from mmfuse.fusion.base import CAPABILITIES, Fusion
from mmfuse.fusion.bottleneck import BottleneckFusion
from mmfuse.fusion.concat import ConcatFusion
from mmfuse.fusion.cross_attention import CrossAttentionFusion
from mmfuse.fusion.gated import GatedFusion
from mmfuse.fusion.graph import GraphAttentionFusion
from mmfuse.fusion.late import LateFusion
from mmfuse.fusion.mult import MulTFusion
from mmfuse.fusion.registry import (
    create_fusion,
    fusion_kwargs,
    get_fusion_class,
    is_fusion,
    list_fusions,
    register_fusion,
)
from mmfuse.fusion.tensor import LowRankFusion, TensorFusion
from mmfuse.fusion.uncertainty import UncertainPrediction, UncertaintyLateFusion, gaussian_nll_terms
from mmfuse.fusion.weighted import WeightedFusion

__all__ = [
    "CAPABILITIES",
    "ATCMFusion",
    "BottleneckFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "Fusion",
    "GatedFusion",
    "GraphAttentionFusion",
    "LateFusion",
    "LowRankFusion",
    "MulTFusion",
    "TensorFusion",
    "UncertainPrediction",
    "UncertaintyLateFusion",
    "WeightedFusion",
    "create_fusion",
    "fusion_kwargs",
    "gaussian_nll_terms",
    "get_fusion_class",
    "is_fusion",
    "list_fusions",
    "register_fusion",
]
