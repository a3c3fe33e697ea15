"""Live use: a fusion buffer over the offline alignment code, incremental stepping, stabilising, serving.

* :class:`FusionBuffer`: time-stamped events per modality in (out of order within a bounded lateness),
  aligned grid steps out, through :func:`mmfuse.align.align_stream` itself.
* :class:`IncrementalModel`: a trained causal model stepped with cached state (recurrent state, convolution
  windows, key/value caches).
* :class:`StreamingSession`: buffer -> normalisers -> model -> :class:`Stabilizer` for one stream;
  :func:`step_sessions` steps many streams as one batch.
* :func:`stabilize`, :func:`stability_metrics`, :func:`threshold_sweep`: smoothing with uncertainty gating.
* ``mmfuse.stream.server`` / ``mmfuse.stream.client``: the WebSocket + HTTP server (``mmfuse serve``) and its
  client (``mmfuse stream``); they need the ``serve`` extra (FastAPI, uvicorn, websockets).

See ``docs/streaming.md``.

Example:
    >>> import numpy as np
    >>> from mmfuse.stream import FusionBuffer, StreamSpec
    >>> buf = FusionBuffer({"a": StreamSpec(1, rate=10.0)}, rate=5.0, start=0.0)
    >>> _ = buf.push_many("a", np.arange(10) / 10, np.arange(10.0))
    >>> buf.pop_ready().values["a"][:, 0].tolist()
    [0.0, 2.0, 4.0, 6.0]
"""

from __future__ import annotations

from mmfuse.stream.buffer import AlignedWindow, FusionBuffer, LateEventWarning, StreamSpec, pop_ready_many
from mmfuse.stream.engine import POINTWISE_FUSIONS, IncrementalModel, State, split_states, stack_states
from mmfuse.stream.session import (
    STREAM_CONFIG_FILE,
    StepResult,
    StreamConfig,
    StreamingSession,
    collect_sessions,
    load_model_assets,
    load_stream_config,
    recorded_stream_config,
    save_stream_config,
    step_sessions,
)
from mmfuse.stream.stabilize import (
    StabilizedOutput,
    Stabilizer,
    normalized_entropy,
    stability_metrics,
    stabilize,
    threshold_sweep,
)

__all__ = [
    "POINTWISE_FUSIONS",
    "STREAM_CONFIG_FILE",
    "AlignedWindow",
    "FusionBuffer",
    "IncrementalModel",
    "LateEventWarning",
    "StabilizedOutput",
    "Stabilizer",
    "State",
    "StepResult",
    "StreamConfig",
    "StreamSpec",
    "StreamingSession",
    "collect_sessions",
    "load_model_assets",
    "load_stream_config",
    "normalized_entropy",
    "pop_ready_many",
    "recorded_stream_config",
    "save_stream_config",
    "split_states",
    "stability_metrics",
    "stabilize",
    "stack_states",
    "step_sessions",
    "threshold_sweep",
]
