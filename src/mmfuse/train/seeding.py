"""Seeds, random-number-generator snapshots, device choice and deterministic kernels."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "deterministic_mode",
    "epoch_seed",
    "resolve_device",
    "restore_rng_state",
    "seed_everything",
]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: A non-negative integer.

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, to hand to a ``DataLoader`` so that its shuffling
        order does not depend on how much of the global torch generator was consumed.

    Example:
        >>> g = seed_everything(7)
        >>> a = torch.rand(2)
        >>> _ = seed_everything(7)
        >>> bool(torch.equal(a, torch.rand(2))), g.initial_seed()
        (True, 7)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"The 'seed' parameter of seed_everything must be a non-negative integer. Got {seed!r}.")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator is what users' code draws from)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def epoch_seed(seed: int, epoch: int) -> int:
    """Return the seed that orders the training data of ``epoch`` (0-based) in a run with seed ``seed``.

    Deriving the shuffling order of every epoch from ``(seed, epoch)`` alone makes it reproducible on its own,
    so a resumed run sees the same batches as an uninterrupted one without saving any data-loader state.

    Example:
        >>> epoch_seed(0, 3) == epoch_seed(0, 3), epoch_seed(0, 3) == epoch_seed(0, 4)
        (True, False)
    """
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % 2**63


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"`` into a ``torch.device``.

    Raises:
        ValueError: on an unknown name, or when CUDA is asked for and none is available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise ValueError(
            f"The 'device' parameter of resolve_device must be 'cpu', 'cuda', 'cuda:<index>' or 'auto'. Got {device!r}."
        )
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    prefix, _, index = spec.partition(":")
    if prefix != "cuda" or (index and not index.isdigit()):
        raise ValueError(
            f"The 'device' parameter of resolve_device must be 'cpu', 'cuda', 'cuda:<index>' or 'auto'. Got {device!r}."
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"The 'device' parameter asks for {spec!r} but torch sees no CUDA device; use 'cpu' or 'auto'."
        )
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(
            f"The 'device' parameter asks for {spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist."
        )
    return torch.device(spec)


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Snapshot every global generator: torch ones as uint8 tensors, Python's and NumPy's as JSON-safe data.

    Example:
        >>> tensors, info = capture_rng_state()
        >>> tensors["torch"].dtype, sorted(info)
        (torch.uint8, ['numpy', 'python'])
    """
    tensors: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    info: dict[str, Any] = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    return tensors, info


def restore_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`capture_rng_state`.

    Example:
        >>> snapshot = capture_rng_state()
        >>> a = torch.rand(1)
        >>> restore_rng_state(*snapshot)
        >>> bool(torch.equal(a, torch.rand(1)))
        True
    """
    torch.set_rng_state(tensors["torch"].to(torch.uint8).cpu())
    cuda_states = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("cuda."))
    if cuda_states and torch.cuda.is_available():
        for index, state in cuda_states[: torch.cuda.device_count()]:
            torch.cuda.set_rng_state(state.to(torch.uint8).cpu(), device=index)
    py = info["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = info["numpy"]
    np.random.set_state(  # noqa: NPY002
        (npy["kind"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Within the block, ask torch for deterministic kernels when ``enabled``; restore the old settings after.

    Example:
        >>> with deterministic_mode(True):
        ...     torch.are_deterministic_algorithms_enabled()
        True
    """
    if not enabled:
        yield
        return
    old_alg = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    old_cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_alg, warn_only=old_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn
        if old_cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = old_cublas
