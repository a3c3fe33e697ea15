"""Shared test settings.

* The device under test comes from ``MMFUSE_TEST_DEVICE`` (default "cpu"), so the same suite runs on a GPU.
* Intra-op threads default to 1 (``MMFUSE_TEST_THREADS`` overrides): the models in tests are tiny, and
  several OpenMP threads fighting over 2 shared CI cores made them 10-100x slower.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("MMFUSE_TEST_THREADS", "1")))


def _test_device() -> str:
    device = os.environ.get("MMFUSE_TEST_DEVICE", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"MMFUSE_TEST_DEVICE={device!r} but CUDA is not available.")
    return device


@pytest.fixture(scope="session")
def device() -> str:
    """The torch device tests run on."""
    return _test_device()
