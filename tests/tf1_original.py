"""The original block as a TensorFlow 1 graph, written from docs/spec.md, and a checkpoint writer that
saves it the way the original trainer does.

``tf.compat.v1`` graph mode: ``make_template('model', ...)``, ``variable_scope`` + ``get_variable`` with
the original names and one counter per layer kind, the data-dependent init as variable initialisers
(``g``'s initial value is computed from the init batch, from ``V.initialized_value()``), a
``tf.compat.v1.train.ExponentialMovingAverage`` created after the init pass, the original trainer's
hand-written Adam state (unnamed ``Variable_k``, ``<var>_adam_mg``, ``<var>_adam_v``, ``adam_t``), and a
``tf.compat.v1.train.Saver``. Nothing here imports ``tf_impl``: it is an independent reference.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def _name(kind: str, counters: dict[str, int]) -> str:
    k = counters.get(kind, 0)
    counters[kind] = k + 1
    return f"{kind}_{k}"


def _var(name: str, ema: Any, **kwargs: Any) -> Any:
    v = v1.get_variable(name, use_resource=False, **kwargs)  # TF1's RefVariable, as the original had
    return ema.average(v) if ema is not None else v


def concat_elu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.elu(tf.concat([x, -x], axis=3))


NONLINEARITY: dict[str, Callable] = {"concat_elu": concat_elu, "elu": tf.nn.elu, "relu": tf.nn.relu}


def _init_pass(t, axes, init_scale, eps, dtype):
    """docs/spec.md's init: g and b get data-dependent initial values; returns s * (t - m)."""
    m, v = tf.nn.moments(t, axes)
    s = init_scale / tf.sqrt(v + eps)
    _var("g", None, dtype=dtype, initializer=s)
    _var("b", None, dtype=dtype, initializer=-m * s)
    return s * (t - m)


def dense(x, units, init_scale=1.0, *, counters, init, ema, dtype):
    with v1.variable_scope(_name("dense", counters)):
        V = _var("V", ema, shape=[int(x.shape[1]), units], dtype=dtype, initializer=v1.random_normal_initializer(0, 0.05))
        if init:
            return _init_pass(tf.matmul(x, tf.nn.l2_normalize(V.initialized_value(), [0])), [0], init_scale, 1e-10, dtype)
        g = _var("g", ema, shape=[units], dtype=dtype)
        b = _var("b", ema, shape=[units], dtype=dtype)
        y = tf.matmul(x, V)
        return y * (g / tf.sqrt(tf.reduce_sum(tf.square(V), [0]))) + b


def conv2d(x, filters, filter_size=(3, 3), pad="SAME", init_scale=1.0, *, counters, init, ema, dtype):
    with v1.variable_scope(_name("conv2d", counters)):
        shape = [*filter_size, int(x.shape[-1]), filters]
        V = _var("V", ema, shape=shape, dtype=dtype, initializer=v1.random_normal_initializer(0, 0.05))
        if init:
            t = tf.nn.conv2d(x, tf.nn.l2_normalize(V.initialized_value(), [0, 1, 2]), [1, 1, 1, 1], pad)
            return _init_pass(t, [0, 1, 2], init_scale, 1e-8, dtype)
        g = _var("g", ema, shape=[filters], dtype=dtype)
        b = _var("b", ema, shape=[filters], dtype=dtype)
        W = tf.reshape(g, [1, 1, 1, filters]) * tf.nn.l2_normalize(V, [0, 1, 2])
        return tf.nn.bias_add(tf.nn.conv2d(x, W, [1, 1, 1, 1], pad), b)


def down_shifted_conv2d(x, filters, filter_size=(2, 3), **kw):
    x = tf.pad(x, [[0, 0], [filter_size[0] - 1, 0], [(filter_size[1] - 1) // 2] * 2, [0, 0]])
    return conv2d(x, filters, filter_size, pad="VALID", **kw)


def down_right_shifted_conv2d(x, filters, filter_size=(2, 2), **kw):
    x = tf.pad(x, [[0, 0], [filter_size[0] - 1, 0], [filter_size[1] - 1, 0], [0, 0]])
    return conv2d(x, filters, filter_size, pad="VALID", **kw)


def nin(x, units, **kw):
    s = tf.shape(x)
    y = dense(tf.reshape(x, [-1, int(x.shape[-1])]), units, **kw)
    return tf.reshape(y, tf.concat([s[:3], [units]], 0))


CONV = {"conv2d": conv2d, "down_shifted_conv2d": down_shifted_conv2d,
        "down_right_shifted_conv2d": down_right_shifted_conv2d, "nin": nin}


def gated_resnet(x, a=None, h=None, nonlinearity="concat_elu", conv="conv2d", *, init=False, ema=None, dtype=tf.float32):
    """docs/spec.md's gated_resnet (no dropout: a checkpoint does not depend on it)."""
    counters: dict[str, int] = {}
    kw = dict(counters=counters, init=init, ema=ema, dtype=dtype)
    nl, cv = NONLINEARITY[nonlinearity], CONV[conv]
    F_ = int(x.shape[-1])
    c1 = cv(nl(x), F_, **kw)
    if a is not None:
        c1 += nin(nl(a), F_, **kw)
    c1 = nl(c1)
    c2 = cv(c1, 2 * F_, init_scale=0.1, **kw)
    if h is not None:
        with v1.variable_scope(_name("conditional_weights", counters)):
            hw = _var("hw", ema, shape=[int(h.shape[-1]), 2 * F_], dtype=dtype,
                      initializer=v1.random_normal_initializer(0, 0.05))
        c2 += tf.reshape(tf.matmul(h, hw), [-1, 1, 1, 2 * F_])
    value, gate = tf.split(c2, 2, 3)
    return x + value * tf.nn.sigmoid(gate)


def _initialize(sess: Any, params: list, ema: Any, feed: Mapping, skip: list = ()) -> None:
    """``global_variables_initializer`` in dependency order: the directions (``V``, ``hw``), then the
    data-dependent ``g`` and ``b`` (from ``V.initialized_value()``), then the shadows, then the rest.
    (With TF2's control flow the one-shot initializer can read ``g`` before it is set.)"""
    done = set(skip)
    phases = [[p for p in params if p.op.name.endswith(("/V", "/hw"))], [p for p in params if p.op.name[-1] in "gb"],
              [ema.average(p) for p in params]]
    for phase in phases:
        sess.run([v.initializer for v in phase if v not in done], feed)
        done.update(phase)
    sess.run([v.initializer for v in v1.global_variables() if v not in done])


def write_checkpoint(
    prefix: str, config: Mapping[str, Any], init_batch: Mapping[str, np.ndarray], test_batch: Mapping[str, np.ndarray],
    steps: int = 3, seed: int = 0, decay: float = 0.9995,
) -> dict[str, np.ndarray]:
    """Build the original graph, run its init pass on ``init_batch``, take ``steps`` fake training
    steps (random moves of every weight, each followed by the EMA update), save a checkpoint.

    Returns the graph's own float32 outputs on ``test_batch``: ``out`` (live weights) and ``ema_out``
    (averaged weights).
    """
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        ph = {k: v1.placeholder(tf.float32, [None, *v.shape[1:]], name=f"{k}_in") for k, v in init_batch.items()}
        model = v1.make_template("model", gated_resnet)
        args = dict(nonlinearity=config["nonlinearity"], conv=config["conv"])
        model(ph["x"], ph.get("a"), ph.get("h"), init=True, **args)
        params = v1.trainable_variables()
        ema = v1.train.ExponentialMovingAverage(decay=decay)
        maintain = ema.apply(params)
        out = model(ph["x"], ph.get("a"), ph.get("h"), **args)
        ema_out = model(ph["x"], ph.get("a"), ph.get("h"), ema=ema, **args)
        # The original trainer's Adam state: tf.Variable(value, name) passes the name as `trainable`.
        adam_t = v1.Variable(1.0, name="adam_t")
        slots = [v1.Variable(tf.zeros(p.shape), False) for p in params]  # saved as Variable, Variable_1, ...
        slots += [v1.Variable(tf.zeros(p.shape), name=p.op.name + "_adam_mg") for p in params[:2]]
        slots += [v1.Variable(tf.zeros(p.shape), name=p.op.name + "_adam_v") for p in params[:2]]
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            _initialize(sess, params, ema, {ph[k]: v for k, v in init_batch.items()})
            result = {}
            for _ in range(steps):
                for p in params:
                    p.load(sess.run(p) + rng.normal(0.0, 0.02, p.shape).astype(np.float32), sess)
                sess.run(maintain)
            adam_t.load(float(steps + 1), sess)
            feed = {ph[k]: v for k, v in test_batch.items()}
            result["out"], result["ema_out"] = sess.run([out, ema_out], feed)
            saver.save(sess, prefix, write_meta_graph=False)
            del slots
    return result


def run_float64(variables: Mapping[str, np.ndarray], config: Mapping[str, Any],
                test_batch: Mapping[str, np.ndarray], init_batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same graph in float64 from the checkpoint's values: the float64 reference for the bound.

    ``init/<name>``: the init pass in float64 from the checkpoint's ``V`` (the init pass never changes
    ``V``; the fake training steps did, so this is the float64 twin only of a graph whose ``V`` were
    the checkpoint's: use it with :func:`init_float32`). ``out`` / ``ema_out``: forward passes.
    """
    return _run(variables, config, test_batch, init_batch, tf.float64)


def init_float32(variables: Mapping[str, np.ndarray], config: Mapping[str, Any],
                 test_batch: Mapping[str, np.ndarray], init_batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float32 graph's init pass started from the checkpoint's ``V`` (and forward passes)."""
    return _run(variables, config, test_batch, init_batch, tf.float32)


def _run(variables, config, test_batch, init_batch, dtype) -> dict[str, np.ndarray]:
    graph = tf.Graph()
    np_dtype = dtype.as_numpy_dtype
    with graph.as_default():
        ph = {k: v1.placeholder(dtype, [None, *v.shape[1:]]) for k, v in init_batch.items()}
        model = v1.make_template("model", gated_resnet)
        args = dict(nonlinearity=config["nonlinearity"], conv=config["conv"], dtype=dtype)
        model(ph["x"], ph.get("a"), ph.get("h"), init=True, **args)
        params = v1.trainable_variables()
        ema = v1.train.ExponentialMovingAverage(decay=0.9995)
        ema.apply(params)
        out = model(ph["x"], ph.get("a"), ph.get("h"), **args)
        ema_out = model(ph["x"], ph.get("a"), ph.get("h"), ema=ema, **args)
        with v1.Session(graph=graph) as sess:
            # The init pass from the checkpoint's V (and hw): load those, then run g's and b's initialisers.
            directions = [p for p in params if p.op.name.endswith(("/V", "/hw"))]
            sess.run([p.initializer for p in directions])
            for p in directions:
                p.load(variables[p.op.name].astype(np_dtype), sess)
            feed = {ph[k]: v.astype(np_dtype) for k, v in init_batch.items()}
            _initialize(sess, params, ema, feed, skip=directions)
            result = {f"init/{p.op.name[len('model/'):]}": sess.run(p) for p in params if p.op.name[-1] in "gb"}
            for var in v1.global_variables():
                var.load(variables[var.op.name].astype(np_dtype), sess)
            feed = {ph[k]: v.astype(np_dtype) for k, v in test_batch.items()}
            result["out"], result["ema_out"] = sess.run([out, ema_out], feed)
    return result
