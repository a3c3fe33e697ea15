"""Real test media built on the fly: speech from espeak-ng, faces from scikit-image, muxed with PyAV.

(Helpers, not a conftest.py: the suite's --doctest-modules imports every conftest.py as module 'conftest', and
two of them clash.)"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SENTENCES = {
    "fox": "the quick brown fox jumps over the lazy dog",
    "weather": "it will rain in the morning and the sun comes out later",
    "stella": "please call stella and ask her to bring these things",
}
LEAD = 0.5  # seconds of silence before the speech
TAIL = 0.4  # seconds of silence after it
SR = 16000


@dataclass
class Clip:
    path: Path
    text: str
    speech_start: float
    speech_end: float
    duration: float


def need_media_tools() -> None:
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'mmfuse[extract]')")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): it speaks the test sentences")


def speak(text: str) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32."""
    import av

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), text], check=True, capture_output=True)
        with av.open(str(wav)) as c:
            res = av.AudioResampler(format="flt", layout="mono", rate=SR)
            chunks = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in res.resample(fr)]
            chunks += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    return np.concatenate(chunks)


def face_frame(size: int = 256) -> np.ndarray:
    skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed (its sample images hold faces)")
    img = skdata.astronaut()  # [512, 512, 3] uint8, a face in the upper middle
    step = img.shape[0] // size
    return np.ascontiguousarray(img[::step, ::step][:size, :size])


def make_clip(path: Path, text: str, *, video: bool = True, fps: int = 10) -> Clip:
    """An MP4 (or a WAV when video is False) with LEAD s silence, the spoken text, TAIL s silence."""
    import av

    speech = speak(text)
    # espeak-ng pads its output with a little silence: find where the voice really is.
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    audio = np.concatenate([np.zeros(int(LEAD * SR), np.float32), speech, np.zeros(int(TAIL * SR), np.float32)])
    start, end = LEAD + loud[0] / SR, LEAD + loud[-1] / SR
    duration = audio.shape[0] / SR
    with av.open(str(path), "w") as out:
        if video:
            vs = out.add_stream("libx264", rate=fps)
            vs.width = vs.height = 256
            vs.pix_fmt = "yuv420p"
            vs.options = {"preset": "ultrafast"}
        ast = out.add_stream("aac" if video else "pcm_s16le", rate=SR)
        ast.layout = "mono"
        if video:
            base = face_frame()
            for i in range(int(duration * fps)):
                frame = np.roll(base, i % 4, axis=1)  # a little motion
                out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            out.mux(vs.encode())
        hop = 1024
        fmt = "fltp" if video else "s16"
        samples = audio if video else (audio * 32767).astype(np.int16)
        for i in range(0, samples.shape[0], hop):
            af = av.AudioFrame.from_ndarray(samples[None, i : i + hop], format=fmt, layout="mono")
            af.sample_rate = SR
            af.pts = i
            out.mux(ast.encode(af))
        out.mux(ast.encode(None))
    return Clip(path, text, start, end, duration)


def build_fox_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """The fox sentence as an MP4 with faces (skips when a tool is missing)."""
    need_media_tools()
    return make_clip(tmp_path_factory.mktemp("clips") / "fox.mp4", SENTENCES["fox"])


def build_media_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three clips in class subfolders (two videos, one audio-only WAV)."""
    need_media_tools()
    root = tmp_path_factory.mktemp("media")
    for key, video in (("fox", True), ("weather", True), ("stella", False)):
        (root / key).mkdir()
        make_clip(root / key / (f"{key}.mp4" if video else f"{key}.wav"), SENTENCES[key], video=video)
    return root
