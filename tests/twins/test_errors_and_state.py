"""Bad input raises a ValueError naming what was expected and what came; state survives saving."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from parity.case import random_weights
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
        ("a missing", dict(x=X, a=None), "expected `a` (this block was built with a_channels=3); received none"),
        ("h missing", dict(x=X, h=None), "expected `h` (this block was built with h_channels=2); received none"),
    ],
)
def test_block_bad_input(twin, what, args, message):
    """Each bad input alone (the others as the block was built for): a one-line error naming it."""
    block = _block(twin)
    with pytest.raises(ValueError) as err:
        _call(twin, block, args["x"], args.get("a", A), args.get("h", H))
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

    tf.keras.utils.set_random_seed(0)
    block32 = tf_impl.GatedResnet(4, a_channels=3, conv="nin")
    x32, a32 = X.astype(np.float32), A.astype(np.float32)
    block32.initialize(x32, a32)

    def traced(dtype):
        block = tf_impl.GatedResnet(4, a_channels=3, conv="nin", dtype=dtype)
        block.build()
        for v, v32 in zip(block.weights, block32.weights):  # the same (float32) weights in both dtypes
            v.assign(tf.cast(v32.value, v.dtype))
        x, a = x32.astype(dtype), a32.astype(dtype)
        f = tf.function(lambda x, a: block(x, a))  # graph optimisations may reorder: other rounding
        return block(x, a).numpy(), f(tf.constant(x), tf.constant(a)).numpy()

    _within_parity_bound("tf.function", traced)


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
    assert "hw" in dict(fresh.named_parameters())  # created eagerly: visible to an optimiser (pitfall 7)


def _within_parity_bound(name, run):
    """``run(dtype) -> (reference, other)`` as NumPy; compared under the project's one tolerance policy
    (parity/tolerance.py: K x the reference's float32 noise floor against its own float64 run)."""
    from parity.tolerance import compare

    ref, other = {}, {}
    for dtype in ("float32", "float64"):
        ref[dtype], other[dtype] = run(dtype)
    for dtype in ("float32", "float64"):
        c = compare("test", name, dtype, ref, other)
        assert c.passed, f"{name} {dtype}: max abs {c.max_abs:.3e} > bound {c.bound:.3e} ({c.source})"


def _torch_block(seed, dtype, **config):
    """An initialised block and inputs made in float32 (then cast), so float32 and float64 runs start equal."""
    import torch

    import torch_impl

    torch.manual_seed(seed)
    block = torch_impl.GatedResnet(4, **config).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 5, 7, generator=gen)
    a = torch.randn(2, 3, 5, 7, generator=gen) if config.get("a_channels") else None
    h = torch.randn(2, 2, generator=gen) if config.get("h_channels") else None
    block.initialize(x, a, h)
    to = getattr(torch, dtype)
    return block.to(to), *(None if t is None else t.to(to) for t in (x, a, h))


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_torch_channels_last_and_compile():
    import torch

    config = dict(a_channels=3, h_channels=2, conv="down_right_shifted_conv2d")

    def channels_last(dtype):
        block, x, a, h = _torch_block(0, dtype, **config)
        cl = block(x.to(memory_format=torch.channels_last), a.to(memory_format=torch.channels_last), h)
        return block(x, a, h).detach().numpy(), cl.detach().numpy()

    _within_parity_bound("channels_last", channels_last)  # other conv kernels, other rounding
    block, x, a, h = _torch_block(0, "float32", **config)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")  # fullgraph: no graph break
    torch.testing.assert_close(compiled(x, a, h), block(x, a, h), rtol=0, atol=0)  # same eager kernels


@pytest.mark.slow
@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_torch_compile_inductor_matches_eager():
    import torch

    def inductor(dtype):
        block, x, _, _ = _torch_block(1, dtype, conv="down_shifted_conv2d")
        compiled = torch.compile(block, fullgraph=True)  # fuses element-wise ops: other rounding
        return block(x).detach().numpy(), compiled(x).detach().numpy()

    _within_parity_bound("torch.compile (inductor)", inductor)


@CUDA
def test_torch_cuda_matches_cpu():
    def cuda(dtype):
        block, x, a, _ = _torch_block(2, dtype, a_channels=3, conv="down_shifted_conv2d")
        gpu = copy.deepcopy(block).cuda()
        return block(x, a).detach().numpy(), gpu(x.cuda(), a.cuda()).detach().cpu().numpy()

    _within_parity_bound("cuda vs cpu", cuda)


@pytest.mark.skipif(not HAVE["tf"], reason="tf not installed")
def test_keras_saving_needs_no_custom_objects_and_deepcopy_works(tmp_path):
    import copy

    import keras

    import tf_impl

    x = X.astype(np.float32)
    block = tf_impl.GatedResnet(4, conv="down_shifted_conv2d", polyak_decay=0.99)
    block.initialize(x)
    model = keras.Sequential([keras.Input((5, 7, 4)), block])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")  # every tf_impl class is registered
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    clone = copy.deepcopy(block)
    np.testing.assert_array_equal(clone(x, use_ema=True).numpy(), block(x, use_ema=True).numpy())
    for name in tf_impl.__all__:
        obj = getattr(tf_impl, name)
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
            assert keras.saving.get_registered_object(f"gated_resnet_parity>{name}") is obj, name


@pytest.mark.skipif(not HAVE["tf"], reason="tf not installed")
def test_mixed_precision_is_refused_at_construction_and_init_inside_tf_function_is_a_clear_error():
    import keras
    import tensorflow as tf

    import tf_impl

    with pytest.raises(ValueError, match="computes in its variables' dtype.*mixed_float16"):
        tf_impl.GatedResnet(4, dtype="mixed_float16")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with pytest.raises(ValueError, match="mixed_bfloat16"):
            tf_impl.DownShiftedConv2D(3, 4)
    finally:
        keras.config.set_dtype_policy(previous)
    block = tf_impl.GatedResnet(4)
    with pytest.raises(RuntimeError, match="initialize\\(\\) runs eagerly"):
        tf.function(block.initialize)(X.astype(np.float32))
    assert not block.initialized
