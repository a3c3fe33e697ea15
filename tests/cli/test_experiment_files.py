"""Experiment files: --config for compare, tune and analyze; config.yaml reruns a run; best.json is a preset."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import typer.main
import yaml
from typer.testing import CliRunner

from experiment_support import read_csv, without_time, write_shifted_toy
from mmfuse.cli._app import EXPERIMENT_COMMANDS, EXPERIMENT_SCHEMAS, _command, app
from mmfuse.cli._common import experiment_options
from mmfuse.evaluate.protocol import Preset, read_preset
from mmfuse.evaluate.tune import TuneConfig, tune

runner = CliRunner()


@pytest.mark.parametrize("name", EXPERIMENT_COMMANDS)
def test_every_option_of_an_experiment_command_is_a_key_of_its_file(name: str) -> None:
    """Fails when a command gains an option its experiment file cannot hold (or loses --config)."""
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    assert "--config" in {o for p in command.params for o in getattr(p, "opts", [])}
    keys = set(EXPERIMENT_SCHEMAS[name].model_fields)
    options = {p.name for p in command.params if p.name not in {"config", "help"}}
    missing = sorted(options - keys - {"mmfuse_click_context"})
    assert missing == [], f"options of 'mmfuse {name}' without a key in its experiment file: {missing}"
    assert keys <= options | {"plugin"}
    assert {"dataset", "plugin"} <= keys


# A toy command registered like the real ones: what the file, the command line and the defaults resolve to.
seen: dict[str, Any] = {}


def _toy(
    seeds: Annotated[int, typer.Option("--seeds", "-s", min=1, help="Seeds.")] = 3,
    fusion: Annotated[list[str], typer.Option("--fusion", "-f", help="Fusions.")] = ["all"],  # noqa: B006
    out: Annotated[Path | None, typer.Option("--out", help="Where.")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Fast.")] = False,
) -> None:
    seen.clear()
    seen.update(seeds=seeds, fusion=fusion, out=out, fast=fast, resolved=experiment_options())


toy_app = typer.Typer()
toy_app.command("toy")(_command(_toy, experiment="toy"))
toy_app.command("other")(_command(lambda: None))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("file", "argv", "expected"),
    [
        ("seeds: 2\nfusion: concat\nout: runs/a\n", [], {"seeds": 2, "fusion": ["concat"], "out": Path("runs/a")}),
        ("seeds: 2\nfusion: [a, b]\n", ["--seeds", "5"], {"seeds": 5, "fusion": ["a", "b"], "out": None}),
        ("fast: true\n", ["-f", "x"], {"seeds": 3, "fusion": ["x"], "fast": True}),
        # the command line wins even when it repeats the default
        ("seeds: 2\n", ["--seeds", "3"], {"seeds": 3}),
    ],
)
def test_the_command_line_overrides_the_file_which_overrides_the_defaults(
    tmp_path: Path, file: str, argv: list[str], expected: dict[str, Any]
) -> None:
    exp = _write(tmp_path / "exp.yaml", file)
    result = runner.invoke(toy_app, ["toy", "--config", str(exp), *argv])
    assert result.exit_code == 0, result.output
    assert {k: seen[k] for k in expected} == expected
    resolved = seen["resolved"]
    assert set(resolved) == {"seeds", "fusion", "out", "fast", "plugin"}
    assert resolved["seeds"] == seen["seeds"] and (resolved["out"] is None or isinstance(resolved["out"], str))


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("seed: 2\n", r"unknown key\(s\) 'seed' \(did you mean 'seeds'\?\)\. Valid keys: seeds, fusion, out, fast"),
        ("seeds: many\n", r"invalid values: seeds: Input should be a valid integer.*got 'many'"),
        ("seeds: 0\n", r"seeds: Input should be greater than or equal to 1"),
        ("- seeds\n", r"must hold a mapping of keys to values\. Got a list"),
        ("seeds: [\n", r"is not valid YAML"),
    ],
)
def test_a_bad_file_is_one_error_line_naming_the_file_and_key(tmp_path: Path, file: str, message: str) -> None:
    exp = _write(tmp_path / "exp.yaml", file)
    result = runner.invoke(toy_app, ["toy", "--config", str(exp)])
    assert result.exit_code == 2
    assert str(exp) in result.output.replace("\n", "")
    assert re.search(message, result.output.replace("\n", "")), result.output


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    result = runner.invoke(toy_app, ["toy", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml" in result.output and "does not exist" in result.output


def test_commands_without_an_experiment_file_have_no_config_option() -> None:
    result = runner.invoke(toy_app, ["other", "--config", "x.yaml"])
    assert result.exit_code != 0 and "No such option" in result.output


# ------------------------------------------------------------------------------------------- compare and tune


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("exp") / "toy"
    return write_shifted_toy(path, name="toy-exp", n=24, seed=1, noise_modality=True)


def _metrics(run: Path) -> list[dict[str, str]]:
    return without_time(read_csv(run / "results.csv"))


@pytest.fixture(scope="module")
def first_run(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compare run made from an experiment file with an inline preset, one option given on the command line."""
    folder = tmp_path_factory.mktemp("first")
    exp = _write(
        folder / "exp.yaml",
        f"dataset: {toy_data}\nfusion: concat,gated\nseeds: 1\nepochs: 2\ndevice: cpu\nhidden: 8\n"
        "preset: {train: {lr: 1e-2, batch_size: 4}}\n",
    )
    done = runner.invoke(app, ["compare", "--config", str(exp), "--out", str(folder / "one"), "--seeds", "2"])
    assert done.exit_code == 0, done.output
    return folder / "one"


def test_config_yaml_of_a_run_reruns_it_exactly(first_run: Path, tmp_path: Path) -> None:
    written = (first_run / "config.yaml").read_text()
    assert "seeds: 2" in written and "hidden: 8" in written and "lr: 0.01" in written
    meta = json.loads((first_run / "run.json").read_text())
    assert meta["preset"] == "experiment file" and meta["train_config"]["lr"] == 0.01

    again = runner.invoke(app, ["compare", "--config", str(first_run / "config.yaml"), "--out", str(tmp_path / "two")])
    assert again.exit_code == 0, again.output
    assert _metrics(first_run) == _metrics(tmp_path / "two")
    assert len(_metrics(first_run)) == 4
    rerun = json.loads((tmp_path / "two" / "run.json").read_text())
    assert {k: rerun[k] for k in ("preset", "train_config", "model_config", "fusions", "seeds")} == {
        k: meta[k] for k in ("preset", "train_config", "model_config", "fusions", "seeds")
    }
    # without --out the rerun aims at the run itself: refused, as any existing --out is
    refused = runner.invoke(app, ["compare", "--config", str(first_run / "config.yaml")])
    assert refused.exit_code == 2 and "already holds a run" in refused.output.replace("\n", "")


def test_analyze_reads_its_run_directory_and_options_from_a_file(first_run: Path, tmp_path: Path) -> None:
    exp = _write(tmp_path / "a.yaml", f"run_dir: {first_run}\nonly: complexity\ndevice: cpu\n")
    done = runner.invoke(app, ["analyze", "--config", str(exp)])
    assert done.exit_code == 0, done.output
    assert (first_run / "final_results.csv").is_file() and (first_run / "analysis").is_dir()
    missing = runner.invoke(app, ["analyze", "--config", str(_write(tmp_path / "b.yaml", "device: cpu\n"))])
    assert missing.exit_code == 2 and "needs a run directory" in missing.output


def test_tune_reads_a_file_and_the_command_line_overrides_it(toy_data: Path, tmp_path: Path) -> None:
    exp = _write(
        tmp_path / "t.yaml",
        f"dataset: {toy_data}\nfusion: concat\ntrials: 3\nseeds: 1\nepochs: 1\ndevice: cpu\n"
        f"sampler: random\nout: {tmp_path / 'tune'}\n",
    )
    done = runner.invoke(app, ["tune", "--config", str(exp), "--trials", "1"])
    assert done.exit_code == 0, done.output
    trials = read_csv(tmp_path / "tune" / "trials.csv")
    meta = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert len(trials) == 1 and meta["sampler"] == "random" and meta["epochs"] == 1


def test_tune_best_json_is_the_preset_compare_reads(toy_data: Path, tmp_path: Path) -> None:
    result = tune(
        TuneConfig(
            dataset=str(toy_data),
            fusions=["concat"],
            trials=2,
            seeds=1,
            epochs=2,
            out_dir=str(tmp_path / "tune"),
            search_space={"model.hidden": [6, 10]},
            pruner="none",
            device="cpu",
        )
    )
    chosen = result.best["concat"]["model"]["hidden"]
    preset = read_preset(tmp_path / "tune" / "best.json")
    assert preset == result.preset and preset.source["dataset"] == "toy-exp"
    assert preset.settings("concat")[0]["hidden"] == chosen and preset.settings("concat")[1]["epochs"] == 2
    assert read_preset(tmp_path / "tune").settings("concat") == preset.settings("concat")  # the folder works too
    again = tune(  # a search that starts from the tune result: its trial 0 is the chosen configuration
        TuneConfig(
            dataset=str(toy_data),
            trials=1,
            seeds=1,
            out_dir=str(tmp_path / "tune2"),
            search_space={"model.hidden": [6, 10]},
            pruner="none",
            device="cpu",
            preset=str(tmp_path / "tune"),
        )
    )
    assert again.trials[0]["model.hidden"] == chosen and again.trials[0]["trial"] == 0

    out = tmp_path / "run"
    done = runner.invoke(
        app,
        ["compare", "-d", str(toy_data), "-f", "concat", "-s", "1", "--device", "cpu", "-o", str(out),
         "--preset", str(tmp_path / "tune" / "best.json")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    model = json.loads((out / "models" / "concat-seed0" / "config.json").read_text())
    assert model["model_config"]["hidden"] == chosen and model["train_config"]["epochs"] == 2
    assert json.loads((out / "run.json").read_text())["preset"] == str(tmp_path / "tune" / "best.json")
    written = Preset.from_dict("x", yaml.safe_load((out / "config.yaml").read_text())["preset"])
    assert written.settings("concat") == preset.settings("concat")


def test_a_preset_with_an_unknown_setting_is_refused_with_the_valid_ones(toy_data: Path, tmp_path: Path) -> None:
    bad = _write(tmp_path / "p.yaml", "train: {learning_rate: 0.1}\n")
    done = runner.invoke(app, ["compare", "-d", str(toy_data), "-o", str(tmp_path / "r"), "--preset", str(bad)])
    assert done.exit_code == 2
    assert "'learning_rate' in 'train' is not a TrainConfig field" in done.output.replace("\n", "")
    assert not (tmp_path / "r").exists()
