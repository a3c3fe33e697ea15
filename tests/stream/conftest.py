import numpy as np
import pytest
import torch

from mmfuse.models import ModelConfig, build_model


def _make_model(encoder="gru", fusion="concat", level="step", hidden=8, layers=1, seed=0, dims=None):
    torch.manual_seed(seed)
    kwargs = {"causal": True} if fusion == "cross_attention" else {}
    cfg = ModelConfig(
        dims or {"acc": 3, "gyro": 2},
        out_dim=3,
        hidden=hidden,
        encoder=encoder,
        encoder_layers=layers,
        bidirectional=False,
        causal=True,
        fusion=fusion,
        fusion_kwargs=kwargs,
        label_level=level,
        pooling="last",
        num_heads=2,
        dropout=0.1,
    )
    return build_model(cfg).eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def make_model():
    return _make_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny causal step-level model with normalisers and stream.json, as a model directory."""
    from mmfuse.models import save_model
    from mmfuse.preprocess import ModalityNormalizers, ZScoreNormalizer
    from mmfuse.stream import StreamConfig, StreamSpec, save_stream_config

    d = tmp_path_factory.mktemp("model")
    model = _make_model("gru", "gated")
    save_model(model, d)
    rng = np.random.default_rng(0)
    ModalityNormalizers({"acc": ZScoreNormalizer(), "gyro": ZScoreNormalizer()}).fit_arrays(
        {"acc": (rng.normal(1, 2, size=(100, 3)), None), "gyro": (rng.normal(size=(100, 2)), None)}
    ).save(d)
    specs = {"acc": StreamSpec(3, rate=30.0), "gyro": StreamSpec(2, rate=30.0)}
    save_stream_config(d, StreamConfig(rate=30.0, specs=specs, alpha=0.5, threshold=0.99))
    return d


def recording(seconds=2.0, seed=0):
    from mmfuse.align import Stream

    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / 30)
    return {
        "acc": Stream.create("acc", t, rng.normal(1, 2, size=(t.size, 3))),
        "gyro": Stream.create("gyro", t[::2], rng.normal(size=(t[::2].size, 2))),
    }


@pytest.fixture
def make_recording():
    return recording
