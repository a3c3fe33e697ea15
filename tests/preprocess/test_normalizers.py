"""The per-modality normalisers: statistics, masks, errors, backends and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmfuse.errors import DataError, NotFittedError
from mmfuse.preprocess import (
    IdentityNormalizer,
    L2Normalizer,
    Normalizer,
    ZScoreNormalizer,
    create_normalizer,
    is_normalizer,
    list_normalizers,
    normalizer_name,
    register_normalizer,
)

ALL_CLASSES = [ZScoreNormalizer, L2Normalizer, IdentityNormalizer]
FAST = settings(max_examples=40, deadline=None)

finite32 = st.floats(-1e3, 1e3, width=32, allow_subnormal=False)


@st.composite
def masked_data(draw: st.DrawFn, min_present: int = 1, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Values [S, D] and a mask [S] with at least ``min_present`` True entries."""
    s = draw(st.integers(min_present, 24))
    d = draw(st.integers(1, 4))
    elements = finite32 if dtype == np.float32 else st.floats(-1e6, 1e6, allow_subnormal=False)
    X = draw(arrays(dtype, (s, d), elements=elements))
    mask = draw(arrays(np.bool_, (s,)))
    forced = draw(st.lists(st.integers(0, s - 1), min_size=min_present, max_size=min_present, unique=True))
    mask[forced] = True
    return X, mask


def _poison(X: np.ndarray, mask: np.ndarray, value: float = np.nan) -> np.ndarray:
    out = X.copy()
    out[~mask] = value
    return out


# ------------------------------------------------------------------------------------------------- z-score
@FAST
@given(masked_data(min_present=2))
def test_zscore_present_steps_have_zero_mean_unit_std(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, mask = data
    norm = ZScoreNormalizer().fit(X, mask)
    Z = norm.transform(X, mask)
    assert Z.dtype == np.float32
    present = X[mask].astype(np.float64)
    z = Z[mask].astype(np.float64)
    for j in range(X.shape[1]):
        spread = present[:, j].std()
        if np.ptp(present[:, j]) == 0:
            assert norm.scale_[j] == 1.0
            np.testing.assert_array_equal(z[:, j], 0.0)
        elif spread > 1e-6 * max(1.0, abs(present[:, j].mean())):
            assert abs(z[:, j].mean()) < 1e-5
            assert z[:, j].std() == pytest.approx(1.0, rel=1e-4)


@FAST
@given(masked_data(dtype=np.float64))
def test_zscore_inverse_round_trip_float64(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, mask = data
    norm = ZScoreNormalizer().fit(X, mask)
    back = norm.inverse_transform(norm.transform(X, mask), mask)
    assert back.dtype == np.float64
    atol = 1e-9 * max(1.0, float(np.abs(X[mask]).max()))
    np.testing.assert_allclose(back[mask], X[mask], rtol=1e-5, atol=atol)
    np.testing.assert_array_equal(back[~mask], 0.0)


@FAST
@given(masked_data())
def test_zscore_inverse_round_trip_float32(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, mask = data
    norm = ZScoreNormalizer().fit(X, mask)
    back = norm.inverse_transform(norm.transform(X, mask), mask)
    # float32 z-scores carry a relative error of ~6e-8, i.e. ~6e-8 * |x - mean| in the original units.
    atol = 1e-5 * max(1.0, float(np.abs(X[mask]).max()))
    np.testing.assert_allclose(back[mask], X[mask], rtol=1e-5, atol=atol)


@FAST
@given(masked_data(), st.sampled_from([np.nan, np.inf, -np.inf, 3e38]))
def test_fit_ignores_masked_rows(data: tuple[np.ndarray, np.ndarray], junk: float) -> None:
    X, mask = data
    a = ZScoreNormalizer().fit(X, mask)
    b = ZScoreNormalizer().fit(_poison(X, mask, junk), mask)
    np.testing.assert_array_equal(a.mean_, b.mean_)
    np.testing.assert_array_equal(a.scale_, b.scale_)
    assert a.n_samples_seen_ == b.n_samples_seen_ == int(mask.sum())


def test_zscore_known_values_and_constant_feature() -> None:
    X = np.array([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0], [100.0, -4.0]])
    mask = np.array([True, True, True, False])
    norm = ZScoreNormalizer().fit(X, mask)
    np.testing.assert_allclose(norm.mean_, [3.0, 7.0])
    np.testing.assert_allclose(norm.scale_, [np.sqrt(8 / 3), 1.0])  # population std; constant feature -> 1
    Z = norm.transform(X, mask)
    np.testing.assert_allclose(Z[:3, 0], np.array([-2.0, 0.0, 2.0]) / np.sqrt(8 / 3))
    np.testing.assert_array_equal(Z[:3, 1], 0.0)
    np.testing.assert_array_equal(Z[3], 0.0)


def test_zscore_clip_bounds_output_and_options() -> None:
    X = np.array([[0.0], [1.0], [0.0], [1.0]])
    norm = ZScoreNormalizer(clip=1.5).fit(X)
    out = norm.transform(np.array([[100.0], [-100.0], [0.5]]))
    np.testing.assert_allclose(out[:, 0], [1.5, -1.5, 0.0])
    assert ZScoreNormalizer(with_mean=False).fit(X + 10).mean_.tolist() == [0.0]
    assert ZScoreNormalizer(with_std=False).fit(X * 10).scale_.tolist() == [1.0]


@pytest.mark.parametrize("clip", [0, -1.0, float("nan"), float("inf"), "3", True])
def test_zscore_rejects_bad_clip(clip: object) -> None:
    with pytest.raises(ValueError, match="'clip' parameter of ZScoreNormalizer"):
        ZScoreNormalizer(clip=clip)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------ L2
@FAST
@given(masked_data())
def test_l2_rows_have_unit_norm(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, mask = data
    norm = L2Normalizer().fit(X, mask)
    Z = norm.transform(_poison(X, mask), mask)
    lengths = np.linalg.norm(Z.astype(np.float64), axis=1)
    original = np.linalg.norm(X.astype(np.float64), axis=1)
    big = mask & (original > 1e-6)
    np.testing.assert_allclose(lengths[big], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(Z[mask & (original == 0)], 0.0)
    np.testing.assert_array_equal(Z[~mask], 0.0)


@FAST
@given(masked_data(dtype=np.float64))
def test_l2_inverse_with_norms_restores_rows(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, mask = data
    norm = L2Normalizer().fit(X, mask)
    norms = norm.row_norms(X, mask)
    back = norm.inverse_transform(norm.transform(X, mask), mask, norms=norms)
    np.testing.assert_allclose(back[mask], X[mask], rtol=1e-9, atol=1e-9)


def test_l2_inverse_without_norms_returns_direction() -> None:
    X = np.array([[3.0, 4.0], [0.0, -2.0]])
    norm = L2Normalizer().fit(X)
    Z = norm.transform(X)
    back = norm.inverse_transform(Z)
    np.testing.assert_allclose(back, [[0.6, 0.8], [0.0, -1.0]])
    np.testing.assert_allclose(norm.transform(back), Z)  # a preimage of Z, not X
    assert not L2Normalizer.is_invertible and ZScoreNormalizer.is_invertible


def test_l2_inverse_rejects_bad_norms() -> None:
    norm = L2Normalizer().fit(np.ones((2, 2)))
    with pytest.raises(DataError, match=r"'norms' parameter of L2Normalizer.inverse_transform must have shape \(2,\)"):
        norm.inverse_transform(np.ones((2, 2)), norms=np.ones(3))
    with pytest.raises(DataError, match="non-negative"):
        norm.inverse_transform(np.ones((2, 2)), norms=np.array([1.0, -1.0]))


# ------------------------------------------------------------------------------------------------ identity
def test_identity_keeps_values_and_integer_dtype() -> None:
    X = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int64)
    mask = np.array([True, False, True])
    out = IdentityNormalizer().fit(X, mask).transform(X, mask)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[1, 2], [0, 0], [5, 6]])


# ----------------------------------------------------------------------------------------- shared contract
@pytest.mark.parametrize("cls", ALL_CLASSES)
@FAST
@given(data=masked_data())
def test_missing_rows_are_exactly_zero_even_with_nan(
    cls: type[Normalizer], data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, mask = data
    norm = cls().fit(X, mask)
    poisoned = _poison(X, mask)
    for out in (norm.transform(poisoned, mask), norm.inverse_transform(poisoned, mask)):
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[~mask], 0.0)
    np.testing.assert_array_equal(norm.transform(poisoned, mask), norm.transform(X, mask))
    np.testing.assert_array_equal(norm.inverse_transform(poisoned, mask), norm.inverse_transform(X, mask))


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_torch_matches_numpy_and_keeps_dtype(cls: type[Normalizer]) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(9, 4)).astype(np.float32)
    mask = np.array([True, False] * 4 + [True])
    norm = cls().fit(torch.from_numpy(X), torch.from_numpy(mask))  # fit accepts tensors too
    Xt = torch.from_numpy(_poison(X, mask))
    out = norm.transform(Xt, torch.from_numpy(mask))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), norm.transform(X, mask), rtol=1e-5, atol=1e-6)
    assert (out[~torch.from_numpy(mask)] == 0).all()
    back = norm.inverse_transform(out, torch.from_numpy(mask))
    assert isinstance(back, torch.Tensor)
    if cls.is_invertible:
        np.testing.assert_allclose(back.numpy()[mask], X[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_unfitted_raises_not_fitted_error(cls: type[Normalizer]) -> None:
    norm = cls()
    assert not norm.is_fitted
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(norm))  # __init__ sets no fitted state
    for call in (norm.transform, norm.inverse_transform):
        with pytest.raises(NotFittedError, match=f"This {cls.__name__} is not fitted yet"):
            call(np.zeros((2, 3)))
    with pytest.raises(AttributeError):  # NotFittedError is an AttributeError, as in scikit-learn
        norm.fitted_state()


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_fitted_attributes_and_get_params(cls: type[Normalizer]) -> None:
    norm = cls().fit(np.ones((5, 3)), np.array([True, True, False, True, False]))
    assert norm.is_fitted
    assert norm.n_features_in_ == 3 and norm.n_samples_seen_ == 3
    for name in norm.fitted_arrays:
        assert name.endswith("_") and getattr(norm, name).shape == (3,)
    clone = cls(**norm.get_params())
    assert clone.get_params() == norm.get_params() and not clone.is_fitted


def test_get_params_and_repr() -> None:
    norm = ZScoreNormalizer(clip=3)
    assert norm.get_params() == {"clip": 3.0, "with_mean": True, "with_std": True}
    assert repr(norm) == "ZScoreNormalizer(clip=3.0, with_mean=True, with_std=True)"
    assert L2Normalizer(eps=1e-6).get_params() == {"eps": 1e-6}
    assert IdentityNormalizer().get_params() == {}


def test_refit_forgets_previous_fit() -> None:
    norm = ZScoreNormalizer().fit(np.zeros((3, 2)))
    norm.fit(np.arange(12.0).reshape(4, 3))
    assert norm.n_features_in_ == 3 and norm.mean_.shape == (3,)
    with pytest.raises(DataError, match="fitted on D=3"):
        norm.transform(np.zeros((1, 2)))


@pytest.mark.parametrize(
    ("X", "mask", "message"),
    [
        (np.zeros(4), None, r"'X' parameter of ZScoreNormalizer.transform must be a 2-D array \[S, D\].*\(4,\)"),
        (np.zeros((2, 2, 3)), None, r"must be a 2-D array.*\(2, 2, 3\)"),
        (np.zeros((4, 5)), None, r"ZScoreNormalizer was fitted on D=3 features, but .* has D=5 \(shape \(4, 5\)\)"),
        (np.zeros((4, 3)), np.ones(5, dtype=bool), r"'mask' parameter .* must have shape \(4,\).*Got shape \(5,\)"),
        (np.zeros((4, 3)), np.ones(4), r"'mask' parameter of ZScoreNormalizer.transform must be a bool array"),
        (np.array([["a", "b", "c"]]), None, "must hold real numbers"),
    ],
)
def test_transform_input_errors(X: np.ndarray, mask: np.ndarray | None, message: str) -> None:
    norm = ZScoreNormalizer().fit(np.random.default_rng(1).normal(size=(6, 3)))
    with pytest.raises(DataError, match=message):
        norm.transform(X, mask)


def test_non_finite_present_row_is_named() -> None:
    X = np.ones((5, 2))
    X[2, 1] = np.nan
    X[4, 0] = np.inf
    norm = ZScoreNormalizer()
    with pytest.raises(ValueError, match=r"non-finite value \(NaN or inf\) at row 2.*\(2 such row\(s\)"):
        norm.fit(X)
    norm.fit(X, np.array([True, True, False, True, False]))  # the same rows, marked missing, are fine
    with pytest.raises(DataError, match=r"ZScoreNormalizer\.transform holds a non-finite value .* at row 4"):
        norm.transform(X, np.array([True, True, False, True, True]))


def test_fit_with_no_present_row_fails() -> None:
    with pytest.raises(DataError, match="needs at least one present row; the mask marks all 3 rows missing"):
        ZScoreNormalizer().fit(np.zeros((3, 2)), np.zeros(3, dtype=bool))
    with pytest.raises(DataError, match=r"needs at least one feature\. Got X of shape \(3, 0\)"):
        L2Normalizer().fit(np.zeros((3, 0)))


def test_errors_are_value_errors() -> None:
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------------------------------------ registry
@register_normalizer("test-minmax")
class MinMax(Normalizer):
    fitted_arrays = ("min_", "range_")

    def __init__(self, *, margin: float = 0.0) -> None:
        self.margin = margin

    def _fit(self, X: np.ndarray) -> None:
        self.min_ = X.min(axis=0) - self.margin
        self.range_ = np.maximum(X.max(axis=0) + self.margin - self.min_, 1e-12)

    def _transform(self, X):  # type: ignore[no-untyped-def]
        return (X - self.min_) / self.range_

    def _inverse_transform(self, X):  # type: ignore[no-untyped-def]
        return X * self.range_ + self.min_


def test_registry_functions() -> None:
    assert {"zscore", "l2", "identity", "test-minmax"} <= set(list_normalizers())
    assert is_normalizer("zscore") and not is_normalizer("nope")
    assert isinstance(create_normalizer("l2", eps=1e-3), L2Normalizer)
    assert normalizer_name(ZScoreNormalizer()) == "zscore" and normalizer_name(MinMax) == "test-minmax"
    with pytest.raises(ValueError, match=r"Unknown normaliser 'nope'\. Valid names: .*identity"):
        create_normalizer("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_normalizer("zscore")(MinMax)
    with pytest.raises(TypeError, match="decorates Normalizer subclasses"):
        register_normalizer("test-not-a-normaliser")(dict)  # type: ignore[arg-type]

    class Unregistered(ZScoreNormalizer):
        pass

    with pytest.raises(ValueError, match="Unregistered is not a registered normaliser"):
        normalizer_name(Unregistered())


def test_custom_normaliser_follows_contract() -> None:
    X = np.array([[0.0, 10.0], [5.0, 20.0], [np.nan, np.nan]])
    mask = np.array([True, True, False])
    norm = MinMax().fit(X, mask)
    out = norm.transform(X, mask)
    np.testing.assert_allclose(out, [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(NotFittedError):
        MinMax().transform(X, mask)
