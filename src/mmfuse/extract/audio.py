"""Acoustic features with openSMILE: eGeMAPS (or ComParE) low-level descriptors at 100 Hz, and functionals.

``opensmile`` (``pip install 'mmfuse[extract]'``) ships its feature-set configurations inside the package, so
nothing is downloaded. eGeMAPSv02 low-level descriptors are 25 columns (loudness, alpha ratio, Hammarberg
index, spectral slopes, MFCC 1-4, spectral flux, pitch, jitter, shimmer, HNR, H1-H2, H1-A3, formants F1-F3
with bandwidths and amplitudes) every 10 ms; its functionals are 88 statistics over the whole file.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mmfuse.extract.base import ExtractedStream, Extractor, Media, register_extractor

__all__ = ["FEATURE_SETS", "AudioExtractor"]

FEATURE_SETS: tuple[str, ...] = ("eGeMAPSv02", "ComParE_2016", "GeMAPSv01b")
"""openSMILE feature sets the audio extractor accepts."""


def _opensmile() -> Any:
    try:
        import opensmile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The 'audio' extractor needs openSMILE; install it with: pip install 'mmfuse[extract]' "
            "(or pip install opensmile)."
        ) from exc
    return opensmile


def _times(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """Start and end seconds of an openSMILE result's (start, end) timedelta index."""
    starts = np.asarray(index.get_level_values("start").total_seconds(), dtype=np.float64)
    ends = np.asarray(index.get_level_values("end").total_seconds(), dtype=np.float64)
    return starts, ends


@register_extractor("audio")
class AudioExtractor(Extractor):
    """openSMILE low-level descriptors as a continuous stream, and (optionally) file-level functionals.

    Streams: ``audio_lld`` (continuous, one row per 10 ms frame, timestamped at the frame centre, ``D`` = 25
    for eGeMAPSv02) and ``audio_functionals`` (interval, one row covering the whole file, ``D`` = 88 for
    eGeMAPSv02), which alignment repeats on every step of the recording.

    Args:
        feature_set: One of :data:`FEATURE_SETS`.
        sample_rate: Rate (Hz) the audio is resampled to before analysis.
        functionals: Also produce ``audio_functionals``.

    Raises:
        ValueError: unknown feature set, or a non-positive sample rate.

    Example:
        >>> AudioExtractor().config()
        {'feature_set': 'eGeMAPSv02', 'sample_rate': 16000, 'functionals': True}
    """

    version: ClassVar[str] = "1"
    needs: ClassVar[str] = "audio"
    streams: ClassVar[tuple[str, ...]] = ("audio_lld", "audio_functionals")
    lazy: ClassVar[tuple[str, ...]] = ("_smiles",)

    def __init__(self, feature_set: str = "eGeMAPSv02", sample_rate: int = 16000, functionals: bool = True) -> None:
        if feature_set not in FEATURE_SETS:
            raise ValueError(
                f"The 'feature_set' parameter of AudioExtractor must be one of {list(FEATURE_SETS)}. "
                f"Got {feature_set!r} instead."
            )
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(
                f"The 'sample_rate' parameter of AudioExtractor must be a positive integer. Got {sample_rate!r}."
            )
        self.feature_set = feature_set
        self.sample_rate = sample_rate
        self.functionals = bool(functionals)
        self._smiles: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        """Return the settings that change the output."""
        return {"feature_set": self.feature_set, "sample_rate": self.sample_rate, "functionals": self.functionals}

    def _smile(self, level: str) -> Any:
        if level not in self._smiles:
            opensmile = _opensmile()
            self._smiles[level] = opensmile.Smile(
                feature_set=getattr(opensmile.FeatureSet, self.feature_set),
                feature_level=getattr(opensmile.FeatureLevel, level),
            )
        return self._smiles[level]

    def __call__(self, media: Media) -> dict[str, ExtractedStream]:
        """Return ``audio_lld`` (and ``audio_functionals``) for ``media``."""
        signal = media.audio(self.sample_rate)
        lld = self._smile("LowLevelDescriptors").process_signal(signal, self.sample_rate)
        starts, ends = _times(lld.index)
        values = np.nan_to_num(lld.to_numpy(dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # [N, D]
        out = {
            "audio_lld": ExtractedStream(
                "continuous",
                (starts + ends) / 2.0,
                values,
                columns=tuple(str(c) for c in lld.columns),
                meta={"feature_set": self.feature_set, "frame_step": 0.01},
            )
        }
        if self.functionals:
            func = self._smile("Functionals").process_signal(signal, self.sample_rate)
            duration = len(signal) / self.sample_rate
            out["audio_functionals"] = ExtractedStream(
                "interval",
                np.zeros(1),
                np.nan_to_num(func.to_numpy(dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0),  # [1, D]
                ends=np.array([duration]),
                columns=tuple(str(c) for c in func.columns),
                meta={"feature_set": self.feature_set},
            )
        return out
