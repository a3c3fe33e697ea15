import numpy as np
import pytest

from mmfuse.errors import NotFittedError
from mmfuse.monitor import DriftMonitor, ReferenceStats, adjust_pvalues, ks_test, mmd_test

DIMS = {"acc": 3, "audio": 6, "gyro": 2}


def _sample(rng, n, shift=None):
    out = {m: rng.normal(size=(n, d)) * (1 + np.arange(d)) for m, d in DIMS.items()}  # features of different scales
    if shift:
        m, cols, amount = shift
        out[m][:, cols] += amount * (1 + np.asarray(cols))  # shifted by `amount` standard deviations
    return out


@pytest.fixture
def reference():
    rng = np.random.default_rng(0)
    train = _sample(rng, 3000)
    emb = {"acc": np.tanh(train["acc"] @ rng.normal(size=(3, 8)))}
    return ReferenceStats().fit(train, embeddings=emb), rng


def test_no_alert_on_held_out_data_at_the_configured_false_alarm_rate(reference):
    ref, rng = reference
    n_checks, alarms = 60, 0
    for _ in range(n_checks):
        mon = DriftMonitor(ref, window=200, alpha=0.05, n_permutations=100)
        mon.update(_sample(rng, 200))
        alarms += mon.check().drifted
    # family-wise rate 0.05 per check: about 3 of 60 expected; P(more than 8) < 0.5 % for a correct test
    assert alarms <= 8


def test_alert_names_the_shifted_modality_and_features(reference):
    ref, rng = reference
    for _ in range(5):
        mon = DriftMonitor(ref, window=200, alpha=0.01)
        mon.update(_sample(rng, 200, shift=("audio", [1, 4], 0.6)))
        report = mon.check()
        assert report.drifted and report.modalities == ["audio"]
        assert report.features == {"audio": [1, 4]}
        assert mon.alerts == [report] and "audio" in report.summary()


def test_mmd_on_embeddings_flags_a_modality_whose_marginals_look_unchanged(reference):
    ref, rng = reference
    proj = np.random.default_rng(0).normal(size=(3, 8))
    x = _sample(rng, 300)
    # correlate two acc features (each keeps its marginal distribution): only the joint distribution changes
    z = x["acc"] / np.array([1.0, 2.0, 3.0])
    rot = np.stack([z[:, 0], 2.0 * (0.8 * z[:, 0] + 0.6 * z[:, 1]), 3.0 * z[:, 2]], axis=1)
    mon = DriftMonitor(ref, window=300, alpha=0.01, n_permutations=200)
    mon.update({"acc": rot, "audio": x["audio"], "gyro": x["gyro"]}, embeddings={"acc": np.tanh(rot @ proj)})
    report = mon.check()
    assert "acc" in report.embeddings and report.modalities == ["acc"]


def test_missing_rows_and_stride_are_left_out(reference):
    ref, rng = reference
    mon = DriftMonitor(ref, window=500, stride=2, min_samples=10)
    x = _sample(rng, 100)
    mask = np.arange(100) < 50
    mon.update(x, masks={"acc": mask})
    n = mon.check().n_window
    assert n["acc"] == 25 and n["gyro"] == 50


def test_reference_round_trips_through_safetensors_and_json(reference, tmp_path):
    ref, _ = reference
    ref.save(tmp_path)
    back = ReferenceStats.load(tmp_path)
    np.testing.assert_array_equal(back.samples_["audio"], ref.samples_["audio"])
    assert back.bandwidths_ == ref.bandwidths_
    (tmp_path / "drift_reference.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt drift reference"):
        ReferenceStats.load(tmp_path)


def test_functional_core_known_answers():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 1))
    stat, p = ks_test(a, a)
    assert stat[0] == 0.0 and p[0] == 1.0
    _, p = mmd_test(a, a + 1.0, n_permutations=50)
    assert p < 1e-6
    raw = np.array([0.001, 0.02, 0.03, 0.5])
    holm, bh = adjust_pvalues(raw, "holm"), adjust_pvalues(raw, "bh")
    assert holm.tolist() == pytest.approx([0.004, 0.06, 0.06, 0.5])
    assert np.all(bh <= holm) and np.all(holm >= raw)


def test_bad_use_is_refused(reference):
    ref, _ = reference
    with pytest.raises(NotFittedError):
        DriftMonitor(ReferenceStats())
    with pytest.raises(ValueError, match="Unknown correction 'fdr'"):
        DriftMonitor(ref, correction="fdr")
    mon = DriftMonitor(ref)
    with pytest.raises(ValueError, match=r"unknown modality/embedding name\(s\) \['video'\]"):
        mon.update({"video": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="finite"):
        mon.update({"acc": np.full((3, 3), np.nan)})
