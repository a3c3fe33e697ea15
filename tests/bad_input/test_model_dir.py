"""Bad model directories through :func:`mmfuse.models.load_model`, :func:`mmfuse.stream.load_model_assets` (what
``mmfuse serve`` loads before it binds a port), :meth:`mmfuse.preprocess.ModalityNormalizers.load` (its normaliser
files) and the checkpoint loaders.

An incomplete or inconsistent model directory never loads and never serves: the error is a ``DataError`` (or
``FileNotFoundError``) naming the file, and ``mmfuse serve`` stops with exit code 2 before its banner.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bad_input_table import ACCEPTED, Case, assert_names, clean_failure, invoke, params
from safetensors.torch import load_file, save_file

from mmfuse.errors import DataError
from mmfuse.models import ModelConfig, build_model, load_model, save_model
from mmfuse.preprocess import ModalityNormalizers, ZScoreNormalizer
from mmfuse.stream import StreamConfig, StreamSpec, load_model_assets, save_stream_config
from mmfuse.train.checkpoint import load_pretrained, load_weights

LOAD = "load_model (model directory)"
SERVE = "load_model_assets / mmfuse serve (model directory)"
PRETRAINED = "load_pretrained / load_weights (weights file)"

DIMS = {"acc": 3, "gyro": 2}


def _config(**changes: Any) -> ModelConfig:
    base: dict[str, Any] = dict(
        out_dim=3, hidden=8, encoder="gru", bidirectional=False, causal=True, fusion="gated", label_level="step"
    )
    return ModelConfig(dict(DIMS), **{**base, **changes})


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete, servable model directory: weights, config, normalisers and stream.json."""
    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(build_model(_config()), d)
    rng = np.random.default_rng(0)
    ModalityNormalizers({"acc": ZScoreNormalizer(), "gyro": ZScoreNormalizer()}).fit_arrays(
        {"acc": (rng.normal(1, 2, size=(50, 3)), None), "gyro": (rng.normal(size=(50, 2)), None)}
    ).save(d)
    specs = {"acc": StreamSpec(3, rate=30.0), "gyro": StreamSpec(2, rate=30.0)}
    save_stream_config(d, StreamConfig(rate=30.0, specs=specs))
    return d


@pytest.fixture
def model_dir(base_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "m"
    shutil.copytree(base_dir, d)
    return d


# ------------------------------------------------------------------------------------------------ edits
def _weights(edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        path = d / "model.safetensors"
        save_file(edit(load_file(path)), path, metadata={"format": "mmfuse.model"})

    return run


def _first_float(state: dict[str, torch.Tensor]) -> str:
    return sorted(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)[0]


def _put(value: float) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    def edit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        k = _first_float(state)
        state[k] = state[k].clone()
        state[k].view(-1)[0] = value
        return state

    return edit


def _cast_all(dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    return lambda state: {k: (v * 10).to(dtype) for k, v in state.items()}


def _cast_one(dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    def edit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        k = _first_float(state)
        state[k] = state[k].to(dtype)
        return state

    return edit


def _drop_one(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state.pop(_first_float(state))
    return state


def _extra(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**state, "intruder.weight": torch.zeros(2)}


def _reshape(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    k = _first_float(state)
    state[k] = state[k].reshape(-1)[:-1].clone()
    return state


def _bytes(name: str, make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        path = d / name
        path.write_bytes(make(path.read_bytes()))

    return run


def _delete(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def _json(name: str, edit: Callable[[Any], Any]) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        path = d / name
        data = json.loads(path.read_text(encoding="utf-8"))
        out = edit(data)
        path.write_text(json.dumps(data if out is None else out), encoding="utf-8")

    return run


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(text, encoding="utf-8")


def _model_config(**changes: Any) -> Callable[[Path], None]:
    return _json("config.json", lambda info: info["model_config"].update(changes))


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


W, C = "model.safetensors", "config.json"

LOAD_CASES = [
    Case(
        LOAD,
        "weights-int64",
        "every float weight stored as int64 (truncated)",
        "DataError",
        (W, "dtype", "int64"),
        _weights(_cast_all(torch.int64)),
    ),
    Case(
        LOAD,
        "weights-int32-one",
        "one weight tensor stored as int32",
        "DataError",
        (W, "dtype", "int32"),
        _weights(_cast_one(torch.int32)),
    ),
    Case(
        LOAD,
        "weights-bool-one",
        "one weight tensor stored as bool",
        "DataError",
        (W, "dtype", "bool"),
        _weights(_cast_one(torch.bool)),
    ),
    Case(
        LOAD,
        "weights-float64-one",
        "one weight tensor stored as float64",
        "DataError",
        (W, "dtype", "float64"),
        _weights(_cast_one(torch.float64)),
    ),
    Case(
        LOAD,
        "weights-float16-all",
        "every weight stored as float16",
        "DataError",
        (W, "dtype", "float16"),
        _weights(_cast_all(torch.float16)),
    ),
    Case(LOAD, "weights-nan", "a NaN in one weight tensor", "DataError", (W, "NaN"), _weights(_put(float("nan")))),
    Case(LOAD, "weights-inf", "+inf in one weight tensor", "DataError", (W, "infinite"), _weights(_put(float("inf")))),
    Case(
        LOAD,
        "weights-neg-inf",
        "-inf in one weight tensor",
        "DataError",
        (W, "infinite"),
        _weights(_put(float("-inf"))),
    ),
    Case(LOAD, "weights-missing-key", "a weight tensor removed", "DataError", (W, "missing keys"), _weights(_drop_one)),
    Case(
        LOAD,
        "weights-extra-key",
        "an extra tensor the model does not have",
        "DataError",
        (W, "intruder.weight"),
        _weights(_extra),
    ),
    Case(
        LOAD, "weights-wrong-shape", "one tensor one element short", "DataError", (W, "wrong shape"), _weights(_reshape)
    ),
    Case(
        LOAD,
        "weights-truncated",
        "model.safetensors cut to half its bytes",
        "DataError",
        (W, "corrupt"),
        _bytes(W, lambda b: b[: len(b) // 2]),
    ),
    Case(
        LOAD, "weights-empty", "model.safetensors of zero bytes", "DataError", (W, "corrupt"), _bytes(W, lambda b: b"")
    ),
    Case(
        LOAD,
        "weights-garbage",
        "model.safetensors replaced by random bytes",
        "DataError",
        (W, "corrupt"),
        _bytes(W, lambda b: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
    ),
    Case(LOAD, "weights-deleted", "model.safetensors deleted", "FileNotFoundError", (W, "does not exist"), _delete(W)),
    Case(LOAD, "config-deleted", "config.json deleted", "FileNotFoundError", (C, "does not exist"), _delete(C)),
    Case(
        LOAD,
        "config-nested",
        "config.json nested 100 000 levels deep",
        "DataError",
        (C, "nested too deeply"),
        _text(C, _nested(100_000)),
    ),
    Case(
        LOAD,
        "config-not-json",
        "config.json that is not JSON",
        "DataError",
        (C, "not valid JSON"),
        _text(C, "{format: mmfuse"),
    ),
    Case(LOAD, "config-empty", "config.json of zero bytes", "DataError", (C, "not valid JSON"), _text(C, "")),
    Case(LOAD, "config-list", "config.json holding a list", "DataError", (C, "not an mmfuse model"), _text(C, "[1]")),
    Case(
        LOAD,
        "config-format",
        "config.json of another format",
        "DataError",
        (C, "not an mmfuse model"),
        _json(C, lambda i: i.update(format="other")),
    ),
    Case(
        LOAD,
        "config-version",
        "config.json of format_version 99",
        "DataError",
        (C, "format_version 99"),
        _json(C, lambda i: i.update(format_version=99)),
    ),
    Case(
        LOAD,
        "config-no-model-config",
        "config.json without model_config",
        "DataError",
        (C, "model_config"),
        _json(C, lambda i: i.pop("model_config")),
    ),
    Case(
        LOAD,
        "config-hidden-huge",
        "model_config hidden 100000 (weights for 8)",
        "DataError",
        (W, C, "wrong shape"),
        _model_config(hidden=100_000),
    ),
    Case(
        LOAD,
        "config-out-dim",
        "model_config out_dim 5 (weights for 3)",
        "DataError",
        (W, "wrong shape"),
        _model_config(out_dim=5),
    ),
    Case(
        LOAD,
        "config-modality-dim",
        "model_config modality acc of dim 4 (weights for 3)",
        "DataError",
        (W, "wrong shape"),
        _model_config(modality_dims={"acc": 4, "gyro": 2}),
    ),
    Case(
        LOAD,
        "config-modality-renamed",
        "model_config names modality 'accel' (weights for 'acc')",
        "DataError",
        (W, "missing keys", "unexpected keys"),
        _model_config(modality_dims={"accel": 3, "gyro": 2}),
    ),
    Case(
        LOAD,
        "config-fusion",
        "model_config fusion concat (weights of gated)",
        "DataError",
        (W, C),
        _model_config(fusion="concat"),
    ),
    Case(
        LOAD,
        "config-encoder",
        "model_config encoder lstm (weights of a GRU)",
        "DataError",
        (W, C),
        _model_config(encoder="lstm"),
    ),
    Case(
        LOAD,
        "config-layers",
        "model_config encoder_layers 2 (weights for 1)",
        "DataError",
        (W, "missing keys"),
        _model_config(encoder_layers=2),
    ),
    Case(
        LOAD,
        "config-unknown-key",
        "model_config with an unknown key",
        "DataError",
        (C, "invalid model_config", "Unknown ModelConfig key(s) ['colour']", "valid keys", "'hidden'"),
        _model_config(colour="red"),
    ),
    Case(
        LOAD,
        "config-hidden-string",
        "model_config hidden as a string",
        "DataError",
        (C, "invalid model_config"),
        _model_config(hidden="eight"),
    ),
    Case(
        LOAD,
        "config-unknown-fusion",
        "model_config names an unregistered fusion",
        "DataError",
        (C, "invalid model_config", "'fusion'", "'no-such-fusion'", "concat"),
        _model_config(fusion="no-such-fusion"),
    ),
    Case(LOAD, "intact", "the intact directory", ACCEPTED, (), lambda d: None),
]

N, NT, S = "normalizers.json", "normalizers.safetensors", "stream.json"


def _norm(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return _json(N, edit)


def _rename_norm(index: dict[str, Any]) -> None:
    index["modalities"]["audio"] = index["modalities"].pop("gyro")


def _refit(dims: dict[str, int]) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        rng = np.random.default_rng(1)
        norms = ModalityNormalizers({m: ZScoreNormalizer() for m in dims})
        norms.fit_arrays({m: (rng.normal(size=(20, k)), None) for m, k in dims.items()}).save(d)

    return run


def _stream(**changes: Any) -> Callable[[Path], None]:
    return _json(S, lambda cfg: cfg.update(changes))


def _spec(m: str, **changes: Any) -> Callable[[Path], None]:
    return _json(S, lambda cfg: cfg["specs"][m].update(changes))


def _specs(specs: dict[str, Any]) -> Callable[[Path], None]:
    return _json(S, lambda cfg: cfg.update(specs=specs))


ACC, GYRO = {"dim": 3, "rate": 30.0}, {"dim": 2, "rate": 30.0}

SERVE_CASES = [
    Case(
        SERVE,
        "norm-json-deleted",
        "normalizers.json deleted, normalizers.safetensors kept",
        "DataError",
        (N, NT, "unnormalised"),
        _delete(N),
    ),
    Case(
        SERVE,
        "norm-tensors-deleted",
        "normalizers.safetensors deleted, normalizers.json kept",
        "FileNotFoundError",
        (NT, "does not exist"),
        _delete(NT),
    ),
    Case(
        SERVE,
        "norm-other-modality",
        "normalizers.json names 'audio' instead of 'gyro'",
        "DataError",
        (N, "audio", "gyro"),
        _norm(_rename_norm),
    ),
    Case(
        SERVE,
        "norm-extra-modality",
        "normalisers fitted for acc, gyro and a third modality",
        "DataError",
        (N, "mag"),
        _refit({"acc": 3, "gyro": 2, "mag": 1}),
    ),
    Case(
        SERVE, "norm-missing-modality", "normalisers fitted for acc only", "DataError", (N, "gyro"), _refit({"acc": 3})
    ),
    Case(
        SERVE,
        "norm-wrong-dim",
        "the acc normaliser fitted on 4 features (model: 3)",
        "DataError",
        (N, "'acc'", "4 features"),
        _refit({"acc": 4, "gyro": 2}),
    ),
    Case(
        SERVE,
        "norm-nested",
        "normalizers.json nested 100 000 levels deep",
        "DataError",
        (N, "nested too deeply"),
        _text(N, _nested(100_000)),
    ),
    Case(
        SERVE,
        "norm-sha",
        "normalizers.safetensors from another save (SHA-256 differs)",
        "DataError",
        (NT, "SHA-256"),
        _bytes(NT, lambda b: b[:-1] + bytes([b[-1] ^ 1])),
    ),
    Case(
        SERVE,
        "norm-unfitted",
        "a normaliser saved unfitted",
        "DataError",
        (N, "not fitted"),
        lambda d: ModalityNormalizers({"acc": ZScoreNormalizer(), "gyro": ZScoreNormalizer()}).save(d),
    ),
    Case(SERVE, "weights-nan", "weights holding NaN", "DataError", (W, "NaN"), _weights(_put(float("nan")))),
    Case(SERVE, "stream-rate-negative", "stream.json rate -30", "DataError", (S, "rate", "-30"), _stream(rate=-30)),
    Case(SERVE, "stream-rate-zero", "stream.json rate 0", "DataError", (S, "rate"), _stream(rate=0)),
    Case(SERVE, "stream-rate-string", "stream.json rate '30'", "DataError", (S, "rate", "'30'"), _stream(rate="30")),
    Case(
        SERVE,
        "stream-rate-nan",
        "stream.json rate NaN",
        "DataError",
        (S, "rate", "nan"),
        _text(S, json.dumps({"rate": float("nan"), "specs": {"acc": ACC, "gyro": GYRO}})),
    ),
    Case(
        SERVE,
        "stream-rate-huge-int",
        "stream.json rate of 400 digits",
        "DataError",
        (S, "rate", "too large"),
        _text(S, '{"rate": 1' + "0" * 400 + ', "specs": {}}'),
    ),
    Case(SERVE, "stream-rate-bool", "stream.json rate true", "DataError", (S, "rate"), _stream(rate=True)),
    Case(
        SERVE,
        "stream-wrong-dim",
        "stream.json gives acc dim 4 (model: 3)",
        "DataError",
        (S, "'acc'", "dim 4"),
        _spec("acc", dim=4),
    ),
    Case(
        SERVE,
        "stream-unknown-modality",
        "stream.json adds modality 'mag'",
        "DataError",
        (S, "mag"),
        _specs({"acc": ACC, "gyro": GYRO, "mag": {"dim": 1, "rate": 10.0}}),
    ),
    Case(SERVE, "stream-missing-modality", "stream.json without gyro", "DataError", (S, "gyro"), _specs({"acc": ACC})),
    Case(SERVE, "stream-no-specs", "stream.json with an empty specs table", "DataError", (S, "specs"), _specs({})),
    Case(SERVE, "stream-specs-list", "stream.json specs as a list", "DataError", (S, "specs"), _stream(specs=[1])),
    Case(
        SERVE,
        "stream-spec-kind",
        "stream.json spec of kind 'video'",
        "DataError",
        (S, "video"),
        _spec("acc", kind="video"),
    ),
    Case(SERVE, "stream-spec-rate", "stream.json spec rate -5", "DataError", (S, "rate"), _spec("gyro", rate=-5)),
    Case(
        SERVE,
        "stream-spec-tolerance",
        "stream.json spec tolerance -1",
        "DataError",
        (S, "tolerance"),
        _spec("acc", tolerance=-1),
    ),
    Case(
        SERVE,
        "stream-spec-field",
        "stream.json spec with an unknown field",
        "DataError",
        (S, "colour"),
        _spec("acc", colour="red"),
    ),
    Case(
        SERVE,
        "stream-spec-collapse",
        "stream.json spec collapse 'median'",
        "DataError",
        (S, "median"),
        _spec("acc", collapse="median"),
    ),
    Case(SERVE, "stream-lateness", "stream.json lateness -1", "DataError", (S, "lateness"), _stream(lateness=-1)),
    Case(SERVE, "stream-alpha-zero", "stream.json alpha 0", "DataError", (S, "alpha"), _stream(alpha=0)),
    Case(SERVE, "stream-alpha-big", "stream.json alpha 2", "DataError", (S, "alpha"), _stream(alpha=2)),
    Case(SERVE, "stream-threshold", "stream.json threshold -1", "DataError", (S, "threshold"), _stream(threshold=-1)),
    Case(
        SERVE,
        "stream-max-history",
        "stream.json max_history 0",
        "DataError",
        (S, "max_history"),
        _stream(max_history=0),
    ),
    Case(SERVE, "stream-max-gap", "stream.json max_gap -1", "DataError", (S, "max_gap"), _stream(max_gap=-1)),
    Case(
        SERVE,
        "stream-unknown-key",
        "stream.json with an unknown key",
        "DataError",
        (S, "colour"),
        _stream(colour="red"),
    ),
    Case(
        SERVE,
        "stream-nested",
        "stream.json nested 100 000 levels deep",
        "DataError",
        (S, "nested too deeply"),
        _text(S, _nested(100_000)),
    ),
    Case(
        SERVE,
        "stream-not-json",
        "stream.json that is not JSON",
        "DataError",
        (S, "not a valid stream config"),
        _text(S, "rate=30"),
    ),
    Case(
        SERVE,
        "stream-no-rate",
        "stream.json without a rate",
        "DataError",
        (S, "rate"),
        _json(S, lambda cfg: cfg.pop("rate")),
    ),
    Case(
        SERVE,
        "no-directory",
        "a model directory that does not exist",
        "FileNotFoundError",
        ("does not exist",),
        lambda d: shutil.rmtree(d),
    ),
    Case(SERVE, "intact", "the intact directory", ACCEPTED, (), lambda d: None),
]


NORMALIZERS = "ModalityNormalizers.load (normaliser files)"

NORMALIZER_CASES = [
    Case(
        NORMALIZERS, "index-deleted", "normalizers.json deleted", "FileNotFoundError", (N, "does not exist"), _delete(N)
    ),
    Case(
        NORMALIZERS,
        "tensors-deleted",
        "normalizers.safetensors deleted",
        "FileNotFoundError",
        (NT, "does not exist"),
        _delete(NT),
    ),
    Case(
        NORMALIZERS,
        "tensors-truncated",
        "normalizers.safetensors cut to half its bytes",
        "DataError",
        (NT, "corrupt, truncated"),
        _bytes(NT, lambda b: b[: len(b) // 2]),
    ),
    Case(
        NORMALIZERS,
        "index-not-json",
        "normalizers.json cut off inside its first object",
        "DataError",
        (N, "not a valid JSON"),
        _text(N, '{"format": '),
    ),
    Case(
        NORMALIZERS,
        "unknown-normalizer",
        "normalizers.json names a normaliser 'robust' that does not exist",
        "DataError",
        (N, "'gyro'", "unknown normaliser 'robust'", "zscore"),
        _norm(lambda index: index["modalities"]["gyro"].update(normalizer="robust")),
    ),
    Case(
        NORMALIZERS,
        "unknown-parameter",
        "normalizers.json gives a normaliser a parameter it does not take",
        "DataError",
        (N, "'acc'", "bad parameters", "scale"),
        _norm(lambda index: index["modalities"]["acc"]["params"].update(scale=2)),
    ),
]


def _pretrained_file(d: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Path:
    state = {k: v.clone() for k, v in build_model(_config()).state_dict().items()}
    save_file(edit(state), d / "w.safetensors")
    return d / "w.safetensors"


PRETRAINED_CASES = [
    Case(
        PRETRAINED,
        "pretrained-int64",
        "load_pretrained from weights stored as int64",
        "DataError",
        ("w.safetensors", "dtype", "int64"),
        ("pretrained", _cast_all(torch.int64)),
    ),
    Case(
        PRETRAINED,
        "pretrained-nan",
        "load_pretrained from weights holding NaN",
        "DataError",
        ("w.safetensors", "NaN"),
        ("pretrained", _put(float("nan"))),
    ),
    Case(
        PRETRAINED,
        "weights-int64",
        "load_weights from weights stored as int64",
        "DataError",
        ("w.safetensors", "dtype", "int64"),
        ("weights", _cast_all(torch.int64)),
    ),
    Case(
        PRETRAINED,
        "weights-inf",
        "load_weights from weights holding inf",
        "DataError",
        ("w.safetensors", "infinite"),
        ("weights", _put(float("inf"))),
    ),
    Case(
        PRETRAINED,
        "weights-float64",
        "load_weights from float64 weights (a lossless cast)",
        ACCEPTED,
        (),
        ("weights", _cast_one(torch.float64)),
    ),
]

CASES = LOAD_CASES + SERVE_CASES + NORMALIZER_CASES + PRETRAINED_CASES


def _assert_refused(case: Case, load: Callable[[Path], Any], model_dir: Path) -> None:
    """``load(model_dir)`` raises the case's error (by type name), whose message names what the case lists."""
    with pytest.raises((DataError, FileNotFoundError)) as info:
        load(model_dir)
    assert type(info.value).__name__ == case.error
    assert_names(str(info.value), *case.names)


@pytest.mark.parametrize("case", params(LOAD_CASES))
def test_load_model_refuses_a_broken_directory(model_dir: Path, case: Case) -> None:
    case.data(model_dir)
    if case.error == ACCEPTED:
        assert not load_model(model_dir).training
        return
    _assert_refused(case, load_model, model_dir)


@pytest.mark.parametrize("case", params(SERVE_CASES))
def test_load_model_assets_refuses_what_it_cannot_serve(model_dir: Path, case: Case) -> None:
    case.data(model_dir)
    if case.error == ACCEPTED:
        assets = load_model_assets(model_dir)
        assert assets["normalizers"] is not None and assets["stream_config"] is not None
        return
    _assert_refused(case, load_model_assets, model_dir)


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in SERVE_CASES
        if c.id in {"norm-json-deleted", "stream-rate-negative", "stream-unknown-modality", "weights-nan"}
    ],
)
def test_serve_cli_stops_before_its_banner(model_dir: Path, case: Case) -> None:
    case.data(model_dir)
    result = invoke("serve", model_dir, "--port", "0")
    line = clean_failure(result)
    assert "serving" not in result.stdout
    assert_names(line, *case.names)


@pytest.mark.parametrize("case", params(NORMALIZER_CASES))
def test_modality_normalizers_load_names_the_problem(model_dir: Path, case: Case) -> None:
    case.data(model_dir)
    _assert_refused(case, ModalityNormalizers.load, model_dir)


@pytest.mark.parametrize("case", params(PRETRAINED_CASES))
def test_checkpoint_loaders_refuse_truncated_or_non_finite_weights(tmp_path: Path, case: Case) -> None:
    how, edit = case.data
    path = _pretrained_file(tmp_path, edit)
    model = build_model(_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def run() -> Any:
        return load_pretrained(model, path, include=None) if how == "pretrained" else load_weights(model, path)

    if case.error == ACCEPTED:
        run()
        return
    with pytest.raises(DataError) as info:
        run()
    assert_names(str(info.value), *case.names)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing was copied
