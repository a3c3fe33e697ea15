"""Public contract checks: validate your own components the way mmfuse validates its built-ins.

The names are those of :mod:`mmfuse.testing.fusion_contract` (its ``__all__`` is this package's).

Example:
    >>> from mmfuse.testing import check_fusion
    >>> all(r.status != "failed" for r in check_fusion("weighted", checks=["output_shape", "all_missing"]))
    True
"""

from __future__ import annotations

from mmfuse.testing import fusion_contract
from mmfuse.testing.fusion_contract import *  # noqa: F403  (re-exported: the contract's __all__ is the surface)

__all__ = list(fusion_contract.__all__)
