"""Every layer of both twins against the NumPy float64 reference (tests/reference.py), on odd shapes:
H != W != C, 2x3 kernels, stride 2 for the strided and transposed kinds, in != out."""

from __future__ import annotations

import numpy as np
import pytest

from gated_spec import LAYER_KINDS

from tests import reference as R

EPS64 = np.finfo(np.float64).eps


def assert_close64(got: np.ndarray, ref: np.ndarray, n: int, what: str) -> None:
    """float64 against float64: Higham's a-priori bound for a length-``n`` reduction, n * u * sum|terms|,
    with sum|terms| taken as max(1, max|ref|) * 4 (inputs here are O(1)); any translation bug is O(1e-2)."""
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    bound = 4 * max(n, 1) * EPS64 * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(got - ref).max())
    assert err <= bound, f"{what}: max abs error {err:.3e} > bound {bound:.3e} (shape {ref.shape}, float64)"


RNG = np.random.default_rng(1234)


def weights(v_shape, out):
    return {"V": RNG.normal(0, 0.05, v_shape), "g": RNG.uniform(0.5, 1.5, out), "b": RNG.normal(0, 0.1, out)}


X = RNG.normal(size=(2, 5, 7, 3))  # B, H, W, C all different

CONV_CASES = [
    # class, kwargs, reference fn
    ("WeightNormConv2D", dict(filter_size=(2, 3), stride=(1, 1), pad="SAME"), lambda x, w: R.conv2d(x, w, (1, 1), "SAME")),
    ("WeightNormConv2D", dict(filter_size=(2, 3), stride=(2, 2), pad="SAME"), lambda x, w: R.conv2d(x, w, (2, 2), "SAME")),
    ("WeightNormConv2D", dict(filter_size=(3, 3), stride=(2, 1), pad="VALID"), lambda x, w: R.conv2d(x, w, (2, 1), "VALID")),
    ("DownShiftedConv2D", dict(), lambda x, w: R.down_shifted_conv2d(x, w)),
    ("DownShiftedConv2D", dict(stride=(2, 2)), lambda x, w: R.down_shifted_conv2d(x, w, (2, 2))),
    ("DownRightShiftedConv2D", dict(), lambda x, w: R.down_right_shifted_conv2d(x, w)),
    ("DownRightShiftedConv2D", dict(filter_size=(2, 3), stride=(2, 2)), lambda x, w: R.down_right_shifted_conv2d(x, w, (2, 2))),
]
DECONV_CASES = [
    ("WeightNormConv2DTranspose", dict(filter_size=(2, 3), stride=(2, 2), pad="SAME"), lambda x, w: R.deconv2d(x, w, (2, 2), "SAME")),
    ("WeightNormConv2DTranspose", dict(filter_size=(2, 3), stride=(2, 2), pad="VALID"), lambda x, w: R.deconv2d(x, w, (2, 2), "VALID")),
    ("WeightNormConv2DTranspose", dict(filter_size=(3, 3), stride=(1, 1), pad="SAME"), lambda x, w: R.deconv2d(x, w, (1, 1), "SAME")),
    ("WeightNormConv2DTranspose", dict(filter_size=(2, 2), stride=(1, 1), pad="SAME"), lambda x, w: R.deconv2d(x, w, (1, 1), "SAME")),
    ("DownShiftedConv2DTranspose", dict(stride=(2, 2)), lambda x, w: R.down_shifted_deconv2d(x, w, (2, 2))),
    ("DownRightShiftedConv2DTranspose", dict(stride=(2, 2)), lambda x, w: R.down_right_shifted_deconv2d(x, w, (2, 2))),
]
DEFAULT_FILTER = {cls: filt for cls, filt, _ in LAYER_KINDS.values()}


@pytest.mark.parametrize("cls,kwargs,ref", CONV_CASES, ids=lambda v: str(v) if not callable(v) else "")
def test_conv_forward_matches_reference(twin, cls, kwargs, ref):
    k = kwargs.get("filter_size", DEFAULT_FILTER.get(cls))
    w = weights((*k, 3, 4), 4)
    layer = twin.make(cls, 3, 4, **kwargs)
    twin.set_weights(layer, w)
    assert_close64(twin.forward(layer, X), ref(X, w), k[0] * k[1] * 3, f"{twin.name} {cls} {kwargs}")


@pytest.mark.parametrize("cls,kwargs,ref", DECONV_CASES, ids=lambda v: str(v) if not callable(v) else "")
def test_deconv_forward_matches_reference(twin, cls, kwargs, ref):
    k = kwargs.get("filter_size", DEFAULT_FILTER.get(cls))
    w = weights((*k, 4, 3), 4)  # [kh, kw, out, in]
    layer = twin.make(cls, 3, 4, **kwargs)
    twin.set_weights(layer, w)
    assert_close64(twin.forward(layer, X), ref(X, w), k[0] * k[1] * 3, f"{twin.name} {cls} {kwargs}")


def test_dense_and_nin_match_reference(twin):
    w = weights((3, 5), 5)  # in != units
    dense = twin.make("WeightNormDense", 3, 5)
    twin.set_weights(dense, w)
    x2 = X.reshape(-1, 3)
    assert_close64(twin.forward(dense, x2), R.dense(x2, w), 3, f"{twin.name} dense")
    nin = twin.make("Nin", 3, 5)
    twin.set_weights(nin, w)
    assert_close64(twin.forward(nin, X), R.nin(X, w), 3, f"{twin.name} nin")


@pytest.mark.parametrize("nl", ["concat_elu", "elu", "relu"])
def test_layer_nonlinearity(twin, nl):
    w = weights((3, 3, 3, 4), 4)
    layer = twin.make("WeightNormConv2D", 3, 4, nonlinearity=nl)
    twin.set_weights(layer, w)
    assert_close64(twin.forward(layer, X), R.NONLIN[nl](R.conv2d(X, w)), 27, f"{twin.name} conv2d+{nl}")


def test_shifts_and_concat_elu(twin):
    ops = twin.impl
    x = twin.tensor(X)
    np.testing.assert_array_equal(twin.numpy(ops.down_shift(x)), np.pad(X[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0))))
    np.testing.assert_array_equal(twin.numpy(ops.right_shift(x, 2)), np.pad(X[:, :, :-2], ((0, 0), (0, 0), (2, 0), (0, 0))))
    np.testing.assert_array_equal(twin.numpy(ops.left_shift(x)), np.pad(X[:, :, 1:], ((0, 0), (0, 0), (0, 1), (0, 0))))
    got = twin.numpy(ops.concat_elu(x))
    assert got.shape == (2, 5, 7, 6)
    assert_close64(got, R.concat_elu(X), 1, "concat_elu")


def test_l2_normalize_clamps_zero_filter(twin):
    """An all-zero filter gives a zero kernel, not NaN (pitfall 24)."""
    layer = twin.make("WeightNormConv2D", 3, 4)
    w = weights((3, 3, 3, 4), 4)
    w["V"][..., 1] = 0.0
    twin.set_weights(layer, w)
    y = twin.forward(layer, X)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[..., 1], w["b"][1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtypes(twin, dtype):
    layer = twin.make("DownShiftedConv2D", 3, 4, dtype=dtype)
    y = twin.forward(layer, X.astype(dtype))
    assert y.dtype == np.dtype(dtype)
