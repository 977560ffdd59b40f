"""The original's optimiser, schedule and train step in both twins: against the NumPy reference of
``nn.adam_updates``, against each other over several steps, and the Polyak order."""

from __future__ import annotations

import numpy as np
import pytest

from gated_spec.training import learning_rate
from tests import reference as ref
from tests.conftest import BACKEND_PARAMS, BOTH

CONFIG = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "dropout_p": 0.5, "polyak_decay": 0.9995}


def _grads(seed: int, shape: tuple[int, ...], steps: int, dtype: str) -> list[np.ndarray]:
    """Gradients at every scale Adam sees, tiny ones included (where eps inside the root matters)."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=shape) * 10.0 ** rng.integers(-7, 1, shape)).astype(dtype) for _ in range(steps)]


def _run_optimizer(name: str, p0: np.ndarray, grads: list[np.ndarray], lr: float, lr_decay: float, mom1: float) -> np.ndarray:
    """The twin's OriginalAdam (with its schedule) on one parameter fed the given gradients."""
    dtype = str(p0.dtype)
    if name == "torch":
        import torch

        from torch_impl.optim import OriginalAdam, original_schedule

        p = torch.nn.Parameter(torch.as_tensor(p0.copy()))
        opt = OriginalAdam([p], lr=lr, mom1=mom1, mom2=0.9995, eps=1e-8)
        schedule = original_schedule(opt, lr_decay)
        for g in grads:
            p.grad = torch.as_tensor(g)
            opt.step()
            schedule.step()
        return p.detach().numpy()
    import tensorflow as tf

    from tf_impl.optim import OriginalAdam, OriginalDecay

    v = tf.Variable(p0.copy(), dtype=dtype)
    opt = OriginalAdam(OriginalDecay(lr, lr_decay), mom1=mom1, mom2=0.9995, eps=1e-8)
    for g in grads:
        opt.apply([tf.constant(g)], [v])
    return v.numpy()


@pytest.mark.parametrize("name", BACKEND_PARAMS)
@pytest.mark.parametrize("mom1", [0.95, 0.0])
def test_original_adam_is_nn_adam_updates_with_epsilon_inside_the_root(name, mom1):
    """Against the NumPy reference, operation by operation, with the same correctly rounded bias
    correction (``gated_spec.training``): float64 to the last bits (the schedule's rate in double),
    float32 to an ulp or two of the update."""
    lr, lr_decay = 1e-3, 0.99
    for dtype, tol in (("float64", 1e-15), ("float32", 3e-7)):
        p0 = np.random.default_rng(1).normal(size=(5, 7)).astype(dtype)
        grads = _grads(2, p0.shape, 6, dtype)
        want, state = p0.copy(), {}
        for s, g in enumerate(grads, 1):
            want = ref.adam_updates(want, g, state, learning_rate(lr, lr_decay, s), mom1, 0.9995, 1e-8)
        got = _run_optimizer(name, p0, grads, lr, lr_decay, mom1)
        scale = np.abs(want - p0).max()  # the movement: the error is judged against it
        assert np.abs(got - want).max() <= tol * max(scale, 1.0) + 4 * np.spacing(np.abs(want).max()), (dtype, np.abs(got - want).max())
        # torch.optim.Adam's epsilon (outside the root) moves the tiny-gradient entries very differently:
        # the reference is sensitive to where the epsilon sits.
        naive = p0.astype(np.float64).copy()
        m = v = np.zeros_like(naive)
        for s, g in enumerate(grads, 1):
            m = mom1 * m + (1 - mom1) * g
            v = 0.9995 * v + 0.0005 * g.astype(np.float64) ** 2
            mhat = m / (1 - mom1**s) if mom1 else g
            naive = naive - learning_rate(lr, lr_decay, s) * mhat / (np.sqrt(v / (1 - 0.9995**s)) + 1e-8)
        assert np.abs(naive - want).max() > 100 * tol * max(scale, 1.0)


def _trainer(name: str, config: dict, weights: dict) -> tuple:
    """(backend, float64 net holding ``weights``, its OriginalAdam) for a few test steps."""
    from parity.backends import get_backend

    b = get_backend(name)
    net = b.build(config, "float64")
    b.import_weights(net, weights)
    return b, net, b.model_optimizer(net, 1e-3, 0.999, 0.95, 0.9995, 1e-8)


@BOTH
def test_the_twins_train_in_lockstep_and_the_polyak_order_is_the_originals():
    """Five steps of both twins from the same weights, batches and keep-masks, in float64: every weight,
    shadow and loss agree to float64 rounding; with ``ema="pre"`` the shadows moved towards the weights
    before each update, with ``"post"`` towards those after (the first step tells them apart)."""
    from gated_spec import one_minus_decay
    from gated_spec.model import dropout_mask_shapes
    from parity.case import random_weights
    from parity.configs import model_args

    w = random_weights(CONFIG, 0, dtype=np.float64)
    rng = np.random.default_rng(3)
    data = [((np.round(rng.uniform(-1, 1, (2, 8, 8, 3)) * 127.5) / 127.5),
             [(rng.uniform(size=s) >= 0.5).astype(np.float64) for s in dropout_mask_shapes(model_args(CONFIG), 2, 8, 8)])
            for _ in range(5)]
    result = {}
    for name in ("tf", "torch"):
        for ema in ("pre", "post"):
            b, net, opt = _trainer(name, CONFIG, w)
            losses = [b.model_train_step(net, opt, x, None, masks, ema) for x, masks in data[:1]]
            first = b.export_weights(net)
            losses += [b.model_train_step(net, opt, x, None, masks, ema) for x, masks in data[1:]]
            result[name, ema] = (losses, first, b.export_weights(net), b.model_optimizer_state(net, opt))
    def close(a: np.ndarray, b: np.ndarray, what: str) -> None:
        # A gradient entry that is a small difference of large products carries the convs' float64
        # rounding (~1e-16 of those products) in absolute terms, and Adam's moments inherit it: the
        # error is judged against the tensor's largest entries, not entry by entry.
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11 * max(np.abs(b).max(), 1e-300), err_msg=what)

    for ema in ("pre", "post"):
        (lt, _, wt, st), (lo, _, wo, so) = result["tf", ema], result["torch", ema]
        np.testing.assert_allclose(lt, lo, rtol=1e-12)
        assert sorted(wt) == sorted(wo) and sorted(st) == sorted(so)
        assert float(st["adam_t"][0]) == float(so["adam_t"][0]) == 6.0
        for k in wt:
            close(wt[k], wo[k], k)
        for k in st:
            close(st[k], so[k], k)
    d = one_minus_decay(0.9995)
    for ema, source in (("pre", w), ("post", None)):
        first = result["torch", ema][1]
        for k in ("conv2d_0/V", "dense_0/b"):
            live = w[k] if source is not None else first[k]
            np.testing.assert_allclose(first[k + "/ExponentialMovingAverage"], w[k] - (w[k] - live) * d, rtol=1e-12, atol=1e-15)


@BOTH
def test_both_twins_train_as_the_original_graph_and_its_slots_are_saved_as_variable_k():
    """The original trainer's graph (tests/tf1_original.py: train.py's loop, ``nn.adam_updates`` and
    ``ema.apply`` in one ``tf.group``), float64, no dropout, four steps: both twins with the Polyak
    update before Adam's reproduce its losses, weights, shadows and Adam state to float64 rounding;
    after Adam's, the shadows part from the graph's. The graph's slots are ``Variable`` (the counter),
    then ``Variable_{2i+1}`` (second moment) and ``Variable_{2i+2}`` (first) for parameter i in creation order."""
    import tensorflow as tf

    from parity.case import random_weights
    from tests import tf1_original

    config = {**CONFIG, "dropout_p": 0.0}
    w = random_weights(config, 5, dtype=np.float64)
    rng = np.random.default_rng(6)
    batches = [np.round(rng.uniform(-1, 1, (2, 8, 8, 3)) * 127.5) / 127.5 for _ in range(4)]
    graph = tf1_original.train_model(w, config, batches, 1e-3, 0.999, 0.95, 0.9995, 1e-8, dtype=tf.float64)
    gv = graph["variables"]
    assert float(gv["Variable"]) == 5.0
    from parity.kinds import table_for

    # the original creates its variables in call order, V, g, b per layer, hw after its block's second conv:
    # the weight table's order, so Variable_k maps to the table's rows
    assert [full[len("model/"):] for full in graph["params"]] == [r.tf1_name for r in table_for(config, shadows=False)]
    for name in ("tf", "torch"):
        for ema in ("pre", "post"):
            b, net, opt = _trainer(name, config, w)
            losses = [b.model_train_step(net, opt, x, None, None, ema) for x in batches]
            got, state = b.export_weights(net), b.model_optimizer_state(net, opt)
            np.testing.assert_allclose(losses, graph["losses"], rtol=1e-12, err_msg=f"{name} {ema}")
            shadows_part = []
            for i, full in enumerate(graph["params"]):
                k = full[len("model/"):]
                scale = np.abs(gv[full]).max()
                np.testing.assert_allclose(got[k], gv[full], rtol=1e-9, atol=1e-11 * scale, err_msg=f"{name} {ema} {k}")
                for slot, var in (("mg", f"Variable_{2 * i + 1}"), ("v", f"Variable_{2 * i + 2}")):
                    np.testing.assert_allclose(state[f"{k}_adam_{slot}"], gv[var], rtol=1e-9, atol=1e-11 * np.abs(gv[var]).max(),
                                               err_msg=f"{name} {ema} {k} {slot}")
                shadow, want = got[k + "/ExponentialMovingAverage"], gv[full + "/ExponentialMovingAverage"]
                shadows_part.append(np.abs(shadow - want).max() / max(np.abs(want).max(), 1e-300))
            if ema == "pre":
                assert max(shadows_part) < 1e-9, (name, max(shadows_part))
            else:
                assert max(shadows_part) > 1e-7, (name, max(shadows_part))


@BOTH
def test_an_original_training_checkpoint_goes_on_in_either_twin_and_back_in_the_original_graph(tmp_path):
    """The original graph trains two steps and saves (weights, shadows, Variable_k slots, t); either twin
    reads that checkpoint and trains steps 3 and 4; the torch twin's state is written back as a TF1
    checkpoint, which the original graph restores and trains step 5 from, as the twins do: the same
    weights, shadows and Adam state to float64 rounding."""
    import tensorflow as tf

    from parity.case import random_weights
    from parity.formats import read_any
    from parity.formats.tf1 import LazyCheckpoint, write_tf1
    from tests import tf1_original

    config = {**CONFIG, "dropout_p": 0.0}
    w = random_weights(config, 7, dtype=np.float64)
    rng = np.random.default_rng(8)
    batches = [np.round(rng.uniform(-1, 1, (2, 8, 8, 3)) * 127.5) / 127.5 for _ in range(5)]
    lr, decay = 1e-3, 0.999
    first = str(tmp_path / "original.ckpt-2")
    tf1_original.train_model(w, config, batches[:2], lr, decay, 0.95, 0.9995, 1e-8, dtype=tf.float64, save=first)
    loaded = read_any(first, {"model": "pixelcnn_pp"})
    assert loaded.adam is not None and float(loaded.adam["adam_t"][0]) == 3.0
    finals = {}
    for name in ("tf", "torch"):
        b, net, opt = _trainer(name, config, loaded.tensors)
        b.model_set_optimizer_state(net, opt, loaded.adam)
        for x in batches[2:4]:
            b.model_train_step(net, opt, x, None, None, "pre")
        if name == "torch":
            write_tf1(str(tmp_path / "twin.ckpt-4"), b.export_weights(net), config, b.model_optimizer_state(net, opt), dtype="float64")
        b.model_train_step(net, opt, batches[4], None, None, "pre")
        finals[name] = {**b.export_weights(net), **b.model_optimizer_state(net, opt)}
    written = LazyCheckpoint(str(tmp_path / "twin.ckpt-4"))
    assert float(written["Variable"]) == 5.0 and "model/conv2d_0/V/ExponentialMovingAverage" in written
    graph = tf1_original.train_model(None, config, batches[4:], lr * decay**4, decay, 0.95, 0.9995, 1e-8, dtype=tf.float64,
                                     restore=str(tmp_path / "twin.ckpt-4"))
    gv = graph["variables"]
    for name, got in finals.items():
        assert float(got["adam_t"][0]) == float(gv["Variable"]) == 6.0
        for i, full in enumerate(graph["params"]):
            k = full[len("model/"):]
            for mine, theirs in ((k, full), (k + "/ExponentialMovingAverage", full + "/ExponentialMovingAverage"),
                                 (k + "_adam_mg", f"Variable_{2 * i + 1}"), (k + "_adam_v", f"Variable_{2 * i + 2}")):
                np.testing.assert_allclose(got[mine], gv[theirs], rtol=1e-9, atol=1e-11 * np.abs(gv[theirs]).max(),
                                           err_msg=f"{name} {mine}")


def test_a_resynced_step_starts_from_the_state_it_is_given():
    """``check --resynced`` starts each step from a given state (weights, shadows, Adam's slots and
    counter, the schedule's position): resynced to a float32 lockstep run's own states, the run is that
    run bit for bit, and a state with the counter one step off is not. (The steps are the protocol's,
    the same for both backends; TensorFlow's state import is the one resuming a run uses, tested there.)"""
    pytest.importorskip("torch")
    from parity import protocol
    from parity.backends import get_backend
    from parity.case import TrainingCase
    from parity.harness import resync_case

    backend = get_backend("torch")
    case = TrainingCase("resync", {k: v for k, v in CONFIG.items() if k not in ("model", "polyak_decay")}, steps=2, lr_decay=0.9)
    with backend.parity_mode("cpu"):
        lockstep = protocol.run(backend, case, "float32")
        again = resync_case(case, lockstep)
        assert again.resynced and {k.split("/")[1] for k in again.arrays if k.startswith("state/")} == {"1"}
        resynced = protocol.run(backend, again, "float32")
        assert list(resynced) == list(lockstep)
        for k, v in lockstep.items():
            np.testing.assert_array_equal(resynced[k], v, err_msg=k)
        again.arrays["state/1/adam_t"] = np.array([1.0])  # the counter one step behind: step 2 differs
        off = protocol.run(backend, again, "float32")
        assert not np.array_equal(off["step_2/conv2d_0/V"], lockstep["step_2/conv2d_0/V"])
        np.testing.assert_array_equal(off["step_1/conv2d_0/V"], lockstep["step_1/conv2d_0/V"])


@BOTH
def test_a_conditional_network_trains_in_lockstep_through_train_step():
    """Per-image ``h`` goes through both twins' train_step (TrainingCase with ``h_channels``): the twins'
    float64 runs agree to 1e-9 of each tensor's scale over two steps (their float64 results differ by
    ~1e-10 of the scale at most, docs/training.md), and ``h`` is used (zeroed, the first step differs)."""
    import dataclasses

    from parity import protocol
    from parity.backends import get_backend
    from parity.case import training_cases

    case = dataclasses.replace(training_cases()[2], steps=2, arrays={})
    assert case.config["h_channels"] == 3 and case.arrays["h/1"].shape == (2, 3)
    runs = {}
    for name in ("tf", "torch"):
        backend = get_backend(name)
        with backend.parity_mode("cpu"):
            runs[name] = protocol.run(backend, case, "float64")
    assert list(runs["tf"]) == list(runs["torch"])
    for k, v in runs["tf"].items():
        np.testing.assert_allclose(runs["torch"][k], v, rtol=0, atol=1e-9 * np.abs(v).max(), err_msg=k)
    flat = dataclasses.replace(case, arrays={**case.arrays, "h/1": np.zeros_like(case.arrays["h/1"])})
    backend = get_backend("torch")
    with backend.parity_mode("cpu"):
        zeroed = protocol.run(backend, flat, "float64")
    assert not np.allclose(zeroed["step_1/loss"], runs["torch"]["step_1/loss"], rtol=1e-6)
