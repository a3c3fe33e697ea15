"""``compare --causal``: streaming-ready models that ``StreamingSession.from_dir`` and ``mmfuse serve`` run as made.

One tiny causal run (hidden 8, one epoch, one seed, two fusions) on basic-motions is shared by the module.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mmfuse.cli._app import app
from mmfuse.data import collate, load_dataset
from mmfuse.errors import MmfuseWarning
from mmfuse.evaluate.compare import CompareConfig, CompareResult, _drop_non_causal, compare
from mmfuse.evaluate.protocol import causal_settings, not_causal_reason, resolve_fusions
from mmfuse.fusion import list_fusions
from mmfuse.models import load_model, read_model_info
from mmfuse.preprocess import ModalityNormalizers
from mmfuse.stream import StreamingSession, load_model_assets
from mmfuse.types import LabelLevel, TaskType

FUSIONS = ["concat", "cross_attention"]


def _config(out: Path, **changes: object) -> CompareConfig:
    kwargs: dict[str, object] = {
        "fusions": list(FUSIONS),
        "seeds": 1,
        "epochs": 1,
        "out_dir": str(out),
        "model_overrides": {"hidden": 8},
        "device": "cpu",
        "causal": True,
    }
    kwargs.update(changes)
    return CompareConfig(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory: pytest.TempPathFactory) -> CompareResult:
    return compare(_config(tmp_path_factory.mktemp("causal") / "run"))


def test_causal_models_are_causal_and_record_the_stream(causal_run: CompareResult) -> None:
    run_json = json.loads((causal_run.out_dir / "run.json").read_text(encoding="utf-8"))
    assert run_json["causal"] is True
    assert run_json["model_config"]["causal"] is True
    for fusion in FUSIONS:
        model_dir = causal_run.out_dir / "models" / f"{fusion}-seed0"
        model = load_model(model_dir)
        assert model.is_causal and model.fusion.is_causal
        assert model.config.pooling == "last" and not model.config.bidirectional
        info = read_model_info(model_dir)
        assert info["stream"] == {"rate": 10.0, "kinds": {"accelerometer": "continuous", "gyroscope": "continuous"}}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_streaming_session_from_dir_equals_the_offline_model(causal_run: CompareResult, fusion: str) -> None:
    model_dir = causal_run.out_dir / "models" / f"{fusion}-seed0"
    session = StreamingSession.from_dir(model_dir, start=0.0)  # no rate, no stream.json: config.json has it
    assert session.config.rate == 10.0
    record = load_dataset("basic-motions").split("test")[0]
    for modality in sorted(record.values):
        session.push_many(modality, record.timestamps, record.values[modality])
    results = session.finish()
    assert len(results) == len(record)
    model = load_model(model_dir).eval()
    batch = collate([ModalityNormalizers.load(model_dir).transform_record(record)])
    with torch.no_grad():
        offline = torch.softmax(model(batch)[0], dim=-1).numpy()
    np.testing.assert_allclose(results[-1].raw, offline, atol=1e-5)  # the last step saw the whole recording


def test_serve_app_starts_on_a_compare_model_without_a_rate(causal_run: CompareResult) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from mmfuse.stream.server import ServerConfig, create_app

    app_ = create_app(causal_run.out_dir / "models" / "concat-seed0", ServerConfig())
    transport = httpx.ASGITransport(app=app_)

    async def health() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/health")).status_code

    import asyncio

    assert asyncio.run(health()) == 200


def test_a_non_causal_compare_model_is_refused_by_streaming(tmp_path: Path) -> None:
    result = compare(_config(tmp_path / "run", fusions=["concat"], causal=False))
    model_dir = result.out_dir / "models" / "concat-seed0"
    with pytest.raises(Exception, match="causal"):
        load_model_assets(model_dir)
    cli = CliRunner().invoke(app, ["serve", str(model_dir)])
    assert cli.exit_code != 0 and "causal" in cli.output
    assert "serving" not in cli.output  # refused before it claims to serve


def test_a_named_fusion_that_cannot_be_causal_is_refused_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"'bottleneck' cannot be trained with causal=True.*summarise the whole"):
        compare(_config(out, fusions=["concat", "bottleneck"]))
    assert not out.exists()  # refused before anything was written


def test_all_skips_the_fusions_that_cannot_be_causal_with_the_reason() -> None:
    config = CompareConfig(fusions=["all"], causal=True)
    skipped = _drop_non_causal(config, resolve_fusions(["all"], modalities=["a", "b"]))
    not_causal = [f for f in list_fusions() if not_causal_reason(f) is not None]
    assert [name for name, _ in skipped] == not_causal == ["bottleneck"]
    assert "later steps" in skipped[0][1]


@pytest.mark.parametrize("fusion", [*list_fusions(), "unimodal-a"])
def test_causal_settings_make_every_causal_capable_fusion_causal(fusion: str) -> None:
    from mmfuse.models import ModelConfig, build_model

    if not_causal_reason(fusion) is not None:
        with pytest.raises(ValueError, match="cannot be trained causal"):
            causal_settings(fusion, {}, label_level="sample")
        return
    kwargs = causal_settings(fusion, {"hidden": 8, "pooling": "mean", "bidirectional": True}, label_level="sample")
    name = "concat" if fusion.startswith("unimodal-") else fusion
    model = build_model(ModelConfig({"a": 2, "b": 3}, out_dim=2, fusion=name, num_heads=2, **kwargs))
    assert model.is_causal and model.fusion.is_causal


def test_cli_compare_causal_refuses_a_non_causal_fusion(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MmfuseWarning)
        result = CliRunner().invoke(
            app, ["compare", "-f", "bottleneck", "--causal", "-s", "1", "-e", "1", "-o", str(tmp_path / "r")]
        )
    assert result.exit_code != 0
    assert "bottleneck" in result.output and "cannot be trained with causal=True" in result.output


def test_causal_is_a_key_of_the_compare_experiment_file(tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"fusion: [bottleneck]\ncausal: true\nseeds: 1\nepochs: 1\nout: {tmp_path / 'r'}\n")
    result = CliRunner().invoke(app, ["compare", "--config", str(exp)])
    assert result.exit_code != 0
    assert "'bottleneck' cannot be trained with causal=True" in result.output  # the file's causal: true applied


def test_a_data_set_without_a_grid_rate_warns_and_serving_then_needs_a_rate(tmp_path: Path) -> None:
    from mmfuse.data import ModalitySpec, SequenceRecord, TaskSpec, write_dataset
    from mmfuse.errors import StreamError
    from mmfuse.evaluate.protocol import stream_info

    rng = np.random.default_rng(0)
    records = [
        SequenceRecord(
            id=f"s{i}",
            group=f"g{i}",
            split=("train", "train", "val", "test")[i % 4],
            values={"a": rng.normal(size=(6, 2)).astype(np.float32), "b": rng.normal(size=(6, 3)).astype(np.float32)},
            masks={},
            label=i % 2,
        )
        for i in range(8)
    ]  # no timestamps and no recorded rate
    path = write_dataset(
        tmp_path / "ds",
        records,
        name="no-rate",
        modalities=[ModalitySpec("a", 2), ModalitySpec("b", 3)],
        task=TaskSpec(TaskType.CLASSIFICATION, LabelLevel.SAMPLE, class_names=("x", "y")),
    )
    from mmfuse.data import open_dataset

    assert stream_info(open_dataset(path)) is None
    with pytest.warns(MmfuseWarning, match="records no regular grid rate"):
        result = compare(_config(tmp_path / "run", dataset=str(path), fusions=["gated"]))
    model_dir = result.out_dir / "models" / "gated-seed0"
    assert "stream" not in read_model_info(model_dir)
    with pytest.raises(StreamError, match="records no grid rate"):
        StreamingSession.from_dir(model_dir)
    assert StreamingSession.from_dir(model_dir, rate=4.0).config.rate == 4.0
