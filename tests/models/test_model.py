from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from mmfuse.errors import DataError
from mmfuse.fusion import list_fusions
from mmfuse.layers import TransformerEncoder
from mmfuse.models import (
    ModelConfig,
    MultimodalModel,
    build_model,
    count_parameters,
    load_model,
    parameter_report,
    preset_config,
    read_model_info,
    save_model,
)
from mmfuse.types import Batch, LabelLevel, TaskType

DIMS = {"text": 6, "audio": 4, "video": 5}


def make_batch(b: int = 3, t: int = 7, lengths: list[int] | None = None, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [t - i for i in range(b)]
    padding = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    inputs, masks = {}, {}
    for m, d in DIMS.items():
        mask = (torch.rand(b, t, generator=g) > 0.25) & padding
        inputs[m] = torch.where(mask.unsqueeze(-1), torch.randn(b, t, d, generator=g), 0.0)
        masks[m] = mask
    return Batch(inputs=inputs, masks=masks, padding_mask=padding)


def pad_batch(batch: Batch, extra: int) -> Batch:
    """Append `extra` padding steps (with garbage values) to every sequence."""
    b = batch.padding_mask.shape[0]
    inputs = {m: torch.cat([v, torch.randn(b, extra, v.shape[-1]) * 50], dim=1) for m, v in batch.inputs.items()}
    masks = {m: torch.cat([v, torch.zeros(b, extra, dtype=torch.bool)], dim=1) for m, v in batch.masks.items()}
    padding = torch.cat([batch.padding_mask, torch.zeros(b, extra, dtype=torch.bool)], dim=1)
    return Batch(inputs=inputs, masks=masks, padding_mask=padding)


ENCODERS = ["gru", "lstm", "transformer", "conv", "none"]


@pytest.mark.parametrize("level", ["sample", "step"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_output_shapes(level: str, task: str) -> None:
    model = build_model(ModelConfig(DIMS, out_dim=3, task=task, label_level=level, hidden=16)).eval()
    out = model(make_batch())
    assert out.shape == ((3, 3) if level == "sample" else (3, 7, 3))
    assert bool(out.isfinite().all())


def test_stages_compose_to_forward() -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16, label_level="step")).eval()
    batch = make_batch()
    encoded = model.encode(batch.inputs, batch.masks, batch.padding_mask)
    assert set(encoded) == set(DIMS) and all(v.shape == (3, 7, 16) for v in encoded.values())
    for m, v in encoded.items():
        assert torch.all(v[~batch.masks[m]] == 0), m  # encoder output masked before fusion
    fused = model.fuse(encoded, batch.masks)
    assert fused.shape == (3, 7, 16)
    torch.testing.assert_close(model.head(fused, batch.padding_mask), model(batch))


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("level", ["sample", "step"])
def test_padding_does_not_change_real_steps(encoder: str, level: str) -> None:
    cfg = ModelConfig(DIMS, out_dim=2, hidden=16, encoder=encoder, label_level=level, encoder_layers=2)
    model = build_model(cfg).eval()
    batch = make_batch()
    ref = model(batch)
    padded = model(pad_batch(batch, 4))
    if level == "step":
        padded = padded[:, :7]
        mask = batch.padding_mask
        torch.testing.assert_close(padded[mask], ref[mask], atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fusion", list_fusions())
def test_missing_modality_values_are_ignored(fusion: str) -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16, fusion=fusion, label_level="step")).eval()
    batch = make_batch()
    batch.masks["audio"] = torch.zeros_like(batch.masks["audio"])
    ref = model(batch)
    assert bool(ref.isfinite().all())
    noisy = Batch(
        inputs={**batch.inputs, "audio": torch.randn_like(batch.inputs["audio"]) * 100},
        masks=batch.masks,
        padding_mask=batch.padding_mask,
    )
    torch.testing.assert_close(model(noisy), ref)
    nan = Batch(
        inputs={**batch.inputs, "audio": torch.full_like(batch.inputs["audio"], float("nan"))},
        masks=batch.masks,
        padding_mask=batch.padding_mask,
    )
    torch.testing.assert_close(model(nan), ref)


def test_all_modalities_missing_is_finite() -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16)).eval()
    batch = make_batch()
    batch = batch.select_modalities([])
    assert bool(model(batch).isfinite().all())


@pytest.mark.parametrize("encoder", ["gru", "transformer", "conv"])
def test_causal_model_ignores_the_future(encoder: str) -> None:
    cfg = preset_config("streaming", DIMS, 2, label_level="step", encoder=encoder, fusion="cross_attention")
    model = build_model(cfg).eval()
    assert model.is_causal and model.fusion.is_causal
    batch = make_batch(lengths=[7, 7, 7])
    ref = model(batch)
    changed = Batch(
        inputs={m: torch.cat([v[:, :4], torch.randn_like(v[:, 4:])], dim=1) for m, v in batch.inputs.items()},
        masks=batch.masks,
        padding_mask=batch.padding_mask,
    )
    torch.testing.assert_close(model(changed)[:, :4], ref[:, :4])


def test_causal_config_needs_causal_parts() -> None:
    with pytest.raises(ValueError, match="bidirectional=False"):
        ModelConfig(DIMS, out_dim=2, causal=True, pooling="last")
    with pytest.raises(ValueError, match="pooling='last'"):
        ModelConfig(DIMS, out_dim=2, causal=True, bidirectional=False)
    cfg = ModelConfig(DIMS, out_dim=2, causal=True, bidirectional=False, pooling="last", fusion="cross_attention")
    with pytest.raises(ValueError, match="needs a causal fusion"):
        build_model(cfg)


@pytest.mark.parametrize("fusion", list_fusions())
def test_fusion_swap_is_a_config_change(fusion: str) -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16).replace(fusion=fusion)).eval()
    assert model.config.fusion == fusion
    assert model(make_batch()).shape == (3, 2)


def test_max_params_refusal() -> None:
    cfg = ModelConfig(DIMS, out_dim=2, hidden=32)
    n = parameter_report(build_model(cfg)).total
    assert build_model(cfg, max_params=n).config == cfg
    with pytest.raises(ValueError, match=rf"{n:,} parameters, over the max_params budget of {n - 1:,}"):
        build_model(cfg, max_params=n - 1)


@pytest.mark.parametrize("fusion", list_fusions())
def test_count_parameters_equals_the_built_model_without_drawing(fusion: str) -> None:
    cfg = ModelConfig(DIMS, out_dim=2, hidden=16, fusion=fusion)
    torch.manual_seed(0)
    counted = count_parameters(cfg, max_params=10**9)
    after_count = torch.rand(3)  # counting drew nothing from the generator
    torch.manual_seed(0)
    assert torch.equal(after_count, torch.rand(3))
    assert counted == parameter_report(build_model(cfg))
    with pytest.raises(ValueError, match=rf"{counted.total:,} parameters, over the max_params budget"):
        count_parameters(cfg, max_params=counted.total - 1)


def test_count_parameters_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="'config' parameter of count_parameters must be a ModelConfig"):
        count_parameters({"audio": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'max_params' parameter of count_parameters"):
        count_parameters(ModelConfig(DIMS, out_dim=2), max_params=0)


def test_parameter_report_counts_frozen() -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16))
    before = parameter_report(model)
    for p in model.head_mlp.parameters():
        p.requires_grad_(False)
    after = parameter_report(model)
    head = sum(p.numel() for p in model.head_mlp.parameters())
    assert after.frozen == head and after.trainable == before.trainable - head
    assert after.total == sum(after.by_module.values()) == sum(p.numel() for p in model.parameters())
    assert set(after.by_module) >= {"projections", "encoders", "fusion", "head_mlp"}


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"modality_dims": {}}, "'modality_dims' parameter"),
        ({"modality_dims": {"a": 0}}, r"modality_dims\['a'\]"),
        ({"out_dim": 0}, "'out_dim'"),
        ({"task": "ranking"}, "'task' parameter of ModelConfig must be one of 'classification', 'regression'"),
        ({"label_level": "frame"}, "'label_level'"),
        ({"fusion": "nope"}, "'fusion' parameter.*'concat'"),
        ({"fusion": "gated", "fusion_kwargs": {"causal": True}}, r"\['causal'\].*accepted: \['dropout', 'eps'\]"),
        ({"fusion_kwargs": {"x": object()}}, "JSON"),
        ({"encoder": "rnn"}, "'encoder'"),
        ({"dropout": 1.0}, r"'dropout'.*\[0, 1\)"),
        ({"pooling": "max"}, "'pooling'"),
        ({"hidden": 15}, "even"),
        ({"encoder": "transformer", "hidden": 18, "num_heads": 4}, "must divide 'hidden'"),
        ({"activation": "swish"}, "'activation'"),
    ],
)
def test_config_validation(changes: dict, pattern: str) -> None:
    kwargs = {"modality_dims": DIMS, "out_dim": 2, **changes}
    with pytest.raises(ValueError, match=pattern):
        ModelConfig(**kwargs)


def test_config_without_encoder_writes_the_keys_it_always_wrote() -> None:
    # config.json of runs saved before ModelConfig.pretrained existed must stay equal to today's (compare --resume
    # reuses a finished run only when the two dicts are equal key by key)
    data = ModelConfig(DIMS, out_dim=2).to_dict()
    assert "pretrained" not in data
    assert ModelConfig.from_dict(data).pretrained == {}


def test_config_roundtrip_is_json_safe() -> None:
    cfg = ModelConfig(
        DIMS,
        out_dim=2,
        task=TaskType.REGRESSION,
        label_level=LabelLevel.STEP,
        fusion="cross_attention",
        fusion_kwargs={"num_heads": 2},
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["task"] == "regression" and data["label_level"] == "step"
    assert list(data["modality_dims"]) == sorted(DIMS)
    assert ModelConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match=r"Unknown ModelConfig key\(s\) \['hiden'\]"):
        ModelConfig.from_dict({**data, "hiden": 3})
    with pytest.raises(ValueError, match="missing the required key"):
        ModelConfig.from_dict({"out_dim": 2})


def test_model_input_validation() -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16))
    batch = make_batch()
    with pytest.raises(ValueError, match=r"missing \['video'\]"):
        model(Batch({k: v for k, v in batch.inputs.items() if k != "video"}, batch.masks, batch.padding_mask))
    with pytest.raises(ValueError, match="prefix"):
        model(Batch(batch.inputs, batch.masks, batch.padding_mask.flip(1)))
    with pytest.raises(ValueError, match=r"modality 'audio'.*\[3, 7, 4\]"):
        model(Batch({**batch.inputs, "audio": torch.zeros(3, 7, 2)}, batch.masks, batch.padding_mask))


def test_modality_dropout_only_in_training() -> None:
    cfg = ModelConfig(DIMS, out_dim=2, hidden=16, modality_dropout=0.9, dropout=0.0)
    model = build_model(cfg)
    batch = make_batch()
    model.eval()
    ref = model(batch)
    torch.testing.assert_close(model(batch), ref)
    model.train()
    torch.manual_seed(0)
    outs = [model(batch) for _ in range(5)]
    assert any(not torch.allclose(o, ref) for o in outs)
    assert all(bool(o.isfinite().all()) for o in outs)


@pytest.mark.parametrize("fusion", list_fusions())
def test_save_load_roundtrip(tmp_path: Path, fusion: str) -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16, fusion=fusion, pooling="attention")).eval()
    save_model(model, tmp_path / "m", extra={"train_config": {"lr": 0.001}})
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MultimodalModel) and not loaded.training
    assert loaded.config == model.config
    batch = make_batch()
    torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)
    info = read_model_info(tmp_path / "m")
    assert info["train_config"] == {"lr": 0.001} and info["model_config"]["fusion"] == fusion
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize(("fusion", "causal"), [("concat", False), ("concat", True), ("atcm", True)])
def test_a_model_saved_with_the_old_transformer_layer_names_loads(tmp_path: Path, fusion: str, causal: bool) -> None:
    """Before the transformer encoder's layers were AttentionBlocks, their LayerNorms were ``norm1`` / ``norm2``.

    The old layers also gave a query with no allowed key the attention's output bias, where AttentionBlock gives a
    zero update (``zero_unattended``): the reference below is the model with that switched off.
    """
    from safetensors.torch import load_file, save_file

    config = ModelConfig(
        DIMS,
        out_dim=2,
        hidden=16,
        encoder="transformer",
        encoder_layers=2,
        causal=causal,
        fusion=fusion,
        fusion_kwargs={"causal": True} if fusion == "atcm" else {},
        label_level="step",
    )
    model = build_model(config).eval()
    save_model(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    old = {k.replace(".norm_q.", ".norm1.").replace(".norm_ff.", ".norm2."): v for k, v in load_file(weights).items()}
    assert "encoders.text.layers.1.norm1.weight" in old and "encoders.text.layers.1.norm_q.weight" not in old
    assert (fusion == "atcm") == ("fusion.global_encoder.layers.0.norm2.bias" in old)
    save_file(old, weights)
    loaded = load_model(tmp_path / "m")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    before = copy.deepcopy(model)  # the model as the old layers computed it
    for module in before.modules():
        if isinstance(module, TransformerEncoder):
            for block in module.layers:
                block.attn.zero_unattended = False
    batch = make_batch()
    for m in DIMS:
        batch.masks[m][0, :2] = False  # row 0 observes nothing before step 2
        batch.inputs[m][0, :2] = 0.0
    with torch.no_grad():
        got, expected, ref = loaded(batch), model(batch), before(batch)
    assert torch.equal(got, expected)
    # Each modality's encoder output is zeroed where the modality is missing, so only ATCM's global encoder, which
    # runs at every real step, sees the difference: at the steps before anything was observed (no key to attend to).
    unobserved = torch.zeros(batch.padding_mask.shape, dtype=torch.bool)
    if fusion == "atcm":
        unobserved[0, :2] = True
    assert torch.equal(got[~unobserved], ref[~unobserved])
    assert bool((got[unobserved] != ref[unobserved]).any(dim=-1).all())


def test_save_refuses_reserved_extra(tmp_path: Path) -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16))
    with pytest.raises(ValueError, match="reserved"):
        save_model(model, tmp_path, extra={"model_config": {}})
    assert not (tmp_path / "config.json").exists()


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    model = build_model(ModelConfig(DIMS, out_dim=2, hidden=16))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_model(tmp_path)
    save_model(model, tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()

    weights.write_bytes(good[:100])
    with pytest.raises(DataError, match=r"model\.safetensors"):
        load_model(tmp_path)

    other = build_model(ModelConfig(DIMS, out_dim=2, hidden=16, fusion="gated"))
    save_model(other, tmp_path / "other")
    weights.write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(DataError, match=r"model.safetensors does not match.*missing keys fusion\."):
        load_model(tmp_path)

    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_model(tmp_path)

    weights.write_bytes(good)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DataError, match=r"config\.json"):
        load_model(tmp_path)

    info = {
        "format": "mmfuse.model",
        "format_version": 1,
        "model_config": {"modality_dims": DIMS, "out_dim": 2, "hidden": 0},
    }
    (tmp_path / "config.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"config.json holds an invalid model_config.*'hidden'"):
        load_model(tmp_path)


def test_presets() -> None:
    with pytest.raises(ValueError, match="Unknown model preset 'huge'"):
        preset_config("huge", DIMS, 2)
    cfg = preset_config("tiny", DIMS, 2)
    assert cfg.hidden == 16 and build_model(cfg)(make_batch()).shape == (3, 2)
