"""Decoding, openSMILE audio features and frame encoders on real generated media."""

from __future__ import annotations

import numpy as np
import pytest
from media_fixtures_extract import build_fox_clip

from mmfuse.errors import DataError
from mmfuse.extract import (
    AudioExtractor,
    FramesExtractor,
    Media,
    PixelStatsEncoder,
    create_extractor,
    create_frame_encoder,
    decode_audio,
    decode_frames,
    probe,
)


@pytest.fixture(scope="module")
def fox_clip(tmp_path_factory):
    return build_fox_clip(tmp_path_factory)


EGEMAPS_LLD = [
    "Loudness_sma3",
    "alphaRatio_sma3",
    "hammarbergIndex_sma3",
    "slope0-500_sma3",
    "slope500-1500_sma3",
    "spectralFlux_sma3",
    "mfcc1_sma3",
    "mfcc2_sma3",
    "mfcc3_sma3",
    "mfcc4_sma3",
    "F0semitoneFrom27.5Hz_sma3nz",
    "jitterLocal_sma3nz",
    "shimmerLocaldB_sma3nz",
    "HNRdBACF_sma3nz",
    "logRelF0-H1-H2_sma3nz",
    "logRelF0-H1-A3_sma3nz",
    "F1frequency_sma3nz",
    "F1bandwidth_sma3nz",
    "F1amplitudeLogRelF0_sma3nz",
    "F2frequency_sma3nz",
    "F2bandwidth_sma3nz",
    "F2amplitudeLogRelF0_sma3nz",
    "F3frequency_sma3nz",
    "F3bandwidth_sma3nz",
    "F3amplitudeLogRelF0_sma3nz",
]


def test_probe_and_decode(fox_clip):
    info = probe(fox_clip.path)
    assert info.has_audio and info.has_video and info.width == 256 and info.fps == pytest.approx(10.0)
    assert info.duration == pytest.approx(fox_clip.duration, abs=0.15)
    audio = decode_audio(fox_clip.path, sample_rate=8000)
    assert audio.dtype == np.float32 and audio.shape[0] / 8000 == pytest.approx(fox_clip.duration, abs=0.15)
    # The lead-in is silent and the speech is not.
    assert np.abs(audio[: int(0.3 * 8000)]).max() < 0.01 < np.abs(audio[int(1.0 * 8000) : int(3.0 * 8000)]).max()
    times, frames = decode_frames(fox_clip.path, rate=4.0, max_side=64)
    np.testing.assert_allclose(times, np.arange(times.shape[0]) / 4.0)
    assert frames.shape[1:] == (64, 64, 3) and times[-1] <= fox_clip.duration


def test_decode_errors(tmp_path, fox_clip):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 100)
    with pytest.raises(DataError, match=r"broken\.mp4"):
        probe(bad)
    with pytest.raises(DataError, match="not found"):
        decode_audio(tmp_path / "nope.wav")
    with pytest.raises(ValueError, match="'rate' parameter of decode_frames"):
        decode_frames(fox_clip.path, rate=0)
    with pytest.raises(ValueError, match="'sample_rate' parameter of decode_audio"):
        decode_audio(fox_clip.path, sample_rate=-1)


def test_egemaps_stream_columns_and_rate(fox_clip):
    out = AudioExtractor()(Media(fox_clip.path))
    lld = out["audio_lld"]
    assert list(lld.columns) == EGEMAPS_LLD and lld.dim == 25
    assert np.median(np.diff(lld.timestamps)) == pytest.approx(0.01)  # 100 Hz
    assert lld.timestamps[-1] == pytest.approx(fox_clip.duration, abs=0.1)
    loud = lld.values[:, 0]
    t = lld.timestamps
    silent = loud[t < fox_clip.speech_start - 0.15].mean()
    spoken = loud[(t > fox_clip.speech_start + 0.2) & (t < fox_clip.speech_end - 0.2)].mean()
    assert spoken > 5 * silent  # loudness follows the voice
    func = out["audio_functionals"]
    assert func.values.shape == (1, 88) and func.kind == "interval"
    assert func.ends[0] == pytest.approx(fox_clip.duration, abs=0.15)


def test_audio_extractor_errors():
    with pytest.raises(ValueError, match="'feature_set' parameter of AudioExtractor"):
        AudioExtractor(feature_set="nope")
    with pytest.raises(ValueError, match=r"Unknown extractor .nope.\. Valid names: audio, face, frames, speech"):
        create_extractor("nope")


def test_pixel_stats_known_answer():
    frames = np.zeros((1, 4, 4, 3), np.uint8)
    frames[0, :2, :2] = 255  # top-left cell white
    got = PixelStatsEncoder(grid=2).encode(frames)
    np.testing.assert_allclose(got[0, :12], [1, 1, 1] + [0] * 9)
    np.testing.assert_allclose(got[0, 12:], 0)


def test_torch_file_encoder_runs_a_frozen_model_in_batches(tmp_path, fox_clip):
    import torch

    class Net(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))  # [B, 3]

    path = tmp_path / "net.pt2"
    torch.export.save(
        torch.export.export(Net(), (torch.zeros(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim.AUTO},)), path
    )
    enc = create_frame_encoder(
        "torch-file", path=path, image_size=8, mean=(0, 0, 0), std=(1, 1, 1), batch_size=3, allow_unsafe=True
    )
    ex = FramesExtractor(enc, rate=2.0, max_side=32)
    out = ex(Media(fox_clip.path))["video_torch-file"]
    times, frames = decode_frames(fox_clip.path, rate=2.0, max_side=32)
    np.testing.assert_allclose(out.values, frames.mean(axis=(1, 2)) / 255.0, atol=0.02)  # the mean colour
    np.testing.assert_allclose(out.timestamps, times)
    with pytest.raises(DataError, match="not found"):
        create_frame_encoder("torch-file", path=tmp_path / "missing.pt2")
    with pytest.raises(DataError, match="builder"):
        (tmp_path / "w.safetensors").write_bytes(b"x")
        create_frame_encoder("torch-file", path=tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="'encoder' parameter of FramesExtractor"):
        FramesExtractor(encoder=object())  # type: ignore[arg-type]


def test_face_landmarks_on_face_frames(fox_clip):
    pytest.importorskip("mediapipe", reason="mediapipe is not installed (pip install 'mmfuse[face]')")
    out = create_extractor("face", rate=2.0)(Media(fox_clip.path))["face_landmarks"]
    assert out.dim == 478 * 3
    n_frames = decode_frames(fox_clip.path, rate=2.0)[0].shape[0]
    assert len(out) == n_frames  # a face in every frame
    xy = out.values.reshape(len(out), 478, 3)[:, :, :2]
    assert ((xy > 0) & (xy < 1)).all()
    # skimage's astronaut: the face is in the upper middle of the picture.
    centre = xy.mean(axis=1).mean(axis=0)
    assert 0.3 < centre[0] < 0.7 and 0.1 < centre[1] < 0.5
    # Points in mediapipe's order: the iris centres (468, 473, from refine) flank the nose tip (1) above it,
    # and the chin (152) is below it.
    f0 = xy[0]
    assert f0[468, 0] < f0[1, 0] < f0[473, 0] and max(f0[468, 1], f0[473, 1]) < f0[1, 1] < f0[152, 1]
    # The clip's frame i is the picture rolled right by i % 4 px (256 px wide): the landmarks follow it.
    roll = np.round(out.timestamps * 10).astype(int) % 4
    shift_px = (xy[:, :, 0].mean(axis=1) - xy[0, :, 0].mean()) * 256
    np.testing.assert_allclose(shift_px, roll - roll[0], atol=0.5)
    # Without the iris refinement: 468 points on the same frames.
    plain = create_extractor("face", rate=2.0, refine=False)(Media(fox_clip.path))["face_landmarks"]
    assert plain.dim == 468 * 3 and len(plain) == n_frames and plain.meta["points"] == 468


def test_face_extractor_no_face_and_errors(tmp_path, monkeypatch):
    import sys

    with pytest.raises(ValueError, match="'min_confidence' parameter of FaceExtractor must be in"):
        create_extractor("face", min_confidence=1.5)
    with pytest.raises(ValueError, match="'rate' parameter of FaceExtractor"):
        create_extractor("face", rate=0.0)
    with monkeypatch.context() as mp:  # as if mediapipe were not installed
        mp.setitem(sys.modules, "mediapipe", None)
        mp.setitem(sys.modules, "mediapipe.python.solutions", None)
        with pytest.raises(ImportError, match=r"pip install 'mmfuse\[face\]'"):
            create_extractor("face")(Media(tmp_path / "never-read.mp4"))
    pytest.importorskip("mediapipe", reason="mediapipe is not installed (pip install 'mmfuse[face]')")
    av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'mmfuse[extract]')")
    noise = tmp_path / "noise.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(noise), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width = vs.height = 128
        vs.pix_fmt = "yuv420p"
        for _ in range(10):
            img = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vs.encode())
    assert create_extractor("face", rate=5.0)(Media(noise)) == {}  # no face anywhere: no stream
