"""analyze_run end to end on a tiny synthetic compare run where one modality carries all the signal."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from experiment_support import read_csv
from mmfuse.cli._app import app
from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
from mmfuse.errors import DataError
from mmfuse.evaluate.analysis import AnalysisConfig, analyze_run
from mmfuse.evaluate.compare import CompareConfig, compare

pytestmark = pytest.mark.slow


def _records(rng: np.random.Generator) -> list[SequenceRecord]:
    recs = []
    sizes = {"train": 96, "val": 32, "test": 48}
    k = 0
    for split, n in sizes.items():
        for _ in range(n):
            label = int(rng.integers(0, 2))
            t = int(rng.integers(4, 8))
            sig = rng.normal(size=(t, 2)).astype(np.float32) * 0.3
            sig[:, 0] += 2.0 * label - 1.0  # the label, readable from "sig" at every step
            noise = rng.normal(size=(t, 3)).astype(np.float32)  # no signal at all
            masks = {"sig": np.ones(t, bool), "noise": np.ones(t, bool)}
            recs.append(SequenceRecord(f"s{k}", f"g{k}", split, {"sig": sig, "noise": noise}, masks, label))
            k += 1
    return recs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("analysis")
    data = write_dataset(
        root / "toy",
        _records(np.random.default_rng(0)),
        name="toy",
        modalities=[ModalitySpec("sig", 2), ModalitySpec("noise", 3)],
        task=TaskSpec("classification", "sample", class_names=("neg", "pos")),
    )
    out = root / "run"
    compare(
        CompareConfig(
            dataset=str(data),
            fusions=["concat", "weighted"],
            seeds=1,
            epochs=5,
            out_dir=str(out),
            device="cpu",
            model_overrides={"hidden": 8, "dropout": 0.1},
            train_overrides={"batch_size": 16, "lr": 1e-2},
        )
    )
    cfg = AnalysisConfig(
        mc_passes=4,
        tta_passes=2,
        embedding_points=60,
        embedding_methods=("pca", "tsne"),
        latency_repeats=3,
        worst_cases=4,
    )
    result = analyze_run(out, config=AnalysisConfig(**{**cfg.__dict__, "dataset": str(data)}))
    assert result.seconds["total"] > 0
    return out


def test_the_modality_with_all_the_signal_dominates_the_ablation(run_dir: Path) -> None:
    rows = read_csv(run_dir / "analysis" / "ablation.csv")
    for fusion in ("concat", "weighted"):
        acc = {r["subset"]: float(r["accuracy"]) for r in rows if r["fusion"] == fusion and r["seed"] == "0"}
        assert set(acc) == {"noise", "sig", "noise+sig"}  # 2^2 - 1 subsets; no context level for sample labels
        assert acc["sig"] >= 0.9 and acc["noise+sig"] >= 0.9
        assert acc["noise"] <= 0.75
        assert acc["sig"] > acc["noise"] + 0.2


def test_robustness_falls_with_noise_on_the_informative_modality(run_dir: Path) -> None:
    rows = [r for r in read_csv(run_dir / "analysis" / "robustness_curves.csv") if r["kind"] == "noise"]
    for fusion in ("concat", "weighted"):
        curve = sorted(
            (float(r["level"]), float(r["metric"]))
            for r in rows
            if r["fusion"] == fusion and r["target"] == "sig" and r["seed"] == "0"
        )
        levels, acc = zip(*curve, strict=True)
        assert levels[0] == 0.0 and acc[-1] < acc[0] - 0.1  # 2 std of noise on the signal hurts
        assert all(b <= a + 0.05 for a, b in itertools.pairwise(acc))  # monotone up to sampling noise
        noise_only = [float(r["metric"]) for r in rows if r["fusion"] == fusion and r["target"] == "noise"]
        assert max(noise_only) - min(noise_only) < 0.15  # perturbing the useless modality barely matters


def test_temperature_scaling_keeps_accuracy(run_dir: Path) -> None:
    for r in read_csv(run_dir / "analysis" / "calibration.csv"):
        assert r["accuracy_before"] == r["accuracy_after"]
        assert float(r["temperature"]) > 0
        assert 0 <= float(r["ece_after"]) <= 1


def test_every_output_is_written(run_dir: Path) -> None:
    folder = run_dir / "analysis"
    for name in (
        "ablation.png",
        "robustness_noise.png",
        "robustness_missing.png",
        "reliability.png",
        "risk_coverage.png",
        "separability_concat.png",
        "failure_agreement.png",
        "inspection_weighted.png",
        "complexity.csv",
        "uncertainty.csv",
        "worst_cases.csv",
        "failure_patterns.csv",
        "summary.md",
    ):
        assert (folder / name).is_file(), name
    final = read_csv(run_dir / "final_results.csv")
    assert len(final) == 2
    for column in (
        "accuracy",
        "ablation_sig",
        "ece_before",
        "ece_after",
        "mc_dropout_aurc",
        "latency_ms_median",
        "rel_robustness_noise_all",
        "params",
    ):
        assert column in final[0], column
    worst = read_csv(folder / "worst_cases.csv")
    assert {r["available"] for r in worst} <= {"noise+sig", "sig", "noise", "none"}
    assert all(r["sample_id"].startswith("s") for r in worst)
    html = (run_dir / "report.html").read_text()
    for anchor in (
        "analysis-ablation",
        "analysis-robustness",
        "analysis-calibration",
        "analysis-uncertainty",
        "analysis-separability",
        "analysis-failures",
        "analysis-inspection",
        "analysis-complexity",
    ):
        assert f'id="{anchor}"' in html
    assert 'src="analysis/' not in html  # figures are embedded, not linked
    assert "## Analysis" in (run_dir / "summary.md").read_text()
    sections = json.loads((folder / "sections.json").read_text())["sections"]
    weights = next(s for s in sections if s["id"] == "analysis-inspection")
    assert any("concat" in n for n in weights["notes"])  # concat has no weights: said so, not drawn


def test_cli_analyze_and_its_errors(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))  # the other tests read the full analysis
    res = runner.invoke(
        app, ["analyze", str(copy), "--only", "ablation,failures", "--dataset", str(run_dir.parent / "toy")]
    )
    assert res.exit_code == 0, res.output
    assert "ablation" in res.output
    sections = json.loads((copy / "analysis" / "sections.json").read_text())["sections"]
    assert [s["id"] for s in sections] == ["analysis-ablation", "analysis-failures"]
    res = runner.invoke(app, ["analyze", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["analyze", str(run_dir), "--only", "magic"])
    assert res.exit_code == 2 and "Unknown analysis 'magic'" in res.output


def test_bad_configs_and_run_dirs(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start at 0"):
        AnalysisConfig(noise_levels=(0.5, 1.0))
    with pytest.raises(ValueError, match="calibration_split"):
        AnalysisConfig(calibration_split="test")
    with pytest.raises(ValueError, match="Unknown embedding method"):
        AnalysisConfig(embedding_methods=("lda",))
    with pytest.raises(ValueError, match="Unknown run 'late'"):
        analyze_run(
            run_dir, config=AnalysisConfig(runs=("late",), write_report=False, dataset=str(run_dir.parent / "toy"))
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"run\.json"):
        analyze_run(tmp_path / "empty")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium')")
def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    assert CHROMIUM is not None
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (run_dir / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1400,4000", url], check=True, timeout=120, capture_output=True
    )
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] >= 3000 and image.shape[1] >= 1000
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert colours > 500, f"the screenshot looks blank ({colours} distinct colours)"
    # every embedded image decodes: a script appends the count of broken images to the DOM
    probe = tmp_path / "probe.html"
    html = (run_dir / "report.html").read_text()
    script = (
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.body.setAttribute('data-images',i.length);"
        "document.body.setAttribute('data-broken',i.filter(x=>!(x.complete&&x.naturalWidth>0)).length);});</script>"
    )
    probe.write_text(html.replace("</body>", script + "</body>"))
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    n_images = html.count("<img ")
    assert f'data-images="{n_images}"' in dom and n_images >= 12
    assert 'data-broken="0"' in dom
