"""Frame encoders: a pluggable interface for image backbones, and the extractor that runs one over a video.

A frame encoder is any object with a ``name``, a JSON-safe ``config()`` and ``encode(frames [F, H, W, 3]
uint8) -> [F, D] float32`` (the :class:`FrameEncoder` protocol). Built-ins: ``torch-file`` (a TorchScript
``.pt``/``.ts`` or ``torch.export`` ``.pt2`` file, or a ``.safetensors`` state dict with a builder, from a path
you give: weights are never downloaded) and ``pixel-stats`` (mean/std colour on a grid; no weights, for tests
and baselines). Models run frozen (``eval()``, no gradients) in batches. To use timm, open_clip or DINO, wrap
the model in a class with the three members and register it with :func:`register_frame_encoder`
(``docs/extraction.md`` shows one); mmfuse does not depend on those libraries.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from mmfuse._io import check_unpickling_allowed
from mmfuse._registry import Registry
from mmfuse.extract.base import ExtractedStream, Extractor, Media, check_positive, register_extractor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrameEncoder",
    "FramesExtractor",
    "PixelStatsEncoder",
    "TorchFileEncoder",
    "create_frame_encoder",
    "list_frame_encoders",
    "register_frame_encoder",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

FRAME_ENCODERS: Registry[Callable[..., Any]] = Registry("frame encoder")


@runtime_checkable
class FrameEncoder(Protocol):
    """What :class:`FramesExtractor` needs from an image backbone."""

    name: str

    def config(self) -> dict[str, Any]:
        """JSON-safe settings that change the output (part of the cache key)."""
        ...

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """Map ``[F, H, W, 3]`` uint8 RGB frames to ``[F, D]`` float32 features."""
        ...


def register_frame_encoder(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a frame-encoder factory (a class or function returning a :class:`FrameEncoder`) as ``name``."""
    return FRAME_ENCODERS.register(name)


def list_frame_encoders() -> list[str]:
    """Return the registered frame-encoder names.

    Example:
        >>> list_frame_encoders()
        ['pixel-stats', 'torch-file']
    """
    return FRAME_ENCODERS.names()


def create_frame_encoder(name: str, **kwargs: Any) -> FrameEncoder:
    """Build the frame encoder registered as ``name``.

    Raises:
        ValueError: unknown name (the valid ones are listed).
    """
    return FRAME_ENCODERS.get(name)(**kwargs)  # type: ignore[no-any-return,unused-ignore]


@register_frame_encoder("pixel-stats")
class PixelStatsEncoder:
    """Mean and standard deviation of each colour channel on a ``grid`` × ``grid`` layout (no weights).

    Output ``D`` = ``grid * grid * 6``, values in ``[0, 1]``.

    Args:
        grid: Cells per side.

    Example:
        >>> enc = PixelStatsEncoder(grid=2)
        >>> enc.encode(np.full((3, 8, 8, 3), 255, np.uint8)).shape
        (3, 24)
    """

    name = "pixel-stats"

    def __init__(self, grid: int = 2) -> None:
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"The 'grid' parameter of PixelStatsEncoder must be a positive integer. Got {grid!r}.")
        self.grid = grid

    def config(self) -> dict[str, Any]:
        """Return the settings."""
        return {"grid": self.grid}

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """``[F, H, W, 3]`` uint8 -> ``[F, grid * grid * 6]`` float32."""
        f, h, w, _ = frames.shape
        g = self.grid
        hh, ww = (h // g) * g, (w // g) * g
        x = frames[:, :hh, :ww].astype(np.float32) / 255.0
        x = x.reshape(f, g, hh // g, g, ww // g, 3)  # [F, g, h', g, w', 3]
        mean = x.mean(axis=(2, 4)).reshape(f, -1)  # [F, g*g*3]
        std = x.std(axis=(2, 4)).reshape(f, -1)
        return np.concatenate([mean, std], axis=1).astype(np.float32)


@register_frame_encoder("torch-file")
class TorchFileEncoder:
    """Run a frozen image model from a local file over frames, in batches.

    The model takes ``[B, 3, S, S]`` float32 images (resized to ``image_size``, scaled to ``[0, 1]`` and
    normalised with ``mean``/``std``) and returns ``[B, D]`` (or ``[B, ...]``, flattened). Accepted files:
    TorchScript (``.pt``, ``.ts``, ``.jit``), ``torch.export`` programs (``.pt2``), or a ``.safetensors`` state
    dict together with ``builder`` (a callable returning the ``nn.Module`` to load it into).

    Args:
        path: The model file.
        image_size: Side of the square input.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        batch_size: Frames per forward pass.
        builder: Module factory for ``.safetensors`` files.
        device: Torch device to run on.
        allow_unsafe: Load TorchScript and ``torch.export`` files. Both formats hold pickled data, and loading
            them can run code chosen by whoever wrote the file (``torch.export.load`` falls back to an unrestricted
            unpickler), so they are refused unless you opt in (CLI ``--allow-unsafe-load``); a warning is issued
            even then (:func:`mmfuse._io.check_unpickling_allowed`). A ``.safetensors`` state dict with ``builder``
            is always safe.

    Raises:
        DataError: the file is missing or of an unknown type; a ``.safetensors`` file without ``builder``.
        UnsafeLoadError: a TorchScript or ``.pt2`` file without ``allow_unsafe=True`` (a DataError too).

    Example:
        >>> import tempfile, pathlib, torch
        >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pool.pt2"
        >>> batch = {0: torch.export.Dim.AUTO}  # export with a dynamic batch size
        >>> torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=(batch,)), p)
        >>> enc = TorchFileEncoder(p, image_size=16, mean=(0, 0, 0), std=(1, 1, 1), allow_unsafe=True)
        >>> enc.encode(np.full((5, 20, 20, 3), 255, np.uint8)).round(3).tolist()[0]
        [1.0, 1.0, 1.0]
    """

    name = "torch-file"
    _SCRIPT = (".pt", ".ts", ".jit", ".pth")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        image_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        batch_size: int = 32,
        builder: Callable[[], torch.nn.Module] | None = None,
        device: str = "cpu",
        allow_unsafe: bool = False,
    ) -> None:
        from mmfuse.errors import DataError

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: model file not found (TorchFileEncoder loads weights from a local path).")
        suffix = self.path.suffix.lower()
        if suffix not in (*self._SCRIPT, ".pt2", ".safetensors"):
            raise DataError(
                f"{self.path}: unknown model file type {suffix!r}; expected TorchScript (.pt, .ts, .jit, .pth), "
                "torch.export (.pt2) or .safetensors (with builder=...)."
            )
        if suffix == ".safetensors" and builder is None:
            raise DataError(f"{self.path}: a .safetensors file holds weights only; pass builder=<module factory>.")
        if suffix != ".safetensors":
            check_unpickling_allowed(
                self.path,
                "torch.export" if suffix == ".pt2" else "TorchScript",
                allowed=allow_unsafe,
                instead="export the weights as .safetensors and pass builder=<module factory>",
                cli_option="--allow-unsafe-load",
            )
        self.allow_unsafe = bool(allow_unsafe)
        self.image_size = int(check_positive(image_size, "image_size", "TorchFileEncoder"))
        self.batch_size = int(check_positive(batch_size, "batch_size", "TorchFileEncoder"))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.builder = builder
        self.device = torch.device(device)
        self._model: Any = None

    def config(self) -> dict[str, Any]:
        """Return the settings (the file is identified by path, size and modification time)."""
        st = self.path.stat()
        return {
            "path": str(self.path.resolve()),
            "size": st.st_size,
            "mtime": int(st.st_mtime),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def _load(self) -> Any:
        if self._model is None:
            suffix = self.path.suffix.lower()
            model: Any
            if suffix == ".pt2":
                model = torch.export.load(str(self.path)).module()
            elif suffix == ".safetensors":
                from safetensors.torch import load_file

                assert self.builder is not None
                model = self.builder()
                model.load_state_dict(load_file(str(self.path)))
            else:
                model = torch.jit.load(str(self.path), map_location=self.device)
            if hasattr(model, "eval") and suffix != ".pt2":
                model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._model = model.to(self.device)
        return self._model

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """``[F, H, W, 3]`` uint8 -> ``[F, D]`` float32 (no gradients, batches of ``batch_size``)."""
        model = self._load()
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        outs = []
        with torch.inference_mode():
            for i in range(0, frames.shape[0], self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).float() / 255.0  # [B, H, W, 3] -> [B, 3, H, W]
                x = torch.nn.functional.interpolate(
                    x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
                )
                y = model((x - mean) / std)
                outs.append(y.reshape(y.shape[0], -1).float().cpu().numpy())  # [B, ...] -> [B, D]
        return np.concatenate(outs).astype(np.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}


@register_extractor("frames")
class FramesExtractor(Extractor):
    """Frames sampled at ``rate`` Hz, encoded by a :class:`FrameEncoder`: stream ``video_<encoder name>``.

    Args:
        encoder: A frame encoder, or a registered encoder name (built with ``encoder_kwargs``).
        rate: Frame sampling rate in Hz.
        max_side: Frames are scaled down so their longer side is at most this before encoding.
        encoder_kwargs: Arguments of a named encoder (``{"path": ...}`` for ``torch-file``).

    Raises:
        ValueError: non-positive ``rate``/``max_side``, an unknown encoder name, or an object that is not a
            :class:`FrameEncoder`.

    Example:
        >>> FramesExtractor().config()
        {'encoder': 'pixel-stats', 'encoder_config': {'grid': 2}, 'rate': 5.0, 'max_side': 256}
    """

    version: ClassVar[str] = "1"
    needs: ClassVar[str] = "video"
    streams: ClassVar[tuple[str, ...]] = ("video_<encoder>",)

    def __init__(
        self,
        encoder: FrameEncoder | str = "pixel-stats",
        rate: float = 5.0,
        max_side: int = 256,
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.encoder = create_frame_encoder(encoder, **(encoder_kwargs or {})) if isinstance(encoder, str) else encoder
        if not isinstance(self.encoder, FrameEncoder):
            raise ValueError(
                "The 'encoder' parameter of FramesExtractor must be a registered encoder name "
                f"({list_frame_encoders()}) or an object with name, config() and encode(). Got {encoder!r}."
            )
        self.rate = check_positive(rate, "rate", "FramesExtractor")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
            raise ValueError(
                f"The 'max_side' parameter of FramesExtractor must be a positive integer. Got {max_side!r}."
            )
        self.max_side = max_side

    def config(self) -> dict[str, Any]:
        """Return the settings that change the output."""
        return {
            "encoder": self.encoder.name,
            "encoder_config": self.encoder.config(),
            "rate": self.rate,
            "max_side": self.max_side,
        }

    def __call__(self, media: Media) -> dict[str, ExtractedStream]:
        """Return ``video_<encoder>`` for ``media``."""
        times, frames = media.frames(self.rate, self.max_side)
        feats = self.encoder.encode(frames)  # [F, D]
        if feats.shape[0] != times.shape[0] or not math.isfinite(float(np.sum(feats))):
            raise ValueError(
                f"Frame encoder {self.encoder.name!r} returned {feats.shape} for {times.shape[0]} frames "
                "(expected one finite row per frame)."
            )
        return {f"video_{self.encoder.name}": ExtractedStream("continuous", times, feats)}
