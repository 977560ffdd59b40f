"""PixelCNN++ twins: structure and names, both twins against the NumPy float64 reference and against
each other (forward, loss, gradients, init, EMA, samples), and causality."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests import reference as ref
from tests.conftest import BACKEND_PARAMS, BOTH, HAVE
from tests.twins import Adapter

CONFIG = {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "h_channels": 2, "dropout_p": 0.5, "polyak_decay": 0.9995}
B, H, W = 2, 8, 8


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-1, 1, (B, H, W, 3)) * 127.5) / 127.5  # on the 8-bit grid, edges included
    x[0, 0, :2] = -1.0
    x[1, -1, -2:] = 1.0
    return {"x": x, "h": rng.normal(size=(B, CONFIG["h_channels"]))}


def _masks(config: dict, seed: int = 1) -> list[np.ndarray]:
    from gated_spec.model import dropout_mask_shapes

    rng = np.random.default_rng(seed)
    return [(rng.uniform(size=s) >= config["dropout_p"]).astype(np.float64) for s in dropout_mask_shapes(config, B, H, W)]


def _weights(config: dict = CONFIG, seed: int = 0) -> dict[str, np.ndarray]:
    from parity.case import random_weights

    return random_weights({"model": "pixelcnn_pp", **config}, seed, shadows=config["polyak_decay"] is not None, dtype=np.float64)


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
def test_the_names_have_the_released_cifar10_checkpoints_structure():
    """R=5, F=160, M=10: conv2d_0..134, dense_0..49, deconv2d_0..3, as openai/pixel-cnn's checkpoint."""
    from gated_spec.model import block_count
    from parity.table import model_weight_table

    rows = {r.tf1_name: r.shape for r in model_weight_table({"nr_resnet": 5, "nr_filters": 160, "nr_logistic_mix": 10})}
    kinds = {}
    for name in rows:
        layer = name.split("/")[0]
        kinds.setdefault(layer.rsplit("_", 1)[0], set()).add(int(layer.rsplit("_", 1)[1]))
    assert {k: (min(v), max(v), len(v)) for k, v in kinds.items()} == {
        "conv2d": (0, 134, 135), "dense": (0, 49, 50), "deconv2d": (0, 3, 4)}
    assert rows["conv2d_0/V"] == (2, 3, 4, 160) and rows["conv2d_1/V"] == (1, 3, 4, 160) and rows["conv2d_2/V"] == (2, 1, 4, 160)
    assert rows["conv2d_3/V"] == (2, 3, 320, 160) and rows["conv2d_4/V"] == (2, 3, 320, 320)
    assert rows["dense_0/V"] == (320, 160)  # the first up-pass ul block's nin(concat_elu(u))
    assert rows["deconv2d_0/V"] == (2, 3, 160, 160) and rows["deconv2d_1/V"] == (2, 2, 160, 160)
    assert rows["dense_49/V"] == (160, 100) and rows["dense_49/b"] == (100,)
    assert block_count({"nr_resnet": 5}) == 64


def test_bad_model_arguments_are_one_line_errors():
    from gated_spec.model import normalize_model_config

    for bad, match in (({"nr_resnet": 0}, "nr_resnet=0"), ({"nonlinearity": "gelu"}, "nonlinearity"),
                       ({"dropout_p": 1.0}, "dropout_p=1.0"), ({"depth": 3}, "received also \\['depth'\\]")):
        with pytest.raises(ValueError, match=match):
            normalize_model_config(bad)


def test_inputs_that_do_not_fit_are_refused(twin):
    m = twin.model(_weights())
    d = _data()
    with pytest.raises(ValueError, match="multiple of 4"):
        twin.forward(m, {"x": d["x"][:, :6], "h": d["h"]})
    with pytest.raises(ValueError, match="built with h_channels=2; received h=None"):
        twin.forward(m, {"x": d["x"]})
    with pytest.raises(ValueError, match="expected 16 dropout masks"):
        twin.forward(m, d, masks=_masks(CONFIG)[:3])


# -- against the NumPy float64 reference ---------------------------------------------------------------
def test_forward_and_loss_match_the_reference(twin):
    w, d = _weights(), _data()
    m = twin.model(w)
    want = ref.pixelcnn_pp(d["x"], w, CONFIG["nr_resnet"], h=d["h"])
    got = twin.forward(m, d)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    masks = _masks(CONFIG)
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
    w, d = _weights(), _data()
    raw = {k: v for k, v in w.items() if k.endswith("/V") or k.endswith("/hw")}
    masks = _masks(CONFIG)
    m = twin.model(None)
    twin.backend.import_weights(m, {**w}, initialized=False)
    out = twin.initialize(m, d, masks=masks)
    want, new = ref.pixelcnn_pp(d["x"], raw, CONFIG["nr_resnet"], h=d["h"], masks=masks, p=CONFIG["dropout_p"], init=True)
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-10)
    got = twin.backend.export_weights(m)
    assert len(new) == len({k.split("/")[0] for k in raw if k.endswith("/V")})
    for name, (g, b) in new.items():
        np.testing.assert_allclose(got[f"{name}/g"], g, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(got[f"{name}/b"], b, rtol=1e-9, atol=1e-10, err_msg=name)
        np.testing.assert_array_equal(got[f"{name}/g/ExponentialMovingAverage"], got[f"{name}/g"])  # shadows restart as copies
    with pytest.raises(ValueError, match="already"):
        twin.initialize(m, d)


def test_a_failed_init_leaves_the_model_as_it_was(twin):
    w, d = _weights(), _data()
    m = twin.model(None)
    twin.backend.import_weights(m, w, initialized=False)
    before = twin.backend.export_weights(m)
    masks = _masks(CONFIG)
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

    w, d = _weights(), _data()
    tft, tot = Twin("tf"), Twin("torch")
    mt, mo = tft.model(w), tot.model(w)
    (lt, gt), (lo, go) = tft.loss_and_grads(mt, d), tot.loss_and_grads(mo, d)
    assert lt == pytest.approx(lo, rel=1e-12)
    for k in gt:
        np.testing.assert_allclose(go[k], gt[k], rtol=1e-8, atol=1e-12 * np.abs(gt[k]).max(), err_msg=k)
    # Polyak: two updates after moving the live weights, then the EMA forward
    moved = {k: v + 0.01 for k, v in w.items() if not k.endswith("/ExponentialMovingAverage")}
    for twin, m in ((tft, mt), (tot, mo)):
        twin.backend.import_weights(m, {**w, **moved})
        for _ in range(2):
            twin.backend.IMPL.update_averages(m)
    et, eo = tft.backend.export_weights(mt), tot.backend.export_weights(mo)
    for k in et:
        np.testing.assert_array_equal(eo[k], et[k], err_msg=k)
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
    l = ref.pixelcnn_pp(st, {k: v for k, v in {**w, **moved}.items()}, CONFIG["nr_resnet"], h=d["h"])
    draw = ref.mix_logistic_sample(l, noise["u_mix"], noise["u_value"])
    np.testing.assert_allclose(st[:, -1, -1], draw[:, -1, -1], rtol=1e-10, atol=1e-12)


# -- causality -----------------------------------------------------------------------------------------------
def test_the_network_is_causal(twin):
    """The output at (i, j) has zero gradient w.r.t. every input pixel at or after (i, j) in raster
    order, and a nonzero one w.r.t. some pixel before it (the pixel to its left, or above)."""
    w, d = _weights(), _data()
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
SMALL = {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "nonlinearity": "concat_elu"}


def _checkpoint(tmp_path, config=SMALL, h_channels=None):
    from tests import tf1_original

    rng = np.random.default_rng(11)
    batch = lambda n: {"x": np.round(rng.uniform(-1, 1, (n, H, W, 3)) * 127.5).astype(np.float32) / np.float32(127.5),  # noqa: E731
                       **({"h": rng.normal(size=(n, h_channels)).astype(np.float32)} if h_channels else {})}
    init_batch, test_batch = batch(4), batch(2)
    prefix = str(tmp_path / "model.ckpt")
    graph = tf1_original.write_model_checkpoint(prefix, config, init_batch, test_batch)
    return prefix, test_batch, graph


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (TF1 checkpoints)")
def test_a_whole_model_tf1_checkpoint_converts_and_runs_like_the_graph(tmp_path, capsys):
    """The compat.v1 graph's init pass, EMA and Saver; convert infers R, F, M, skips and counts the
    Adam slots; both twins reproduce the graph's float32 outputs, live and averaged."""
    from parity.cli import main

    prefix, test_batch, graph = _checkpoint(tmp_path)
    out = str(tmp_path / "m.safetensors")
    assert main(["convert", prefix, out, "--model", "pixelcnn_pp", "--nr-resnet", "1"]) == 0
    said = capsys.readouterr().out
    assert '"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2' in said and "optimiser slot" in said
    from parity.formats.canonical import load_canonical
    from parity.table import model_weight_table

    tensors, config, initialized = load_canonical(out)
    assert initialized and len(tensors) == len(model_weight_table(config)) and config["polyak_decay"] == 0.9995
    np.savez(tmp_path / "x.npz", **test_batch)
    backends = [b for b in ("tf", "torch") if HAVE[b]]
    for backend in backends:
        for ema, key in ((False, "out"), (True, "ema_out")):
            y = str(tmp_path / f"y_{backend}_{ema}.npz")
            assert main(["run", "--weights", out, "--inputs", str(tmp_path / "x.npz"), "--backend", backend, "--out", y]
                        + (["--ema"] if ema else [])) == 0
            with np.load(y) as f:
                np.testing.assert_allclose(f["out"], graph[key], rtol=1e-4, atol=2e-5, err_msg=f"{backend} {key}")
                assert f["loss"].dtype == np.float64 and f["loss"].shape == () and np.isfinite(f["loss"])
    capsys.readouterr()
    assert main(["convert", prefix, str(tmp_path / "bad.safetensors"), "--model", "pixelcnn_pp", "--nr-filters", "16"]) == 2
    assert "the shapes say nr_filters=8; the options say nr_filters=16" in capsys.readouterr().err


def test_a_whole_model_checkpoint_that_does_not_fit_names_every_tensor_in_call_order():
    """The model mapping shares the block's checks: each tensor missing, misshapen or not finite is
    named, the first in call order first; an optimiser slot is skipped, an unknown variable is not."""
    from parity.formats.tf1 import map_model_checkpoint
    from parity.errors import WeightError
    from parity.table import model_weight_table

    config = {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "polyak_decay": 0.9995}
    good = {f"model/{k}": v.astype(np.float32) for k, v in _weights(config).items()}
    mapped = map_model_checkpoint({**good, "model/conv2d_0/V/Adam": good["model/conv2d_0/V"]})
    assert len(mapped.tensors) == len(model_weight_table(config)) and mapped.skipped_slots == ["model/conv2d_0/V/Adam"]
    bad = {**good, "model/conv2d_5/g": np.full_like(good["model/conv2d_5/g"], np.nan), "model/extra_0/W": np.zeros(2)}
    del bad["model/dense_0/b"]
    with pytest.raises(WeightError, match=r"(?s)checkpoint do not fit the model \(4 problem\(s\)\).*"
                                          r"first mismatch: model/conv2d_5/g: holds NaN or Inf values.*"
                                          r"model/dense_0/b: missing.*model/extra_0/W: in the checkpoint but not part of the network"):
        map_model_checkpoint(bad)


def test_sample_command_draws_the_same_images_on_both_backends(tmp_path, capsys):
    from gated_spec.model import SAMPLER_U_MIN
    from parity.cli import main
    from parity.case import random_weights
    from parity.formats.canonical import save_canonical

    config = {"model": "pixelcnn_pp", **SMALL, "polyak_decay": 0.9995}
    w = random_weights({"model": "pixelcnn_pp", **config}, 3, shadows=True)
    save_canonical(tmp_path / "m.safetensors", w, config, initialized=True)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "u.npz", u_mix=rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (1, 4, 4, 2)).astype(np.float32),
             u_value=rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (1, 4, 4, 3)).astype(np.float32))
    drawn = {}
    for backend in [b for b in ("tf", "torch") if HAVE[b]]:
        out = tmp_path / f"s_{backend}.npz"
        assert main(["sample", "--weights", str(tmp_path / "m.safetensors"), "--backend", backend, "--noise",
                     str(tmp_path / "u.npz"), "--out", str(out), "--ema"]) == 0
        with np.load(out) as f:
            drawn[backend] = f["x"]
        assert drawn[backend].shape == (1, 4, 4, 3) and np.abs(drawn[backend]).max() <= 1
    if len(drawn) == 2:  # float32: equal to rounding, and on the 8-bit grid
        np.testing.assert_allclose(drawn["tf"], drawn["torch"], atol=1e-5)
    np.savez(tmp_path / "bad.npz", u_mix=np.zeros((1, 4, 4, 2), np.float32), u_value=np.zeros((1, 4, 4, 3), np.float32))
    capsys.readouterr()
    assert main(["sample", "--weights", str(tmp_path / "m.safetensors"), "--noise", str(tmp_path / "bad.npz"),
                 "--out", str(tmp_path / "o.npz")]) == 2
    assert "expected u_mix strictly inside (0, 1)" in capsys.readouterr().err and not (tmp_path / "o.npz").exists()


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (Keras files)")
def test_a_whole_model_goes_through_a_keras_weights_file_and_back(tmp_path, capsys):
    from parity.cli import main
    from parity.formats import read_any
    from parity.case import random_weights
    from parity.formats.canonical import save_canonical

    config = {"model": "pixelcnn_pp", **SMALL, "h_channels": 2, "polyak_decay": 0.9995}
    w = random_weights({"model": "pixelcnn_pp", **config}, 4, shadows=True)
    save_canonical(tmp_path / "m.safetensors", w, config, initialized=True)
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "m.weights.h5")]) == 0
    assert main(["convert", str(tmp_path / "m.weights.h5"), str(tmp_path / "back.safetensors"), "--polyak-decay", "0.9995"]) == 0
    back = read_any(str(tmp_path / "back.safetensors"))
    assert back.initialized and sorted(back.tensors) == sorted(w)
    assert all(np.array_equal(back.tensors[k], w[k]) for k in w)  # bit for bit, shadows included
    assert {k: back.config[k] for k in SMALL if k != "dropout_p"} == {k: v for k, v in SMALL.items() if k != "dropout_p"}
    assert back.config["h_channels"] == 2  # read from the blocks' hw
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "m.weights.h5"), str(tmp_path / "o.safetensors"), "--model", "pixelcnn_pp",
                 "--nr-filters", "5"]) == 2
    assert "the shapes say nr_filters=8; the options say nr_filters=5" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (Keras files)")
def test_keras_model_files_that_do_not_fit_are_one_line_errors(tmp_path, capsys):
    import h5py

    from parity.cli import main
    from parity.formats import write_any
    from parity.case import random_weights

    config = {"model": "pixelcnn_pp", **SMALL, "polyak_decay": None}
    good = tmp_path / "good.weights.h5"
    write_any(str(good), random_weights({"model": "pixelcnn_pp", **config}, 5, shadows=False), config, True)
    with h5py.File(good, "r") as f:
        top = list(f["layers"])[0]
        first_block = sorted(f[f"layers/{top}/up_u"])[0]
    root = f"layers/{top}"
    for name, edit, expect in (
        ("extra", lambda f: f.create_dataset(f"{root}/attention/vars/0", data=np.zeros(2)), "holds layers ['attention']"),
        ("short", lambda f: f.__delitem__(f"{root}/nin_out/vars/2"), "layer 'nin_out' does not fit a model"),
        ("shape", lambda f: (f.__delitem__(f"{root}/up_u/{first_block}/conv_output/vars/1"),
                             f.create_dataset(f"{root}/up_u/{first_block}/conv_output/vars/1", data=np.zeros(3, np.float32))),
         "layer 'up_u.0/conv_output' does not fit a model"),
        ("blocks", lambda f: f.__delitem__(f"{root}/up_u/{first_block}"), "up_u blocks and an output of"),
        ("dataset", lambda f: f.create_dataset(f"{root}/u_init/stray", data=np.zeros(2)), "found a dataset"),
    ):
        path = tmp_path / f"{name}.weights.h5"
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "a") as f:
            edit(f)
        capsys.readouterr()
        assert main(["convert", str(path), str(tmp_path / "o.safetensors")]) == 2, name
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not (tmp_path / "o.safetensors").exists()


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
def test_the_report_says_where_two_draws_part_in_raster_order():
    from parity.harness import sample_agreement

    a = np.zeros((2, 3, 4, 3))
    b = a.copy()
    b[1, 0, 2, 1] = 1e-7  # step (0, 2): one bit pattern differs, within the bound
    b[0, 2, 1, 0] = 1.0  # step (2, 1): a different draw
    assert sample_agreement(a, b, 1e-6) == "pixels identical 92%, first differing step (0, 2), first step beyond the bound (2, 1)"
    assert sample_agreement(a, a, 0.0).endswith("first differing step never, first step beyond the bound never")
    b[0, 0, 0, 0] = np.nan
    assert sample_agreement(a, b, 1e-6).endswith("first step beyond the bound (0, 0)")


@BOTH
def test_the_models_suite_passes_and_a_missing_ones_channel_is_caught_at_the_output(monkeypatch):
    """``check --suite models``' first case passes; the torch twin without the ones channel (zeros in
    its place) fails, first at the network output."""
    import torch

    import torch_impl.model as tm
    from parity.case import model_cases
    from parity.harness import check, compare_runs, run_backend, run_backend_here
    from parity.tolerance import MCA_SAMPLES

    case = model_cases()[0]
    report = check([case])
    assert report.passed, [c.tensor for c in report.cases[0].comparisons if not c.passed][:5]
    names = [c.tensor for c in report.cases[0].comparisons if c.dtype == "float32"]
    assert names[:4] == ["forward/out", "loss/sum", "loss/bits_per_dim", "grad/conv2d_0/V"] and "sample/x" in names and "init/dense_4/g" in names
    drawn = next(c for c in report.cases[0].comparisons if c.tensor == "sample/x" and c.dtype == "float32")
    assert "first step beyond the bound never" in drawn.note and "pixels identical" in drawn.note, drawn.note
    ref = run_backend("tf", case, mca_samples=MCA_SAMPLES)
    monkeypatch.setattr(tm, "with_ones", lambda x: torch.cat([x, torch.zeros_like(x[:, :1])], dim=1))
    naive = compare_runs(case.name, ref, run_backend_here("torch", case))
    assert naive.first_failure is not None and naive.first_failure.tensor == "forward/out"


FULL_SIZE = os.environ.get("PARITY_FULL_SIZE") == "1"


@pytest.mark.slow
@pytest.mark.skipif(not (FULL_SIZE and HAVE["tf"]), reason="full-size checkpoint: set PARITY_FULL_SIZE=1 (minutes; not in CI)")
def test_a_full_size_cifar10_shaped_checkpoint_converts_and_runs(tmp_path, capsys):
    """R=5, F=160, M=10, as the released PixelCNN++ CIFAR-10 checkpoint: written by the compat.v1 graph,
    converted, and run by both twins within the float32 tolerance of the graph's outputs."""
    from parity.cli import main

    prefix, test_batch, graph = _checkpoint(tmp_path, {"nr_resnet": 5, "nr_filters": 160, "nr_logistic_mix": 10})
    out = str(tmp_path / "m.safetensors")
    assert main(["convert", prefix, out, "--model", "pixelcnn_pp", "--nr-resnet", "5", "--nr-filters", "160",
                 "--nr-logistic-mix", "10"]) == 0
    print(capsys.readouterr().out)
    np.savez(tmp_path / "x.npz", **test_batch)
    for backend in [b for b in ("tf", "torch") if HAVE[b]]:
        y = str(tmp_path / f"y_{backend}.npz")
        assert main(["run", "--weights", out, "--inputs", str(tmp_path / "x.npz"), "--backend", backend, "--out", y, "--ema"]) == 0
        with np.load(y) as f:
            err = np.abs(f["out"] - graph["ema_out"]).max()
            print(f"{backend}: max abs error against the graph {err:.3e} (output scale {np.abs(graph['ema_out']).max():.2f})")
            np.testing.assert_allclose(f["out"], graph["ema_out"], rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not (HAVE["tf"] and HAVE["torch"]), reason="needs both TensorFlow and PyTorch")
def test_a_model_case_records_and_verifies_without_tensorflow_in_the_checker(tmp_path):
    """``record --suite models`` then ``verify``: the path a GPU machine without TensorFlow takes."""
    from parity.case import model_cases
    from parity.harness import load_record, record, verify

    case = model_cases()[1]
    path = tmp_path / "models.safetensors"
    record(path, backend="tf", cases=[case])
    _, [(loaded, results)] = load_record(path)
    assert type(loaded).__name__ == "ModelCase" and loaded.config == case.config and results["float32"]["loss/sum"].shape == (1,)
    assert verify(path, backend="torch").passed
