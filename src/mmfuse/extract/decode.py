"""Decoding of video and audio files with PyAV: mono audio at a chosen rate, RGB frames at a chosen rate.

PyAV (``pip install 'mmfuse[extract]'``) is imported on first use, so importing this module costs nothing.
Decoding is the one place that walks frames one by one: codecs hand out one frame at a time. Everything after
it (feature extractors, alignment) works on whole arrays.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse._io import json_fields
from mmfuse.errors import DataError

__all__ = [
    "AUDIO_SUFFIXES",
    "MEDIA_SUFFIXES",
    "VIDEO_SUFFIXES",
    "MediaInfo",
    "decode_audio",
    "decode_frames",
    "probe",
]

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
"""File endings treated as video (they may carry an audio track too)."""

AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
"""File endings treated as audio-only."""

MEDIA_SUFFIXES: tuple[str, ...] = VIDEO_SUFFIXES + AUDIO_SUFFIXES
"""Every file ending :func:`mmfuse.extract.extract_folder` picks up."""


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Decoding media needs PyAV; install it with: pip install 'mmfuse[extract]' (or pip install av)."
        ) from exc
    return av


def _open(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: media file not found.")
    av = _av()
    try:
        return av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot open this media file (corrupt or unsupported?): {exc}") from None


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds.

    Attributes:
        path: The file.
        duration: Length in seconds (the longest stream; 0.0 when the container does not say).
        has_audio: Whether there is an audio track.
        has_video: Whether there is a video track.
        sample_rate: Native audio sample rate in Hz (0 without audio).
        fps: Native average frame rate (0.0 without video).
        width: Frame width in pixels (0 without video).
        height: Frame height in pixels (0 without video).
    """

    path: Path
    duration: float
    has_audio: bool
    has_video: bool
    sample_rate: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (the path as a string)."""
        return json_fields(self)


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Read a media file's header: tracks, duration, rates and frame size.

    Args:
        path: A video or audio file.

    Returns:
        A :class:`MediaInfo`.

    Raises:
        DataError: the file is missing, corrupt or holds neither audio nor video (the file is named).

    Example:
        >>> import tempfile, wave, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
        >>> with wave.open(str(p), "wb") as w:
        ...     w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(bytes(16000))
        >>> info = probe(p)
        >>> info.has_audio, info.has_video, info.sample_rate, round(info.duration, 2)
        (True, False, 8000, 1.0)
    """
    with _open(path) as container:
        audio = container.streams.audio
        video = container.streams.video
        if not audio and not video:
            raise DataError(f"{path}: the file holds neither an audio nor a video track.")
        durations = [
            float(s.duration * s.time_base) for s in (*audio, *video) if s.duration is not None and s.time_base
        ]
        if not durations and container.duration is not None:
            durations.append(container.duration / 1_000_000)  # container duration is in microseconds
        fps = 0.0
        if video:
            rate = video[0].average_rate or video[0].guessed_rate
            fps = float(rate) if rate else 0.0
        return MediaInfo(
            path=Path(path),
            duration=max(durations, default=0.0),
            has_audio=bool(audio),
            has_video=bool(video),
            sample_rate=int(audio[0].codec_context.sample_rate or 0) if audio else 0,
            fps=fps,
            width=int(video[0].codec_context.width or 0) if video else 0,
            height=int(video[0].codec_context.height or 0) if video else 0,
        )


def decode_audio(path: str | os.PathLike[str], *, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio track to mono float32 at ``sample_rate`` Hz.

    Args:
        path: A video or audio file.
        sample_rate: Output rate in Hz (the track is resampled by FFmpeg's resampler).

    Returns:
        ``[N]`` float32 samples in ``[-1, 1]``; sample ``i`` is at ``i / sample_rate`` seconds.

    Raises:
        ValueError: ``sample_rate`` is not a positive integer.
        DataError: no audio track, or the file cannot be decoded (the file is named).

    Example:
        >>> import tempfile, wave, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
        >>> with wave.open(str(p), "wb") as w:
        ...     w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(bytes(16000))
        >>> decode_audio(p, sample_rate=16000).shape  # 1 s at 8 kHz -> 16000 samples at 16 kHz
        (16000,)
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(
            f"The 'sample_rate' parameter of decode_audio must be a positive integer. Got {sample_rate!r}."
        )
    av = _av()
    with _open(path) as container:
        if not container.streams.audio:
            raise DataError(f"{path}: the file has no audio track.")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except (av.error.FFmpegError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode the audio track: {exc}") from None
    if not chunks:
        raise DataError(f"{path}: the audio track holds no samples.")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def decode_frames(
    path: str | os.PathLike[str], *, rate: float = 5.0, max_side: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode RGB frames sampled at ``rate`` Hz from the first video track.

    For each grid time ``k / rate`` (from 0 to the end of the track) the latest frame shown at or before it is
    kept, so a 30 fps video sampled at 5 Hz keeps every sixth frame, and a frame is never taken from the future.

    Args:
        path: A video file.
        rate: Sampling rate in Hz.
        max_side: When given, frames are scaled down (aspect kept) so that their longer side is at most this.

    Returns:
        ``(times [F] float64 seconds, frames [F, H, W, 3] uint8)``.

    Raises:
        ValueError: ``rate`` or ``max_side`` is not positive.
        DataError: no video track, or the file cannot be decoded (the file is named).

    Example:
        >>> import tempfile, pathlib, numpy as np, av
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "grey.mp4"
        >>> with av.open(str(p), "w") as out:
        ...     s = out.add_stream("mpeg4", rate=10); s.width = s.height = 32; s.pix_fmt = "yuv420p"
        ...     for i in range(20):
        ...         img = np.full((32, 32, 3), i * 10, np.uint8)
        ...         out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        ...     out.mux(s.encode())
        >>> times, frames = decode_frames(p, rate=2.0)
        >>> times.tolist(), frames.shape
        ([0.0, 0.5, 1.0, 1.5], (4, 32, 32, 3))
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"The 'rate' parameter of decode_frames must be a positive number (Hz). Got {rate!r}.")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side <= 0):
        raise ValueError(f"The 'max_side' parameter of decode_frames must be a positive integer. Got {max_side!r}.")
    av = _av()
    times: list[float] = []
    frames: list[np.ndarray] = []
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: the file has no video track.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        next_k = 0
        held: Any = None
        held_t = 0.0
        try:
            for frame in container.decode(stream):
                t = (float(frame.pts * frame.time_base) if frame.pts is not None else held_t) - start
                # Every grid time before this frame's time is served by the frame held so far.
                while held is not None and next_k / rate < t - 1e-9:
                    times.append(next_k / rate)
                    frames.append(held)
                    next_k += 1
                held, held_t = _to_rgb(frame, max_side), t
            if held is not None:  # the last frame serves the grid times up to its own (and one frame length)
                end = held_t + (1.0 / float(stream.average_rate) if stream.average_rate else 0.0)
                while next_k / rate < end - 1e-9:
                    times.append(next_k / rate)
                    frames.append(held)
                    next_k += 1
        except (av.error.FFmpegError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode the video track: {exc}") from None
    if not frames:
        raise DataError(f"{path}: the video track holds no frames.")
    return np.asarray(times, dtype=np.float64), np.stack(frames)


def _to_rgb(frame: Any, max_side: int | None) -> np.ndarray:
    if max_side is not None and max(frame.width, frame.height) > max_side:
        scale = max_side / max(frame.width, frame.height)
        width = max(2, round(frame.width * scale))
        height = max(2, round(frame.height * scale))
        return np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height))
    return np.asarray(frame.to_ndarray(format="rgb24"))
