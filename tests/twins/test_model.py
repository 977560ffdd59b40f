"""PixelCNN++ twins: structure and names, both twins against the NumPy float64 reference and against
each other (forward, loss, gradients, init, EMA, samples), and causality."""

from __future__ import annotations

import numpy as np
import pytest

from tests import reference as ref
from tests.conftest import BACKEND_PARAMS, BOTH, HAVE
from tests.models import (CONFIG, B, H, W, assert_initialized_as, assert_twins_agree_in_float64, model_data, model_masks,
                          model_weights)
from tests.adapters import Adapter


class Twin(Adapter):
    """NHWC NumPy in and out over one twin's model (the backends' adapter and parity steps)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()

    def model(self, weights: dict | None, config: dict = CONFIG, initialized: bool = True):
        m = self.backend.build({"model": "pixelcnn_pp", **config}, "float64")
        if weights is not None:
            self.backend.import_weights(m, weights, initialized)
        return m

    def t(self, a):
        return self.tensor(a, "float64")

    def n(self, t) -> np.ndarray:
        return self.numpy(t)

    def forward(self, m, d, use_ema=False, masks=None):
        return self.backend.model_forward(m, {"x": self.t(d["x"]), "h": self.t(d.get("h"))}, use_ema=use_ema, masks=masks)

    def initialize(self, m, d, masks=None, dropout=True):
        return self.n(m.initialize(self.t(d["x"]), self.t(d.get("h")), dropout=dropout,
                                   dropout_masks=None if masks is None else [self.t(k) for k in masks]))

    def loss_and_grads(self, m, d):
        """The summed loss and its gradient w.r.t. every raw weight (TF1 names, TF layout)."""
        from parity.table import model_weight_table

        rows = model_weight_table(m.config, shadows=False)
        _, loss, grads = self.backend.model_loss_and_gradients(m, {"x": self.t(d["x"]), "h": self.t(d.get("h"))}, rows)
        return float(loss), grads

    def loss_grad_l(self, x, l) -> np.ndarray:
        """The gradient of the summed loss w.r.t. ``l`` (NHWC)."""
        if self.name == "torch":
            import torch

            from torch_impl.mixture import discretized_mix_logistic_loss

            lt = self.t(l).requires_grad_(True)
            (g,) = torch.autograd.grad(discretized_mix_logistic_loss(self.t(x), lt), [lt])
            return self.n(g)
        import tensorflow as tf

        from tf_impl.mixture import discretized_mix_logistic_loss

        lt = self.t(l)
        with tf.GradientTape() as tape:
            tape.watch(lt)
            loss = discretized_mix_logistic_loss(self.t(x), lt)
        return np.asarray(tape.gradient(loss, lt))

    def loss(self, x, l, sum_all=True):
        if self.name == "torch":
            from torch_impl.mixture import discretized_mix_logistic_loss
        else:
            from tf_impl.mixture import discretized_mix_logistic_loss
        return self.n(discretized_mix_logistic_loss(self.t(x), self.t(l), sum_all))

    def sample(self, m, d, noise, use_ema=False):
        if self.name == "torch":
            import torch

            from torch_impl.mixture import sample
            u = {k: torch.as_tensor(v) for k, v in noise.items()}
        else:
            from tf_impl.mixture import sample
            u = noise
        return self.n(sample(m, B, H, W, self.t(d.get("h")), use_ema=use_ema, **u))


@pytest.fixture(params=BACKEND_PARAMS)
def twin(request):
    return Twin(request.param)


# -- structure ---------------------------------------------------------------------------------------


def test_bad_model_arguments_are_one_line_errors():
    from gated_spec.model import normalize_model_config

    for bad, match in (({"nr_resnet": 0}, "nr_resnet=0"), ({"nonlinearity": "gelu"}, "nonlinearity"),
                       ({"dropout_p": 1.0}, "dropout_p=1.0"), ({"depth": 3}, "received also \\['depth'\\]")):
        with pytest.raises(ValueError, match=match):
            normalize_model_config(bad)


def test_inputs_that_do_not_fit_are_refused(twin):
    m = twin.model(model_weights())
    d = model_data()
    with pytest.raises(ValueError, match="multiple of 4"):
        twin.forward(m, {"x": d["x"][:, :6], "h": d["h"]})
    with pytest.raises(ValueError, match="built with h_channels=2; received h=None"):
        twin.forward(m, {"x": d["x"]})
    with pytest.raises(ValueError, match="expected 16 dropout masks"):
        twin.forward(m, d, masks=model_masks(CONFIG)[:3])


# -- against the NumPy float64 reference ---------------------------------------------------------------
def test_forward_and_loss_match_the_reference(twin):
    w, d = model_weights(), model_data()
    m = twin.model(w)
    want = ref.pixelcnn_pp(d["x"], w, CONFIG["nr_resnet"], h=d["h"])
    got = twin.forward(m, d)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    masks = model_masks(CONFIG)
    np.testing.assert_allclose(twin.forward(m, d, masks=masks),
                               ref.pixelcnn_pp(d["x"], w, CONFIG["nr_resnet"], h=d["h"], masks=masks, p=CONFIG["dropout_p"]),
                               rtol=1e-10, atol=1e-11)
    shadows = {k[: -len("/ExponentialMovingAverage")]: v for k, v in w.items() if k.endswith("/ExponentialMovingAverage")}
    np.testing.assert_allclose(twin.forward(m, d, use_ema=True), ref.pixelcnn_pp(d["x"], shadows, CONFIG["nr_resnet"], h=d["h"]),
                               rtol=1e-10, atol=1e-11)
    for sum_all in (True, False):
        np.testing.assert_allclose(twin.loss(d["x"], got, sum_all), ref.mix_logistic_loss(d["x"], want, sum_all), rtol=1e-12)


def test_every_loss_branch_matches_the_reference(twin):
    """Edges at +-1, the cdf_delta switch both ways (tiny scales far from the mean: the density
    branch), and log scales under the -7 clamp."""
    rng = np.random.default_rng(3)
    M = 3
    l = rng.normal(size=(2, 4, 4, 10 * M)) * 3
    l[0, 0, :, M:] = -12.0  # log scales under -7 and means 0: sharp components
    x = np.round(rng.uniform(-1, 1, (2, 4, 4, 3)) * 127.5) / 127.5
    x[0, 0, 0], x[0, 0, 1], x[0, 0, 2] = -1.0, 1.0, 0.6  # 0.6 is far from the sharp means: cdf_delta < 1e-5
    c = rng.normal(size=(2, 4, 4, 3))
    np.testing.assert_allclose(twin.loss(x, l), ref.mix_logistic_loss(x, l), rtol=1e-12)
    np.testing.assert_allclose(twin.loss(x, l, sum_all=False), ref.mix_logistic_loss(x, l, sum_all=False), rtol=1e-12)
    assert np.isfinite(twin.loss(x + 0 * c, l))


def test_init_matches_the_reference(twin):
    """The init pass: every layer's g and b (in call order) and the output, with given dropout masks."""
    w, d = model_weights(), model_data()
    raw = {k: v for k, v in w.items() if k.endswith("/V") or k.endswith("/hw")}
    masks = model_masks(CONFIG)
    m = twin.model(None)
    twin.backend.import_weights(m, {**w}, initialized=False)
    out = twin.initialize(m, d, masks=masks)
    want, new = ref.pixelcnn_pp(d["x"], raw, CONFIG["nr_resnet"], h=d["h"], masks=masks, p=CONFIG["dropout_p"], init=True)
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-10)
    got = twin.backend.export_weights(m)
    assert_initialized_as(got, new, raw)
    for name in new:
        np.testing.assert_array_equal(got[f"{name}/g/ExponentialMovingAverage"], got[f"{name}/g"])  # shadows restart as copies
    with pytest.raises(ValueError, match="already"):
        twin.initialize(m, d)


def test_a_failed_init_leaves_the_model_as_it_was(twin):
    w, d = model_weights(), model_data()
    m = twin.model(None)
    twin.backend.import_weights(m, w, initialized=False)
    before = twin.backend.export_weights(m)
    masks = model_masks(CONFIG)
    masks[-1] = masks[-1][..., :2]  # the last block's mask does not fit: fails after every other layer initialised
    with pytest.raises(ValueError, match="dropout_mask"):
        twin.initialize(m, d, masks=masks)
    after = twin.backend.export_weights(m)
    assert not m.initialized
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


# -- the twins against each other -------------------------------------------------------------------------
@BOTH
def test_the_twins_agree_on_loss_gradients_ema_and_samples():
    from gated_spec.model import SAMPLER_U_MIN

    w, d = model_weights(), model_data()
    tft, tot = Twin("tf"), Twin("torch")
    mt, mo = tft.model(w), tot.model(w)
    # Polyak: two updates after moving the live weights, then the EMA forward
    after = assert_twins_agree_in_float64(tft.loss_and_grads(mt, d), tot.loss_and_grads(mo, d), [(tft, mt), (tot, mo)], w, 2)
    np.testing.assert_allclose(tot.forward(mo, d, use_ema=True), tft.forward(mt, d, use_ema=True), rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(5)
    noise = {"u_mix": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, CONFIG["nr_logistic_mix"])),
             "u_value": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, 3))}
    st, so = tft.sample(mt, d, noise), tot.sample(mo, d, noise)
    # float64: the networks' outputs differ by rounding (1e-16 at the first step), so the samples
    # agree to ~1e-14 and exactly on the 8-bit grid; a different component or coupling would not.
    np.testing.assert_allclose(so, st, rtol=0, atol=1e-12)
    assert np.array_equal(np.round(st * 127.5), np.round(so * 127.5))
    # the sampler's last step against the reference: the image it returns is its own fixed point
    l = ref.pixelcnn_pp(st, after, CONFIG["nr_resnet"], h=d["h"])
    draw = ref.mix_logistic_sample(l, noise["u_mix"], noise["u_value"])
    np.testing.assert_allclose(st[:, -1, -1], draw[:, -1, -1], rtol=1e-10, atol=1e-12)


# -- causality -----------------------------------------------------------------------------------------------
def test_the_network_is_causal(twin):
    """The output at (i, j) has zero gradient w.r.t. every input pixel at or after (i, j) in raster
    order, and a nonzero one w.r.t. some pixel before it (the pixel to its left, or above)."""
    w, d = model_weights(), model_data()
    m = twin.model(w)
    for i, j in ((0, 0), (0, 3), (3, 0), (4, 5), (7, 7)):
        g = _output_gradient(twin, m, d, i, j)  # (B, H, W, 3) w.r.t. x
        flat = np.abs(g).sum(axis=(0, 3)).reshape(-1)
        pos = i * W + j
        assert np.all(flat[pos:] == 0.0), f"{twin.name}: output ({i}, {j}) depends on input pixel {int(np.argmax(flat[pos:] != 0)) + pos}"
        if pos:
            assert flat[:pos].max() > 0, f"{twin.name}: output ({i}, {j}) sees nothing before it"


def _output_gradient(twin: Twin, m, d, i: int, j: int) -> np.ndarray:
    if twin.name == "torch":
        import torch

        x = twin.t(d["x"]).requires_grad_(True)
        m.eval()
        out = m(x, twin.t(d["h"]))
        (g,) = torch.autograd.grad(out[:, :, i, j].sum(), [x])
        return twin.n(g)
    import tensorflow as tf

    x = twin.t(d["x"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = m(x, twin.t(d["h"]))
        s = tf.reduce_sum(out[:, i, j, :])
    return np.asarray(tape.gradient(s, x))


def test_within_a_pixel_the_loss_uses_red_before_green_before_blue(twin):
    """With one mixture component the loss is a sum of per-channel terms, R's on x_R, G's on x_G and
    the observed x_R, B's on x_B, x_R, x_G. So the gradient w.r.t. R's parameters (mean, log scale,
    coefficient) must not move when x_G or x_B change, and G's not when x_B changes; each must move
    with the channels it conditions on."""
    rng = np.random.default_rng(7)
    l = rng.normal(size=(1, 4, 4, 10))
    x = np.round(rng.uniform(-0.9, 0.9, (1, 4, 4, 3)) * 127.5) / 127.5

    def params_grad(x):
        g = twin.loss_grad_l(x, l)[..., 1:].reshape(1, 4, 4, 3, 3)  # (..., channel, [mean, log scale, coeff])
        return g[..., :2]  # mean and log scale of each channel

    base = params_grad(x)
    for changed, still in ((2, (0, 1)), (1, (0,)), (0, ())):
        y = x.copy()
        y[..., changed] = np.clip(y[..., changed] + 8 / 255, -1, 1)
        moved = params_grad(y)
        for ch in range(3):
            same = np.array_equal(moved[..., ch, :], base[..., ch, :])
            assert same == (ch in still), f"{twin.name}: channel {ch}'s term {'moved' if not same else 'did not move'} with x[{changed}]"


# -- original checkpoints and the command line ----------------------------------------------------------


@BOTH
def test_softplus_is_tensorflows_forward_and_gradient_across_its_cut_offs():
    """torch_impl.ops.softplus against tf.nn.softplus on points around both cut-offs and F.softplus's
    20, in float32 and float64: the values and gradients TensorFlow computes (F.softplus's gradient
    is exactly 1 above 20, TensorFlow's is sigmoid(x))."""
    got, want = _softplus_torch(), _softplus_tf()
    for dtype in ("float32", "float64"):
        for part in ("value", "grad"):
            # exp and log1p are each library's own kernels: they may differ by an ulp (24 % of these
            # points in float32 here); the cut-offs and the gradient's formula are what must agree
            np.testing.assert_allclose(got[dtype][part], want[dtype][part], rtol=4 * np.finfo(dtype).eps, atol=0,
                                       err_msg=f"{dtype} {part}")
    assert np.any(want["float64"]["grad"][got["x64"] > 20] < 1.0)  # where F.softplus would say 1


@BOTH
def test_sigmoid_is_tensorflows_float64_formula_and_gradient_near_one():
    """torch_impl.ops.sigmoid against tf.sigmoid in float64 where the output is near 1 (x in [6, 12]),
    where the loss's cdf_delta is a difference of two such outputs (pitfall M11): the same values
    (TensorFlow's e / (1 + e); torch.sigmoid's 1 / (1 + exp(-x)) differs by an ulp on about half of
    them), the same gradient grad * (y * (1 - y)), and 1, not NaN, where exp overflows."""
    import tensorflow as tf
    import torch

    from torch_impl.ops import sigmoid

    x = np.concatenate([np.linspace(6, 12, 601), [40.0, 710.0, 1000.0, -1000.0, np.inf, -np.inf]])
    cot = np.linspace(-2, 2, x.size)
    t = torch.tensor(x, requires_grad=True)
    y = sigmoid(t)
    (g,) = torch.autograd.grad(y, t, torch.tensor(cot))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        yt = tf.sigmoid(xt)
    gt = tape.gradient(yt, xt, output_gradients=tf.constant(cot))
    np.testing.assert_array_equal(y.detach().numpy(), yt.numpy())
    np.testing.assert_array_equal(g.numpy(), gt.numpy())
    assert np.mean(torch.sigmoid(torch.tensor(x[:601])).numpy() != yt.numpy()[:601]) > 0.2  # what the test tells apart


def _softplus_points() -> np.ndarray:
    return np.concatenate([np.linspace(-40, 40, 161), [-34.1, -34.0, -13.95, -13.9, 13.9, 13.95, 19.9, 20.1, 34.0, 34.1]])


def _softplus_torch() -> dict:
    import torch

    from torch_impl.ops import softplus

    out: dict = {"x64": _softplus_points()}
    for dtype in ("float32", "float64"):
        x = torch.tensor(_softplus_points(), dtype=getattr(torch, dtype), requires_grad=True)
        y = softplus(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        out[dtype] = {"value": y.detach().numpy(), "grad": g.numpy()}
    return out


def _softplus_tf() -> dict:
    import tensorflow as tf

    out: dict = {}
    for dtype in ("float32", "float64"):
        x = tf.constant(_softplus_points().astype(dtype))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.softplus(x)
        out[dtype] = {"value": y.numpy(), "grad": tape.gradient(y, x).numpy()}
    return out


# -- model-level parity in the harness -----------------------------------------------------------------------




@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow")
def test_tensorflow_checkpoints_save_and_restore_every_variable_of_a_model(tmp_path):
    """``tf.train.Checkpoint(model=...)`` sees the blocks held in lists (Keras 3's own list wrapper is
    invisible to TensorFlow's object tracking): every variable, shadows and init flags included, is
    written, and restoring into a fresh model makes it equal to the saved one."""
    import tensorflow as tf

    saved, fresh = Twin("tf").model(model_weights(seed=0)), Twin("tf").model(model_weights(seed=1), initialized=False)
    path = tf.train.Checkpoint(model=saved).write(str(tmp_path / "ckpt"))
    assert len(tf.train.list_variables(path)) == len(saved.variables) + 1  # + the object graph
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    assert fresh.initialized
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(saved.variables, fresh.variables))
