"""GatedResnet, data-dependent init, Polyak averaging and causality, on both twins."""

from __future__ import annotations

import numpy as np
import pytest

from parity.backends import get_backend
from parity.table import EMA_SUFFIX
from parity.case import random_weights
from tests import reference as R
from tests.conftest import HAVE
from tests.twins.test_layers import assert_close64

RNG = np.random.default_rng(7)
CONVS = ["conv2d", "down_shifted_conv2d", "down_right_shifted_conv2d", "nin"]
RED = {"conv2d": 9, "down_shifted_conv2d": 6, "down_right_shifted_conv2d": 4, "nin": 1}


def inputs(B=2, H=5, W=7, F=4, a=None, K=None):
    x = RNG.normal(size=(B, H, W, F))
    aa = RNG.normal(size=(B, H, W, a)) if a else None
    h = RNG.normal(size=(B, K)) if K else None
    return x, aa, h


def block_of(twin, config, w, initialized=True, dtype="float64"):
    backend = get_backend(twin.name)
    block = backend.build(config, dtype)
    backend.import_weights(block, w, initialized)
    return backend, block


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("a_ch,K", [(None, None), (4, None), (8, 3), (None, 3)])
def test_block_forward_matches_reference(twin, conv, a_ch, K):
    config = {"num_filters": 4, "a_channels": a_ch, "h_channels": K, "conv": conv}
    w = random_weights(config, seed=3, dtype=np.float64)
    x, a, h = inputs(a=a_ch, K=K)
    backend, block = block_of(twin, config, w)
    got = backend.apply(block, {"x": x, "a": a, "h": h})["out"]
    ref = R.gated_resnet(x, w, conv, "concat_elu", a, h)
    # n: the second conv's reduction (kh*kw*2F = RED*8), times 4 for the chained layers before it.
    assert_close64(got, ref, 8 * RED[conv] * 4, f"{twin.name} gated_resnet {config}")


@pytest.mark.parametrize("nl", ["elu", "relu"])
def test_block_nonlinearities(twin, nl):
    config = {"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": "down_shifted_conv2d", "nonlinearity": nl}
    w = random_weights(config, seed=4, dtype=np.float64)
    x, a, h = inputs(a=3, K=2)
    backend, block = block_of(twin, config, w)
    ref = R.gated_resnet(x, w, config["conv"], nl, a, h)
    assert_close64(backend.apply(block, {"x": x, "a": a, "h": h})["out"], ref, 48, f"{twin.name} {nl}")


def test_dropout_with_injected_mask(twin):
    config = {"num_filters": 4, "a_channels": 4, "conv": "conv2d", "dropout_p": 0.3}
    w = random_weights(config, seed=5, dtype=np.float64)
    x, a, _ = inputs(a=4)
    mask = (RNG.uniform(size=(2, 5, 7, 8)) >= 0.3).astype(np.float64)
    _, block = block_of(twin, config, w)
    y = twin.numpy(block(twin.tensor(x), twin.tensor(a), dropout_mask=twin.tensor(mask)))
    assert_close64(y, R.gated_resnet(x, w, "conv2d", "concat_elu", a, mask=mask, p=0.3), 80, "dropout mask")


def test_dropout_active_only_in_training(twin):
    config = {"num_filters": 4, "conv": "nin", "dropout_p": 0.5}
    _, block = block_of(twin, config, random_weights(config, seed=6, dtype=np.float64))
    x = twin.tensor(inputs()[0])
    if twin.name == "torch":
        block.eval()
        eval1, eval2 = twin.numpy(block(x)), twin.numpy(block(x))
        block.train()
        train = twin.numpy(block(x))
    else:
        eval1, eval2 = twin.numpy(block(x, training=False)), twin.numpy(block(x))
        train = twin.numpy(block(x, training=True))
    np.testing.assert_array_equal(eval1, eval2)
    assert np.abs(train - eval1).max() > 1e-3


# -- data-dependent init -------------------------------------------------------------------------
@pytest.mark.parametrize("conv", CONVS)
def test_init_matches_reference_and_normalises(twin, conv):
    config = {"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": conv}
    w = random_weights(config, seed=8, dtype=np.float64)
    x, a, h = inputs(a=3, K=2)
    backend, block = block_of(twin, config, w, initialized=False)
    out = backend.apply(block, {"x": x, "a": a, "h": h}, init=True)["out"]
    ref_out, ref_gb = R.gated_resnet(x, w, conv, "concat_elu", a, h, init=True)
    # n = 200 covers the init's longest reductions: moments over B*H*W = 70 pixels plus a 3x3x8 conv (72).
    assert_close64(out, ref_out, 200, f"{twin.name} init output")
    got = backend.export_weights(block)
    for name, (g, b) in ref_gb.items():
        assert_close64(got[f"{name}/g"], g, 200, f"init {name}/g")
        assert_close64(got[f"{name}/b"], b, 200, f"init {name}/b")
    # The hw matrix takes no part (pitfall 22); V keeps its value.
    np.testing.assert_array_equal(got["conditional_weights_0/hw"], w["conditional_weights_0/hw"])
    assert block.initialized


@pytest.mark.parametrize("cls,args,scale", [("WeightNormConv2D", (3, 4), 1.0), ("WeightNormConv2D", (3, 4), 0.1),
                                            ("Nin", (3, 5), 1.0), ("DownRightShiftedConv2D", (3, 4), 0.1)])
def test_init_output_has_mean_zero_and_std_init_scale(twin, cls, args, scale):
    layer = twin.make(cls, *args, init_scale=scale)
    y = twin.initialize(layer, RNG.normal(size=(3, 6, 5, 3)))
    axes = (0, 1, 2)
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-12)
    # std is init_scale * sqrt(v / (v + eps)) with eps = 1e-8 and v = O(1e-2) here: 1e-6 relative covers it.
    np.testing.assert_allclose(y.std(axis=axes), scale, rtol=1e-6)


def test_init_uses_biased_variance_on_tiny_batch(twin):
    """B*H*W = 8: an unbiased variance would change g by sqrt(8/7) - 1 = 7 % (pitfall 17)."""
    layer = twin.make("WeightNormConv2D", 3, 4, filter_size=(1, 1))
    x = RNG.normal(size=(2, 2, 2, 3))
    V = twin.get(layer, "V")
    twin.initialize(layer, x)
    _, g, b = R.conv2d_init(x, V)
    assert_close64(twin.get(layer, "g"), g, 3, "g")
    assert_close64(twin.get(layer, "b"), b, 3, "b")


def test_deconv_init_moments_before_crop(twin):
    layer = twin.make("DownShiftedConv2DTranspose", 3, 4, stride=2)
    x = RNG.normal(size=(2, 3, 4, 3))
    V = twin.get(layer, "V")
    y = twin.initialize(layer, x)
    full, g, b = R.deconv2d_init(x, V, (2, 2), "VALID")
    assert_close64(twin.get(layer, "g"), g, 6, "g")
    assert_close64(y, R.crop_down_shifted(full, (2, 3)), 6, "init output")


def test_init_runs_once(twin):
    layer = twin.make("Nin", 3, 4)
    twin.initialize(layer, RNG.normal(size=(2, 3, 4, 3)))
    with pytest.raises(ValueError, match="already run; it runs once"):
        twin.initialize(layer, RNG.normal(size=(2, 3, 4, 3)))
    config = {"num_filters": 4, "conv": "conv2d"}
    backend, block = block_of(twin, config, random_weights(config, 0, dtype=np.float64), initialized=False)
    x = {"x": inputs()[0]}
    backend.apply(block, x, init=True)
    before = backend.export_weights(block)
    with pytest.raises(ValueError, match="GatedResnet: the data-dependent initialisation has already run"):
        backend.apply(block, x, init=True)
    after = backend.export_weights(block)
    assert all(np.array_equal(before[k], after[k]) for k in before)


# -- Polyak averaging ------------------------------------------------------------------------------
def _ema_block(twin, decay, seed=0):
    config = {"num_filters": 2, "h_channels": 2, "conv": "nin", "polyak_decay": decay, "nonlinearity": "elu"}
    w = random_weights(config, seed, dtype=np.float32)
    return config, w, block_of(twin, config, w, dtype="float32")


def _set_live(backend, block, w):
    """Live weights := w, shadows kept (as an optimiser step would)."""
    current = backend.export_weights(block)
    backend.import_weights(block, {**current, **{k: v for k, v in w.items() if not k.endswith(EMA_SUFFIX)}})


def test_ema_decay_zero_returns_variable(twin):
    config, w0, (backend, block) = _ema_block(twin, 0.0)
    w1 = random_weights(config, 1, dtype=np.float32)
    _set_live(backend, block, w1)
    twin.impl.update_averages(block)
    got = backend.export_weights(block)
    for k, v in w1.items():
        # TF's formula shadow - (shadow - var) * 1 is var up to the rounding of one subtraction.
        np.testing.assert_array_equal(got[k + EMA_SUFFIX], w0[k] - (w0[k] - v))
        one_rounding = np.spacing(np.maximum(np.abs(w0[k]), np.abs(v)))
        assert np.all(np.abs(got[k + EMA_SUFFIX] - v) <= one_rounding)


def test_ema_first_update_averages(twin):
    """One step from w0 to w1 gives d*w0 + (1-d)*w1, not a copy of w1 (pitfall 25)."""
    d = 0.9
    config, w0, (backend, block) = _ema_block(twin, d)
    twin.impl.reset_averages(block)
    w1 = random_weights(config, 1, dtype=np.float32)
    _set_live(backend, block, w1)
    twin.impl.update_averages(block)
    got = backend.export_weights(block)
    for k in w1:
        expected = w0[k] - (w0[k] - w1[k]) * np.float32(twin.impl.one_minus_decay(d))
        np.testing.assert_array_equal(got[k + EMA_SUFFIX], expected)
        # ... which is d*w0 + (1-d)*w1 up to a few float32 roundings (two products, a sum, the decay).
        roundings = 4 * np.spacing(np.maximum(np.abs(w0[k]), np.abs(w1[k])))
        assert np.all(np.abs(got[k + EMA_SUFFIX] - (d * w0[k].astype(np.float64) + (1 - d) * w1[k])) <= roundings)


def test_ema_forward_reads_shadows_and_leaves_live_weights(twin):
    config, w0, (backend, block) = _ema_block(twin, 0.5)
    x, _, h = inputs(F=2, K=2)
    x, h = x.astype(np.float32), h.astype(np.float32)
    shadows = random_weights(config, 9, dtype=np.float32)
    backend.import_weights(block, {**w0, **{k + EMA_SUFFIX: v for k, v in shadows.items()}})
    ema_out = backend.apply(block, {"x": x, "h": h}, use_ema=True)["out"]
    live = backend.export_weights(block)
    # The same block with the shadows as its live weights computes the same numbers, bit for bit.
    _, as_live = block_of(twin, config, shadows, dtype="float32")
    np.testing.assert_array_equal(ema_out, backend.apply(as_live, {"x": x, "h": h})["out"])
    for k in w0:
        np.testing.assert_array_equal(live[k], w0[k])


# -- causality ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", ["down_shifted_conv2d", "down_right_shifted_conv2d"])
def test_causality_of_block(conv):
    """Gradients of an output pixel w.r.t. pixels below it (or to its right, same row) are exactly zero."""
    pytest.importorskip("torch")
    import torch

    from tests.adapters import get_twin

    twin = get_twin("torch")
    config = {"num_filters": 3, "conv": conv}
    _, block = block_of(twin, config, random_weights(config, 1, dtype=np.float64))
    x = twin.tensor(RNG.normal(size=(1, 6, 7, 3)), grad=True)
    i, j = 3, 4
    y = block(x)
    (grad,) = torch.autograd.grad(y[0, :, i, j].sum(), x)
    g = grad[0].abs().sum(0).numpy()  # (H, W)
    assert np.all(g[i + 1 :] == 0), "depends on rows below"
    if conv == "down_right_shifted_conv2d":
        assert np.all(g[i, j + 1 :] == 0), "depends on pixels to the right"
    assert g[i, j] > 0


@pytest.mark.parametrize("cls", ["DownShiftedConv2D", "DownRightShiftedConv2D"])
def test_causality_of_layers(twin, cls):
    layer = twin.make(cls, 3, 4)
    x = RNG.normal(size=(1, 6, 7, 3))
    base = twin.forward(layer, x)
    i, j = 2, 3
    later = x.copy()
    later[:, i + 1 :] += 10.0  # rows below
    if cls == "DownRightShiftedConv2D":
        later[:, i, j + 1 :] += 10.0  # same row, to the right
    y = twin.forward(layer, later)
    np.testing.assert_array_equal(y[:, : i + 1 if cls == "DownShiftedConv2D" else i, :], base[:, : i + 1 if cls == "DownShiftedConv2D" else i, :])
    np.testing.assert_array_equal(y[:, i, : j + 1], base[:, i, : j + 1])


TORCH = pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")


@TORCH
def test_the_block_keeps_its_input_layout_and_values():
    """An NCHW input runs channels-last inside on the CPU and comes back NCHW; a channels-last input
    stays channels-last; both give the same numbers."""
    import torch

    import torch_impl

    torch.manual_seed(0)
    block = torch_impl.GatedResnet(4, a_channels=3, h_channels=2, conv="down_shifted_conv2d")
    x, a, h = torch.randn(2, 4, 5, 7), torch.randn(2, 3, 5, 7), torch.randn(2, 2)
    block.initialize(x, a, h)
    out = block(x, a, h)
    assert out.is_contiguous()
    out_cl = block(x.contiguous(memory_format=torch.channels_last), a, h)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, out_cl)


@TORCH
def test_block_double_backward_matches_finite_differences():
    """A gradient penalty needs the block's gradient to be differentiable (float64)."""
    import torch

    import torch_impl

    torch.manual_seed(0)
    block = torch_impl.GatedResnet(2, a_channels=2, conv="down_right_shifted_conv2d", dtype=torch.float64)
    x, a = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 2, 3, 4, dtype=torch.float64)
    block.initialize(x, a)
    args = [t.clone().requires_grad_(True) for t in (x, a)]
    assert torch.autograd.gradgradcheck(lambda x_, a_: block(x_, a_), args)
