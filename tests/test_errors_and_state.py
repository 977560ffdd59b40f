"""Bad input raises a ValueError naming what was expected and what came; state survives saving."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from parity.weights import random_weights
from tests.conftest import CUDA, HAVE

RNG = np.random.default_rng(3)


def _block(twin, **config):
    config = {"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": "conv2d", **config}
    from parity.backends import get_backend

    backend = get_backend(twin.name)
    block = backend.build(config, "float64")
    backend.import_weights(block, random_weights(config, 0, dtype=np.float64), True)
    return block


def _call(twin, block, x, a=None, h=None, **kw):
    t = twin.tensor
    return block(t(x), t(a), t(h), **kw)


X = RNG.normal(size=(2, 5, 7, 4))
A = RNG.normal(size=(2, 5, 7, 3))
H = RNG.normal(size=(2, 2))


@pytest.mark.parametrize(
    "what,args,message",
    [
        ("rank", dict(x=X[0]), "expected `x` of rank 4"),
        ("channels", dict(x=RNG.normal(size=(2, 5, 7, 6))), "expected `x` with 4 channels"),
        ("a batch", dict(x=X, a=A[:1]), "expected `a` with the B/H/W of `x` (B=2, H=5, W=7)"),
        ("a width", dict(x=X, a=RNG.normal(size=(2, 5, 6, 3))), "expected `a` with the B/H/W of `x`"),
        ("a channels", dict(x=X, a=RNG.normal(size=(2, 5, 7, 5))), "expected `a` with 3 channels"),
        ("h batch", dict(x=X, h=H[:1]), "expected `h` with the B of `x` (B=2)"),
        ("h size", dict(x=X, h=RNG.normal(size=(2, 5))), "expected `h` with 2 channels"),
        ("dtype", dict(x=X.astype(np.float32)), "expected `x` of dtype float64; received dtype float32"),
    ],
)
def test_block_bad_input(twin, what, args, message):
    block = _block(twin)
    with pytest.raises(ValueError) as err:
        _call(twin, block, args["x"], args.get("a"), args.get("h"))
    assert message in str(err.value), str(err.value)


def test_layout_mistake_is_named(twin):
    """The other framework's layout fails with the expected layout in the message (H, W, C all differ)."""
    block = _block(twin)
    if twin.name == "tf":
        wrong, expected = twin.tf.constant(np.transpose(X, (0, 3, 1, 2))), "NHWC (B, H, W, C)"  # NCHW given
    else:
        wrong, expected = twin.torch.as_tensor(X), "NCHW (B, C, H, W)"  # NHWC given
    with pytest.raises(ValueError) as err:
        block(wrong)
    assert expected in str(err.value) and "received shape" in str(err.value)


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_filters=0), "Received: num_filters=0"),
    (dict(num_filters=4, conv="conv3d"), "Expected conv to be one of"),
    (dict(num_filters=4, nonlinearity="tanh"), "Expected nonlinearity to be one of"),
    (dict(num_filters=4, dropout_p=1.0), "Expected dropout_p in [0, 1)"),
    (dict(num_filters=4, a_channels=-1), "Received: a_channels=-1"),
])
def test_bad_config(twin, kwargs, message):
    with pytest.raises(ValueError) as err:
        twin.impl.GatedResnet(**kwargs)
    assert message in str(err.value)


def test_layer_bad_filters(twin):
    with pytest.raises(ValueError, match="Received: num_filters=0"):
        twin.impl.WeightNormConv2D(3, 0)
    with pytest.raises(ValueError, match="Received: pad='same'"):
        twin.impl.WeightNormConv2D(3, 2, pad="same")


def test_unsupported_arguments_are_named(twin):
    block = _block(twin, a_channels=None, h_channels=None)
    with pytest.raises(ValueError, match="received `a`, but this block was built with a_channels=None"):
        _call(twin, block, X, a=A)
    with pytest.raises(ValueError, match="received `h`, but this block was built with h_channels=None"):
        _call(twin, block, X, h=H)
    with pytest.raises(ValueError, match="use_ema=True needs averaged weights"):
        _call(twin, block, X, use_ema=True)
    with pytest.raises(ValueError, match="received `dropout_mask`, but this block was built with dropout_p=0"):
        _call(twin, block, X, dropout_mask=twin.tensor(np.ones((2, 5, 7, 8))))


# -- saving ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE["tf"], reason="tf not installed")
def test_keras_file_round_trip_keeps_weights_flag_and_shadows(tmp_path):
    import keras

    import tf_impl

    block = tf_impl.GatedResnet(4, a_channels=3, h_channels=2, conv="down_shifted_conv2d", polyak_decay=0.99,
                                dropout_p=0.1)
    x, a, h = X.astype(np.float32), A.astype(np.float32), H.astype(np.float32)
    block.initialize(x, a, h)
    for _ in range(2):
        for v in block.trainable_variables:
            v.assign(v + 0.01)
        tf_impl.update_averages(block)
    model = keras.Sequential([keras.Input((5, 7, 4)), block])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", custom_objects={"GatedResnet": tf_impl.GatedResnet})
    clone = loaded.layers[0]
    assert clone.get_config()["polyak_decay"] == 0.99 and clone.initialized
    assert {v.path.split("/", 1)[1] for v in clone.weights} == {v.path.split("/", 1)[1] for v in block.weights}
    for v, w in zip(sorted(block.weights, key=lambda v: v.path), sorted(clone.weights, key=lambda v: v.path)):
        np.testing.assert_array_equal(np.asarray(v.numpy()), np.asarray(w.numpy()), err_msg=v.path)
    np.testing.assert_array_equal(clone(x, a, h, use_ema=True).numpy(), block(x, a, h, use_ema=True).numpy())


@pytest.mark.skipif(not HAVE["tf"], reason="tf not installed")
def test_keras_tf_function_and_float64():
    import tensorflow as tf

    import tf_impl

    block = tf_impl.GatedResnet(4, a_channels=3, conv="nin", dtype="float64")
    block.initialize(X, A)
    f = tf.function(lambda x, a: block(x, a))
    np.testing.assert_allclose(f(tf.constant(X), tf.constant(A)).numpy(), block(X, A).numpy(), rtol=0, atol=1e-14)


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_torch_deepcopy_pickle_and_state_dict_keep_everything():
    import torch

    import torch_impl

    block = torch_impl.GatedResnet(4, a_channels=3, h_channels=2, polyak_decay=0.9)
    x = torch.randn(2, 4, 5, 7)
    a = torch.randn(2, 3, 5, 7)
    h = torch.randn(2, 2)
    block.initialize(x, a, h)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.01)
    torch_impl.update_averages(block)
    for clone in (copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        assert clone.initialized
        for (k, v), (k2, v2) in zip(block.state_dict().items(), clone.state_dict().items()):
            assert k == k2 and torch.equal(v, v2), k
        assert torch.equal(clone(x, a, h, use_ema=True), block(x, a, h, use_ema=True))
    fresh = torch_impl.GatedResnet(4, a_channels=3, h_channels=2, polyak_decay=0.9)
    fresh.load_state_dict(block.state_dict())
    assert fresh.initialized
    assert "hw" in dict(fresh.named_parameters())  # created eagerly: visible to an optimiser (PITFALLS 7)


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_torch_channels_last_and_compile():
    import torch

    import torch_impl

    torch.manual_seed(0)
    block = torch_impl.GatedResnet(4, a_channels=3, h_channels=2, conv="down_right_shifted_conv2d").eval()
    x = torch.randn(2, 4, 5, 7)
    a = torch.randn(2, 3, 5, 7)
    h = torch.randn(2, 2)
    block.initialize(x, a, h)
    eager = block(x, a, h)
    cl = block(x.to(memory_format=torch.channels_last), a.to(memory_format=torch.channels_last), h)
    torch.testing.assert_close(cl, eager, rtol=0, atol=1e-6)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")  # fullgraph: no graph break
    torch.testing.assert_close(compiled(x, a, h), eager, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_torch_compile_inductor_matches_eager():
    import torch

    import torch_impl

    torch.manual_seed(1)
    block = torch_impl.GatedResnet(4, conv="down_shifted_conv2d").eval()
    x = torch.randn(2, 4, 5, 7)
    block.initialize(x)
    compiled = torch.compile(block, fullgraph=True)
    # Inductor fuses element-wise ops (different rounding): within float32 noise, see parity/tolerance.py.
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-5, atol=1e-5)


@CUDA
def test_torch_cuda_matches_cpu():
    import torch

    import torch_impl

    torch.manual_seed(2)
    block = torch_impl.GatedResnet(4, a_channels=3, conv="down_shifted_conv2d", dtype=torch.float64)
    x = torch.randn(2, 4, 5, 7, dtype=torch.float64)
    a = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    block.initialize(x, a)
    gpu = copy.deepcopy(block).cuda()
    torch.testing.assert_close(gpu(x.cuda(), a.cuda()).cpu(), block(x, a), rtol=0, atol=1e-12)
