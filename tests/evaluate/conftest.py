"""Fixtures shared by the tests of ``mmfuse.evaluate``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance of 2 CPUs for one test module (the executors join it instead of starting their own)."""
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'mmfuse[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
