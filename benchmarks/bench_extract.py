"""End to end: build 20 short spoken clips with faces, ``mmfuse extract`` them, ``mmfuse compare`` the result.

Each clip (2-4 s) is one of four sentences spoken by espeak-ng (with a random speed and pitch) over frames of
scikit-image's astronaut, muxed into an MP4 with PyAV; the label is which sentence was spoken. The script
prints the extraction throughput (seconds of media per second of wall time), first with a cold cache, then
the cached re-run, and the compare summary.

    .venv/bin/python benchmarks/bench_extract.py [--out DIR] [--extractors audio,speech] [--ray]

Needs: espeak-ng (apt-get install espeak-ng), pip install 'mmfuse[extract]' scikit-image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = {
    "fox": "the quick brown fox jumps over the lazy dog",
    "rain": "it will rain in the morning",
    "stella": "please call stella and ask her",
    "train": "the train leaves at seven tonight",
}


def speak(text: str, speed: int, pitch: int) -> np.ndarray:
    import av

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-s", str(speed), "-p", str(pitch), "-w", str(wav), text], check=True)
        with av.open(str(wav)) as c:
            res = av.AudioResampler(format="fltp", layout="mono", rate=16000)
            parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in res.resample(fr)]
            parts += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    return np.concatenate(parts)


def make_clip(path: Path, text: str, rng: np.random.Generator) -> float:
    import av
    from skimage import data

    speech = speak(text, int(rng.integers(150, 200)), int(rng.integers(30, 70)))
    audio = np.concatenate([np.zeros(int(0.3 * 16000), np.float32), speech[: 16000 * 4 - 4800]]).astype(np.float32)
    face = np.ascontiguousarray(data.astronaut()[::2, ::2])  # [256, 256, 3]
    duration = audio.shape[0] / 16000
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=15)
        vs.width = vs.height = 256
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast"}
        ast = out.add_stream("aac", rate=16000)
        ast.layout = "mono"
        shift = int(rng.integers(0, 40))
        for i in range(int(duration * 15)):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.roll(face, shift + i, axis=1), format="rgb24")))
        out.mux(vs.encode())
        for i in range(0, audio.shape[0], 1024):
            af = av.AudioFrame.from_ndarray(audio[None, i : i + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, i
            out.mux(ast.encode(af))
        out.mux(ast.encode(None))
    return duration


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-extract"))
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--extractors", default="audio,speech,frames")
    ap.add_argument("--ray", action="store_true")
    args = ap.parse_args()
    out: Path = args.out
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MMFUSE_CACHE_DIR", str(out / "cache"))
    rng = np.random.default_rng(0)
    names = list(SENTENCES)
    rows = ["file,label"]
    total = 0.0
    for i in range(args.clips):
        label = names[i % len(names)]
        total += make_clip(media / f"clip{i:02d}.mp4", SENTENCES[label], rng)
        rows.append(f"clip{i:02d}.mp4,{label}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    mmfuse = [str(Path(sys.executable).with_name("mmfuse"))]
    base = [
        *mmfuse,
        "extract",
        str(media),
        "--out",
        str(out / "dataset"),
        "--labels",
        str(out / "labels.csv"),
        "-e",
        args.extractors,
        "--overwrite",
        "--rate",
        "10",
    ]
    if args.ray:
        base.append("--ray")
    cold = run(base)
    rep = json.loads((out / "dataset" / "extraction.json").read_text())["report"]
    warm = run(base)
    rep_warm = json.loads((out / "dataset" / "extraction.json").read_text())["report"]
    print(f"media: {args.clips} clips, {total:.1f} s; extractors: {args.extractors}")
    print(
        f"extract, cold cache: command {cold:.1f} s (with start-up); extraction {rep['wall_seconds']:.1f} s "
        f"-> {rep['throughput']:.2f} media-s/s ({total / cold:.2f} media-s/s over the whole command)"
    )
    print(f"extract, warm cache: command {warm:.1f} s; extraction {rep_warm['wall_seconds']:.2f} s")
    compare = run(
        [
            *mmfuse,
            "compare",
            "-d",
            str(out / "dataset"),
            "-f",
            "concat,late",
            "--seeds",
            "2",
            "--epochs",
            "20",
            "--out",
            str(out / "compare"),
            "--device",
            "cpu",
        ]
    )
    print(f"compare: {compare:.1f} s; see {out / 'compare'}")


if __name__ == "__main__":
    main()
