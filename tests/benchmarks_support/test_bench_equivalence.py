"""The alignment equivalence claim of benchmarks/bench_align_sdk.py, on a tiny case (skipped without the SDK)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmsdk.mmdatasdk", reason="cmu-multimodal-sdk is not installed (pip install 'mmfuse[bench]')")

pytestmark = pytest.mark.slow  # importing the SDK dominates (several seconds on a loaded machine)

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_align_sdk.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_align_sdk_under_test", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_same_values_when_words_fall_on_frame_boundaries():
    bench = _bench()
    data = bench.make_video(4.0, seed=0)
    ours, sdk = bench.run_mmfuse(data), bench.run_sdk(data)
    for name in bench.RATES:
        assert not np.isnan(sdk[name]).any()
        np.testing.assert_allclose(ours[name], sdk[name], atol=1e-5)
        # and both equal the plain mean of the frames inside each word
        starts, _, values = data[name]
        ws, we = data["words"]
        inside = (starts[None, :] >= ws[:, None] - 1e-9) & (starts[None, :] < we[:, None] - 1e-9)
        expected = inside @ values.astype(np.float64) / inside.sum(1, keepdims=True)
        np.testing.assert_allclose(ours[name], expected, atol=1e-5)


def test_rules_differ_off_the_frame_grid():
    bench = _bench()
    data = bench.make_video(4.0, seed=1, jitter=0.05)
    diff, dropped = bench._max_diff(bench.run_mmfuse(data), bench.run_sdk(data))
    assert dropped == 0
    assert diff > 1e-3  # overlap-weighted (mmfuse) vs equal-weight (SDK) mean of partially covered frames
