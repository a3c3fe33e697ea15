"""Tests for mmfuse.evaluate.report: the HTML report and the Markdown summary of a compare run."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from mmfuse.errors import DataError
from mmfuse.evaluate.report import write_report, write_summary_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")

CLASSIFICATION_METRICS = {
    # fusion -> per-seed (accuracy, f1_weighted, f1_macro)
    "concat": [(0.80, 0.79, 0.78), (0.90, 0.88, 0.86)],
    "attention": [(0.95, 0.94, 0.93), (0.91, 0.90, 0.89)],
    "<b>x</b>": [(0.60, 0.58, 0.55), (0.70, 0.69, 0.66)],
}
REGRESSION_METRICS = {
    # fusion -> per-seed (mae, rmse, pearson)
    "early": [(1.20, 1.60, 0.55), (1.40, 1.80, 0.50)],
    "gated": [(0.90, 1.10, 0.70), (1.00, 1.30, 0.66)],
}


def _history(n_epochs: int, metric: str, start: float, step: float) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.2 / e + 0.01 * e,
            f"val_{metric}": start + step * e,
            "lr": 1e-3,
            "seconds": 0.5,
        }
        for e in range(1, n_epochs + 1)
    ]


def make_run(
    root: Path,
    task: str = "classification",
    *,
    with_history: bool = True,
    with_test_metrics: bool = True,
    with_summary: bool = True,
) -> Path:
    """Write a small compare run directory the way `mmfuse compare` lays it out."""
    root.mkdir(parents=True, exist_ok=True)
    classes = ["walking", "running", "standing"]
    table = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    names = ("accuracy", "f1_weighted", "f1_macro") if task == "classification" else ("mae", "rmse", "pearson")
    monitor = "accuracy" if task == "classification" else "mae"
    seeds = [0, 1]
    run = {
        "dataset": {
            "name": "toy-motions",
            "description": "Synthetic accelerometer & gyroscope <recordings> for tests.",
            "modalities": {"accel": {"dim": 3, "kind": "continuous"}, "gyro": {"dim": 3, "kind": "continuous"}},
            "task": {
                "type": task,
                "level": "sample",
                "class_names": classes if task == "classification" else [],
            },
            "sizes": {"train": 24, "val": 8, "test": 8},
        },
        "fusions": list(table),
        "seeds": seeds,
        "train_config": {"epochs": 4, "batch_size": 8, "lr": 0.001, "monitor": monitor, "seed": 0},
        "model_config": {"hidden": 32, "encoder": "gru", "dropout": 0.2},
        "versions": {"mmfuse": "0.1.0", "torch": "2.13.0", "numpy": "2.3.5", "python": "3.11", "platform": "linux"},
        "started": "2025-01-02T10:00:00+00:00",
        "finished": "2025-01-02T10:03:30+00:00",
        "command": "mmfuse compare toy-motions --fusions concat,attention --seeds 0,1",
    }
    (root / "run.json").write_text(json.dumps(run), encoding="utf-8")
    rows = []
    for i, (fusion, per_seed) in enumerate(table.items()):
        for seed, values in zip(seeds, per_seed, strict=True):
            row = {"fusion": fusion, "seed": seed, "params": 1000 * (i + 1), "train_seconds": 10.0 + i + seed}
            row["best_epoch"] = 3
            row.update(dict(zip(names, values, strict=True)))
            row[f"val_{monitor}"] = values[0]
            rows.append(row)
            model_dir = root / "models" / f"{fusion}-seed{seed}"
            model_dir.mkdir(parents=True)
            if with_history:
                history = _history(4, monitor, 0.5 + 0.02 * i, 0.05 if task == "classification" else -0.1)
                (model_dir / "history.json").write_text(json.dumps(history), encoding="utf-8")
            if with_test_metrics and task == "classification":
                # each fusion its own matrix (identical ones share a figure); concat (i = 0) sums to 8 + 7
                matrix = [[3, 1, 0], [0, 2, 1], [1, 0, i]] if seed == 0 else [[2, 0, 1], [1, 2, 0], [0, 0, 1]]
                metrics = {"accuracy": values[0], "confusion_matrix": matrix, "class_names": classes}
                (model_dir / "test_metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    results = pd.DataFrame(rows)
    results.to_csv(root / "results.csv", index=False)
    if with_summary:
        grouped = results.groupby("fusion", sort=False)
        summary = pd.DataFrame({"n_seeds": grouped["seed"].nunique(), "params": grouped["params"].first()})
        summary["train_seconds_mean"] = grouped["train_seconds"].mean()
        for name in (*names, f"val_{monitor}"):
            summary[f"{name}_mean"] = grouped[name].mean()
            summary[f"{name}_std"] = grouped[name].std(ddof=1)
        summary.reset_index().to_csv(root / "summary.csv", index=False)
    return root


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in DATA_URI.findall(page)]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.fixture(scope="module")
def classification_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = make_run(tmp_path_factory.mktemp("classification") / "run")
    path = write_report(run_dir)
    return run_dir, path.read_text(encoding="utf-8")


def test_report_is_written_in_the_run_directory(classification_report: tuple[Path, str]) -> None:
    run_dir, page = classification_report
    assert (run_dir / "report.html").is_file()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<html") == 1 and page.rstrip().endswith("</html>")
    # No temporary file left behind by the atomic write.
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_report_is_self_contained(classification_report: tuple[Path, str]) -> None:
    _, page = classification_report
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert not re.search(r"url\(", page)
    # Every image is embedded, none is loaded from a path.
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def test_report_embeds_one_figure_per_section_and_fusion(classification_report: tuple[Path, str]) -> None:
    _, page = classification_report
    images = _images(page)
    n_fusions = len(CLASSIFICATION_METRICS)
    # comparison chart + training curves per fusion + confusion matrix per fusion
    assert len(images) == 1 + n_fusions + n_fusions
    for png in images:
        width, height = _png_size(png)
        assert 300 <= width <= 1600 and 200 <= height <= 1200
    decoded = mpimg.imread(io.BytesIO(images[0]), format="png")
    assert decoded.ndim == 3 and decoded.shape[0] > 100 and decoded.shape[1] > 300
    # The chart is not blank: it has dark pixels (text, markers) on the white background.
    assert decoded[..., :3].min() < 0.3


def test_report_names_every_fusion_and_escapes_them(classification_report: tuple[Path, str]) -> None:
    _, page = classification_report
    for fusion in ("concat", "attention"):
        assert fusion in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<b>x</b>" not in page
    # The data-set description is user text too.
    assert "&lt;recordings&gt;" in page and "<recordings>" not in page
    assert "accelerometer &amp; gyroscope" in page


def test_report_shows_mean_and_std_from_summary(classification_report: tuple[Path, str]) -> None:
    run_dir, page = classification_report
    summary = pd.read_csv(run_dir / "summary.csv", converters={"fusion": str}).set_index("fusion")
    for fusion in CLASSIFICATION_METRICS:
        mean, std = summary.at[fusion, "accuracy_mean"], summary.at[fusion, "accuracy_std"]
        assert f"{mean:.3f} ± {std:.3f}" in page
    # Hand-checked: concat 0.80/0.90 -> 0.850 ± 0.071; attention 0.95/0.91 -> 0.930 ± 0.028.
    assert "0.850 ± 0.071" in page
    assert "0.930 ± 0.028" in page


def test_report_highlights_best_and_ranks_it_first(classification_report: tuple[Path, str]) -> None:
    _, page = classification_report
    best_cells = re.findall(r'<td class="num best">([^<]*)</td>', page)
    assert "0.930 ± 0.028" in best_cells  # best accuracy: attention
    assert "1,000" in best_cells  # fewest parameters: concat
    comparison = page[page.index('id="comparison"') :]
    assert comparison.index("attention") < comparison.index("concat") < comparison.index("&lt;b&gt;x")


def test_report_has_header_details_and_per_seed_table(classification_report: tuple[Path, str]) -> None:
    _, page = classification_report
    assert "toy-motions" in page
    assert "mmfuse compare toy-motions --fusions concat,attention --seeds 0,1" in page
    assert "2025-01-02 10:00" in page and "took 3 min 30 s" in page
    assert "2.13.0" in page  # versions
    assert page.count("<details>") >= 3  # train config, model config, per-seed table
    assert "Training configuration" in page and "batch_size" in page
    assert "walking" in page and "running" in page
    per_seed = page[page.index('id="per-seed"') :]
    assert per_seed.count("<tr>") == 1 + sum(len(v) for v in CLASSIFICATION_METRICS.values())


def _css_rules(page: str) -> list[tuple[list[str], dict[str, str]]]:
    """The inline style sheet's rules, those inside @media blocks included: (selectors, declarations)."""
    css = re.sub(r"/\*.*?\*/", "", page[page.index("<style>") + 7 : page.index("</style>")], flags=re.S)
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        pairs = (d.split(":", 1) for d in body.split(";") if ":" in d)
        rules.append(([s.strip() for s in selectors.split(",")], {k.strip(): v.strip() for k, v in pairs}))
    return rules


def _declared(rules: list[tuple[list[str], dict[str, str]]], selector: str, prop: str) -> list[str]:
    return [decl[prop] for selectors, decl in rules if selector in selectors and prop in decl]


def test_report_reads_at_narrow_widths(classification_report: tuple[Path, str]) -> None:
    _, page = classification_report
    rules = _css_rules(page)
    # Every data table sits in its own horizontal scroll box, whose first column (the fusion) stays in view.
    tables = re.findall(r"(<[^<>]*>)<table>", page)
    assert tables and all(t == '<div class="scroll">' for t in tables)
    assert _declared(rules, ".scroll", "overflow-x") == ["auto"]
    assert _declared(rules, ".scroll td:first-child", "position") == ["sticky"]
    # A number never wraps: numeric cells are nowrap, and no rule (no @media block either) sets a td back to wrap.
    assert _declared(rules, "td.num", "white-space") == ["nowrap"]
    wrapping = [s for selectors, decl in rules if decl.get("white-space") == "normal" for s in selectors]
    assert not [s for s in wrapping if "td" in s], wrapping
    comparison = page[page.index('id="comparison"') : page.index('id="curves"')]
    values = re.findall(r"<td([^>]*)>([^<]*±[^<]*)</td>", comparison)
    assert len(values) == 4 * len(CLASSIFICATION_METRICS)  # three test metrics and val accuracy per fusion
    assert all(re.fullmatch(r' class="num( best)?"', attrs) for attrs, _ in values)
    # Figures and figure grids shrink to the page instead of overflowing it.
    assert _declared(rules, "figure img", "max-width") == ["100%"]
    for grid in (".grid", ".cols"):
        (columns,) = _declared(rules, grid, "grid-template-columns")
        assert re.search(r"minmax\(min\(\d+px,\s*100%\)", columns), columns


def test_report_custom_path_and_title(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    out = write_report(run_dir, tmp_path / "out" / "mine.html", title="My <run>")
    assert out == tmp_path / "out" / "mine.html" and out.is_file()
    page = out.read_text(encoding="utf-8")
    assert "<title>My &lt;run&gt;</title>" in page
    assert not (run_dir / "report.html").exists()


def test_regression_report_uses_mae_and_has_no_confusion_matrix(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", task="regression")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert len(_images(page)) == 1 + len(REGRESSION_METRICS)  # comparison + curves, no confusion matrices
    assert "Confusion matrices" not in page
    assert "MAE" in page
    # gated has the lower (better) MAE, so it is ranked first and named in the summary.
    comparison = page[page.index('id="comparison"') :]
    assert comparison.index("gated") < comparison.index("early")
    assert "0.95 ± 0.07" in page  # gated MAE 0.9/1.0: three significant digits of the largest mean (1.3)


def test_missing_optional_files_degrade_with_notes(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", with_summary=False)
    (run_dir / "models" / "concat-seed0" / "history.json").unlink()
    for seed in (0, 1):
        (run_dir / "models" / f"attention-seed{seed}" / "history.json").unlink()
        (run_dir / "models" / f"attention-seed{seed}" / "test_metrics.json").unlink()
    (run_dir / "models" / "concat-seed1" / "test_metrics.json").write_text("{not json", encoding="utf-8")
    page = write_report(run_dir).read_text(encoding="utf-8")
    # concat keeps its curves (seed 1) and its confusion matrix drops the broken seed; attention has neither.
    assert len(_images(page)) == 1 + 2 + 2
    assert "summary.csv is missing" in page
    assert "models/concat-seed0/history.json" in page
    assert "No training curves for attention" in page
    assert "No confusion matrix for attention" in page
    assert "models/concat-seed1/test_metrics.json" in page and "not valid JSON" in page
    # Recomputed from results.csv, the numbers are the same as compare would write.
    assert "0.850 ± 0.071" in page


def test_missing_run_json_raises_data_error_naming_it(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    (run_dir / "run.json").unlink()
    with pytest.raises(DataError, match=r"run\.json"):
        write_report(run_dir)
    with pytest.raises(DataError, match=r"run\.json"):
        write_summary_markdown(run_dir)
    assert not (run_dir / "report.html").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"results\.csv.*does not exist"),
        ("", r"results\.csv.*empty"),
        ("fusion,seed,accuracy\n", r"results\.csv.*no rows"),
        ("model,accuracy\nconcat,0.5\n", r"results\.csv.*'fusion' and 'seed'"),
        ('fusion,seed,accuracy\n"concat,0,0.5\n', r"results\.csv"),
        ("fusion,seed,note\nconcat,0,fine\n", r"results\.csv.*no numeric metric"),
    ],
)
def test_bad_results_csv_raises_data_error(tmp_path: Path, content: str | None, message: str) -> None:
    run_dir = make_run(tmp_path / "run")
    if content is None:
        (run_dir / "results.csv").unlink()
    else:
        (run_dir / "results.csv").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        write_report(run_dir)


def test_unparsable_run_json_raises_data_error(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    (run_dir / "run.json").write_text("{'dataset': ", encoding="utf-8")
    with pytest.raises(DataError, match=r"run\.json.*not valid JSON"):
        write_report(run_dir)
    (run_dir / "run.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match=r"run\.json.*JSON object"):
        write_report(run_dir)


def test_missing_run_directory_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        write_report(tmp_path / "nowhere")


def test_summary_markdown_names_the_best_fusion(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    path = write_summary_markdown(run_dir)
    assert path == run_dir / "summary.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Fusion comparison on toy-motions")
    assert "Best fusion: **attention**" in text
    assert "0.930 ± 0.028" in text
    # Margin over the runner-up (concat 0.850): 0.080, i.e. 9.4 % relative.
    assert "by 0.080 (9.4 % relative)" in text
    # Table: header, alignment row, one row per fusion, ranked; the HTML-like name is escaped for Markdown.
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(CLASSIFICATION_METRICS)
    assert table[2].startswith("| 1 | attention |")
    assert "\\<b\\>x\\</b\\>" in table[4]
    assert "-0.280" in table[4]  # 0.650 - 0.930


def test_summary_markdown_regression_prefers_lower_mae(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", task="regression")
    text = write_summary_markdown(run_dir).read_text(encoding="utf-8")
    assert "Best fusion: **gated**" in text
    assert "lower is better" in text


def test_single_seed_run_reports_without_spread(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", with_summary=False)
    results = pd.read_csv(run_dir / "results.csv")
    results[results["seed"] == 0].to_csv(run_dir / "results.csv", index=False)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert len(_images(page)) == 1 + 3 + 3
    text = write_summary_markdown(run_dir).read_text(encoding="utf-8")
    assert "single seed" in text
    assert "Best fusion: **attention** with test accuracy 0.950 (n=1) (a single seed)" in text


def test_figure_text_with_dollar_signs_does_not_break_mathtext(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    results = pd.read_csv(run_dir / "results.csv", converters={"fusion": str})
    results["fusion"] = results["fusion"].replace({"concat": "a$b_{x"})
    results.to_csv(run_dir / "results.csv", index=False)
    for seed in (0, 1):
        (run_dir / "models" / f"concat-seed{seed}").rename(run_dir / "models" / f"a$b_{{x-seed{seed}")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "a$b_{x" in page
    assert len(_images(page)) == 7


def test_report_does_not_touch_pyplot_state(tmp_path: Path) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    figures_before = plt.get_fignums()
    write_report(make_run(tmp_path / "run"))
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == figures_before


def test_confusion_matrix_sums_over_seeds(tmp_path: Path) -> None:
    # Only one fusion keeps its test metrics, and its two seeds' matrices sum to 8 + 7 = 15 predictions.
    run_dir = make_run(tmp_path / "run")
    for fusion in ("attention", "<b>x</b>"):
        for seed in (0, 1):
            (run_dir / "models" / f"{fusion}-seed{seed}" / "test_metrics.json").unlink()
    page = write_report(run_dir).read_text(encoding="utf-8")
    confusion = page[page.index('id="confusion"') : page.index('id="per-seed"')]
    images = _images(confusion)
    assert len(images) == 1
    assert 'alt="Confusion matrix of concat (15 test predictions over 2 seeds)"' in confusion
    assert "No confusion matrix for attention" in confusion


def test_fusion_without_a_main_metric_is_ranked_last(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", with_summary=False)
    results = pd.read_csv(run_dir / "results.csv", converters={"fusion": str})
    results.loc[results["fusion"] == "attention", "accuracy"] = float("nan")
    results.to_csv(run_dir / "results.csv", index=False)
    page = write_report(run_dir).read_text(encoding="utf-8")
    table = page[page.index('id="comparison"') : page.index('id="curves"')]
    assert table.index("concat") < table.index("&lt;b&gt;x") < table.index("attention")
    assert "Best fusion: <strong>concat</strong>" in page


def test_summary_written_by_summarize_runs_is_understood(tmp_path: Path) -> None:
    # mmfuse.evaluate.metrics.summarize_runs names the columns params_mean / train_seconds_mean and writes a
    # 0.0 standard deviation for a single run; the report must read the former and not show the latter.
    run_dir = make_run(tmp_path / "run")
    summary = pd.read_csv(run_dir / "summary.csv", converters={"fusion": str})
    summary = summary.rename(columns={"params": "params_mean"})
    summary.loc[summary["fusion"] == "concat", "accuracy_std"] = 0.0
    summary.to_csv(run_dir / "summary.csv", index=False)
    results = pd.read_csv(run_dir / "results.csv", converters={"fusion": str})
    results = results[~((results["fusion"] == "concat") & (results["seed"] == 1))]
    results.to_csv(run_dir / "results.csv", index=False)
    page = write_report(run_dir).read_text(encoding="utf-8")
    table = page[page.index('id="comparison"') : page.index('id="curves"')]
    assert "0.850 ± 0.000" not in table and "0.850 (n=1)</td>" in table  # concat: one seed left, n=1 said
    assert "1,000" in table and "2,000" in table  # parameters from params_mean


def _set_accuracy(
    run_dir: Path, accuracy: dict[str, tuple[float, float]], rename: dict[str, str] | None = None
) -> None:
    """Rewrite results.csv with the given per-seed accuracies (and renamed runs); summary.csv is dropped."""
    results = pd.read_csv(run_dir / "results.csv", converters={"fusion": str})
    results["fusion"] = results["fusion"].replace(rename or {})
    for fusion, values in accuracy.items():
        for seed, value in enumerate(values):
            results.loc[(results["fusion"] == fusion) & (results["seed"] == seed), "accuracy"] = value
    results.to_csv(run_dir / "results.csv", index=False)
    (run_dir / "summary.csv").unlink(missing_ok=True)


def _headline_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Task:")) + 2
    return lines[start : lines.index("", start)]


def test_tied_fusions_are_reported_as_a_tie_not_ranked_by_name(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    _set_accuracy(run_dir, {"concat": (0.95, 0.91)})  # the same seeds as attention
    lines = _headline_lines(write_summary_markdown(run_dir).read_text(encoding="utf-8"))
    head, tied = lines[0].split(": ", 1)
    assert head == "2 fusions tie for the best test accuracy, 0.930 ± 0.028 (mean ± std over 2 seeds)"
    assert sorted(tied.rstrip(".").split(", ")) == ["**attention**", "**concat**"]
    assert not any(line.startswith("Best fusion") for line in lines)
    assert lines[1].startswith("They beat the next fusion \\<b\\>x\\</b\\>")
    page = write_report(run_dir).read_text(encoding="utf-8")
    # Both tied accuracies are highlighted as best; attention's val accuracy (the same numbers) is not: the
    # checkpoints were chosen on the validation split.
    assert page.count('<td class="num best">0.930 ± 0.028</td>') == 2
    assert page.count('<td class="num">0.930 ± 0.028</td>') == 1


def test_summary_states_best_fusion_against_best_unimodal_baseline_first(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    _set_accuracy(run_dir, {"unimodal-accel": (0.95, 0.91)}, rename={"<b>x</b>": "unimodal-accel"})
    lines = _headline_lines(write_summary_markdown(run_dir).read_text(encoding="utf-8"))
    # The baseline ties the best fusion: said right after the best fusion, and it is not one of "the other fusions".
    assert lines[0].startswith("Best fusion: **attention** with test accuracy 0.930 ± 0.028")
    assert lines[1].startswith("Against the best unimodal baseline, unimodal-accel (0.930 ± 0.028): a tie.")
    assert "Averaged over the other 1 fusion," in lines[3]


def test_significance_columns_of_the_summary_qualify_the_baseline_comparison(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    _set_accuracy(run_dir, {"unimodal-accel": (0.70, 0.72)}, rename={"<b>x</b>": "unimodal-accel"})
    summary = pd.DataFrame(
        {
            "fusion": ["attention", "concat", "unimodal-accel"],
            "ci_low": [0.88, 0.85, 0.66],
            "ci_high": [0.97, 0.93, 0.76],
            "vs_best_unimodal": ["better", "not different", "reference"],
            "p_vs_best_unimodal": [0.012, 0.2, float("nan")],
        }
    )
    summary.to_csv(run_dir / "summary.csv", index=False)
    text = write_summary_markdown(run_dir).read_text(encoding="utf-8")
    lines = _headline_lines(text)
    assert lines[1] == (
        "Against the best unimodal baseline (chosen on validation), unimodal-accel (0.710 ± 0.014), it is "
        "significantly better: +0.220 accuracy; paired permutation test p = 0.012."
    )
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ") and " | " in line}
    assert "| [0.880, 0.970] | better (p = 0.012) |" in rows["attention"]
    assert "| [0.850, 0.930] | not different (p = 0.2) |" in rows["concat"]
    assert "| [0.660, 0.760] | reference |" in rows["unimodal-accel"]
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert '<td class="sig-better">better (p\u00a0=\u00a00.012)</td>' in page
    # An interval is a number (one line); a verdict may wrap only before its p: "not different" stays whole.
    assert '<td class="num">[0.880, 0.970]</td>' in page
    assert "<td>not\u00a0different (p\u00a0=\u00a00.2)</td>" in page
    assert '<th class="num">95 % CI</th><th>vs best unimodal</th>' in page
    assert "pale bands: 95 % confidence interval" in page
    assert "no confidence intervals" not in page


def test_a_run_without_significance_columns_gets_a_note_and_no_columns(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")  # like an older run: summary.csv without ci_low / p_vs_best_unimodal
    text = write_summary_markdown(run_dir).read_text(encoding="utf-8")
    assert "95 % CI" not in text and "vs best unimodal" not in text
    assert "This run has no confidence intervals or tests against the best unimodal baseline" in text
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "vs best unimodal</th>" not in page and "pale bands" not in page


def test_the_worse_verdict_is_said_and_marked(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    _set_accuracy(run_dir, {"unimodal-accel": (0.99, 0.98)}, rename={"<b>x</b>": "unimodal-accel"})
    summary = pd.DataFrame(
        {
            "fusion": ["attention", "concat", "unimodal-accel"],
            "vs_best_unimodal": ["worse", "worse", "reference"],
            "p_vs_best_unimodal": [0.0004, 0.0002, float("nan")],
        }
    )
    summary.to_csv(run_dir / "summary.csv", index=False)
    lines = _headline_lines(write_summary_markdown(run_dir).read_text(encoding="utf-8"))
    assert lines[1].startswith("Against the best unimodal baseline (chosen on validation), unimodal-accel")
    assert lines[1].endswith("it is significantly worse: −0.055 accuracy; paired permutation test p < 0.001.")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert '<td class="sig-worse">worse (p\u00a0&lt;\u00a00.001)</td>' in page


def _confusion_section(page: str) -> str:
    return page[page.index('id="confusion"') : page.index('id="per-seed"')]


def test_identical_confusion_matrices_share_one_figure(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    same = json.loads((run_dir / "models" / "concat-seed0" / "test_metrics.json").read_text(encoding="utf-8"))
    (run_dir / "models" / "attention-seed0" / "test_metrics.json").write_text(json.dumps(same), encoding="utf-8")
    confusion = _confusion_section(write_report(run_dir).read_text(encoding="utf-8"))
    assert len(_images(confusion)) == 2  # attention = concat, and <b>x</b>
    assert "Identical summed matrices: attention, concat." in confusion
    assert "share one figure" in confusion
    assert "<details>" not in confusion


def test_many_distinct_confusion_matrices_fold_all_but_best_baseline_and_worst(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", with_summary=False)
    results = pd.read_csv(run_dir / "results.csv", converters={"fusion": str})
    extra = []
    for k, name in enumerate(["late", "gated", "unimodal-accel", "unimodal-gyro"]):
        for seed in (0, 1):
            accuracy = 0.5 + 0.05 * k if not name.startswith("unimodal-") else 0.2 + 0.1 * k
            accuracy = 0.4 if name == "late" else accuracy  # ties unimodal-accel (0.2 + 0.1 * 2) for the lowest
            extra.append({"fusion": name, "seed": seed, "params": 10, "train_seconds": 1.0, "best_epoch": 1,
                          "accuracy": accuracy, "f1_weighted": 0.5, "f1_macro": 0.5, "val_accuracy": 0.5})  # fmt: skip
            model_dir = run_dir / "models" / f"{name}-seed{seed}"
            model_dir.mkdir(parents=True)
            matrix = [[1, 0, 0], [0, 1, 0], [k + 2, 0, seed]]
            metrics = {
                "accuracy": accuracy,
                "confusion_matrix": matrix,
                "class_names": ["walking", "running", "standing"],
            }
            (model_dir / "test_metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    pd.concat([results, pd.DataFrame(extra)]).to_csv(run_dir / "results.csv", index=False)
    confusion = _confusion_section(write_report(run_dir).read_text(encoding="utf-8"))
    shown, folded = confusion.split("<details>")
    # 7 distinct matrices: attention (best fusion), unimodal-gyro (best baseline), the lowest (a tie) open
    assert len(_images(shown)) == 3
    assert len(_images(folded)) == 4
    assert "Show the other 4 confusion matrices" in folded
    assert 'alt="Confusion matrix of attention' in shown and "Shown as the best fusion." in shown
    assert 'alt="Confusion matrix of unimodal-gyro' in shown and "Shown as the best unimodal baseline." in shown
    lowest = [f for f in ("late", "unimodal-accel") if f'alt="Confusion matrix of {f}' in shown]
    assert len(lowest) == 1  # one of the two tied lowest is shown, and its caption names the other
    other = {"late": "unimodal-accel", "unimodal-accel": "late"}[lowest[0]]
    assert f"Shown as the lowest test score (tied with {other})." in shown


def test_the_table_shows_the_validation_main_metric_and_loss_and_crowns_neither(tmp_path: Path) -> None:
    """results.csv has val_<metric> for every metric and val_loss; the table keeps val accuracy and val loss."""
    run_dir = make_run(tmp_path / "run", with_summary=False)
    results = pd.read_csv(run_dir / "results.csv", converters={"fusion": str})
    results["val_f1_weighted"] = results["val_f1_macro"] = 0.5
    results["val_loss"] = [0.41, 0.43, 0.61, 0.63, 0.81, 0.83]  # means 0.42 / 0.62 / 0.82
    results.to_csv(run_dir / "results.csv", index=False)
    page = write_report(run_dir).read_text(encoding="utf-8")
    table = page[page.index('id="comparison"') :]
    table = table[: table.index("</table>")]
    assert "val accuracy" in table and "val loss" in table
    assert "val weighted F1" not in table and "val macro F1" not in table
    for mean in ("0.42", "0.62", "0.82"):
        cell = table[: table.index(f"{mean}0 ± ")].rsplit("<td", 1)[1]
        assert "best" not in cell  # the lowest validation loss is the selection at work, never crowned
    assert "columns score each kept checkpoint on the validation split, which chose it" in page


def test_one_seed_says_n_1_and_tiny_values_are_not_rounded_to_zero(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", with_summary=False)
    results = pd.read_csv(run_dir / "results.csv", converters={"fusion": str})
    results["val_loss"] = [3e-6, 4e-6, 1.2, 1.3, 0.9, 0.8]  # concat's validation loss next to nothing
    results.to_csv(run_dir / "results.csv", index=False)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "3.5e-06 ± &lt;0.001" in page  # not "0.000 ± 0.000"
    table = page[page.index('id="comparison"') :]
    cell = table[: table.index("3.5e-06 ± &lt;0.001")].rsplit("<td", 1)[1]
    assert "best" not in cell  # the validation loss chose the checkpoint: never crowned
    results[results["seed"] == 0].to_csv(run_dir / "results.csv", index=False)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "0.950 (n=1)" in page
    assert "± 0.0" not in page
