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


INIT_ASSIGNS = "init_assigns"  # graph collection of the init pass's assignments (init="assign")


def _init_pass(t, axes, init_scale, eps, dtype, init=True):
    """docs/spec.md's init: g and b get data-dependent initial values; returns s * (t - m).

    ``init=True``: as the original, g's and b's initialisers are computed from the init batch. A
    whole model built that way copies the preceding init graph into every later initialiser (TF's
    guard against uninitialised dependencies: 62k ops for a tiny model), so the model graph uses
    ``init="assign"``: the same values, as assignments collected in ``INIT_ASSIGNS`` and run in one
    ``Session.run`` after the ``V``s are initialised."""
    m, v = tf.nn.moments(t, axes)
    s = init_scale / tf.sqrt(v + eps)
    if init == "assign":
        g = _var("g", None, shape=s.shape, dtype=dtype, initializer=v1.zeros_initializer())
        b = _var("b", None, shape=s.shape, dtype=dtype, initializer=v1.zeros_initializer())
        v1.add_to_collection(INIT_ASSIGNS, v1.assign(g, s))
        v1.add_to_collection(INIT_ASSIGNS, v1.assign(b, -m * s))
    else:
        _var("g", None, dtype=dtype, initializer=s)
        _var("b", None, dtype=dtype, initializer=-m * s)
    return s * (t - m)


def _direction(V, init):
    return V if init == "assign" else V.initialized_value()


def dense(x, units, init_scale=1.0, *, counters, init, ema, dtype):
    with v1.variable_scope(_name("dense", counters)):
        V = _var("V", ema, shape=[int(x.shape[1]), units], dtype=dtype, initializer=v1.random_normal_initializer(0, 0.05))
        if init:
            return _init_pass(tf.matmul(x, tf.nn.l2_normalize(_direction(V, init), [0])), [0], init_scale, 1e-10, dtype, init)
        g = _var("g", ema, shape=[units], dtype=dtype)
        b = _var("b", ema, shape=[units], dtype=dtype)
        y = tf.matmul(x, V)
        return y * (g / tf.sqrt(tf.reduce_sum(tf.square(V), [0]))) + b


def conv2d(x, filters, filter_size=(3, 3), pad="SAME", init_scale=1.0, stride=(1, 1), *, counters, init, ema, dtype):
    strides = [1, *stride, 1]
    with v1.variable_scope(_name("conv2d", counters)):
        shape = [*filter_size, int(x.shape[-1]), filters]
        V = _var("V", ema, shape=shape, dtype=dtype, initializer=v1.random_normal_initializer(0, 0.05))
        if init:
            t = tf.nn.conv2d(x, tf.nn.l2_normalize(_direction(V, init), [0, 1, 2]), strides, pad)
            return _init_pass(t, [0, 1, 2], init_scale, 1e-8, dtype, init)
        g = _var("g", ema, shape=[filters], dtype=dtype)
        b = _var("b", ema, shape=[filters], dtype=dtype)
        W = tf.reshape(g, [1, 1, 1, filters]) * tf.nn.l2_normalize(V, [0, 1, 2])
        return tf.nn.bias_add(tf.nn.conv2d(x, W, strides, pad), b)


def deconv2d(x, filters, filter_size=(3, 3), pad="SAME", init_scale=1.0, stride=(1, 1), *, counters, init, ema, dtype):
    """docs/spec.md's deconv2d: V is [kh, kw, out, in], normalised per output channel."""
    H, W = int(x.shape[1]), int(x.shape[2])
    if pad == "SAME":
        size = [H * stride[0], W * stride[1]]
    else:
        size = [H * stride[0] + filter_size[0] - 1, W * stride[1] + filter_size[1] - 1]
    target = tf.stack([tf.shape(x)[0], size[0], size[1], filters])
    strides = [1, *stride, 1]
    with v1.variable_scope(_name("deconv2d", counters)):
        V = _var("V", ema, shape=[*filter_size, filters, int(x.shape[-1])], dtype=dtype,
                 initializer=v1.random_normal_initializer(0, 0.05))
        if init:
            t = tf.nn.conv2d_transpose(x, tf.nn.l2_normalize(_direction(V, init), [0, 1, 3]), target, strides, pad)
            return tf.reshape(_init_pass(t, [0, 1, 2], init_scale, 1e-8, dtype, init), [-1, *size, filters])
        g = _var("g", ema, shape=[filters], dtype=dtype)
        b = _var("b", ema, shape=[filters], dtype=dtype)
        Wt = tf.reshape(g, [1, 1, filters, 1]) * tf.nn.l2_normalize(V, [0, 1, 3])
        y = tf.nn.bias_add(tf.nn.conv2d_transpose(x, Wt, target, strides, pad), b)
        return tf.reshape(y, [-1, *size, filters])


def down_shifted_conv2d(x, filters, filter_size=(2, 3), stride=(1, 1), **kw):
    x = tf.pad(x, [[0, 0], [filter_size[0] - 1, 0], [(filter_size[1] - 1) // 2] * 2, [0, 0]])
    return conv2d(x, filters, filter_size, pad="VALID", stride=stride, **kw)


def down_right_shifted_conv2d(x, filters, filter_size=(2, 2), stride=(1, 1), **kw):
    x = tf.pad(x, [[0, 0], [filter_size[0] - 1, 0], [filter_size[1] - 1, 0], [0, 0]])
    return conv2d(x, filters, filter_size, pad="VALID", stride=stride, **kw)


def down_shifted_deconv2d(x, filters, filter_size=(2, 3), stride=(1, 1), **kw):
    y = deconv2d(x, filters, filter_size, pad="VALID", stride=stride, **kw)
    side = (filter_size[1] - 1) // 2
    return y[:, : int(y.shape[1]) - filter_size[0] + 1, side: int(y.shape[2]) - side, :]


def down_right_shifted_deconv2d(x, filters, filter_size=(2, 2), stride=(1, 1), **kw):
    y = deconv2d(x, filters, filter_size, pad="VALID", stride=stride, **kw)
    return y[:, : int(y.shape[1]) - filter_size[0] + 1, : int(y.shape[2]) - filter_size[1] + 1, :]


def nin(x, units, **kw):
    s = tf.shape(x)
    y = dense(tf.reshape(x, [-1, int(x.shape[-1])]), units, **kw)
    return tf.reshape(y, tf.concat([s[:3], [units]], 0))


CONV = {"conv2d": conv2d, "down_shifted_conv2d": down_shifted_conv2d,
        "down_right_shifted_conv2d": down_right_shifted_conv2d, "nin": nin}


def gated_resnet(x, a=None, h=None, nonlinearity="concat_elu", conv="conv2d", *, init=False, ema=None, dtype=tf.float32,
                 counters=None):
    """docs/spec.md's gated_resnet (no dropout: a checkpoint does not depend on it); ``counters``: the
    model's, where the block is part of one."""
    counters = {} if counters is None else counters
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


def down_shift(x):
    return tf.concat([tf.zeros_like(x[:, :1]), x[:, :-1]], axis=1)


def right_shift(x):
    return tf.concat([tf.zeros_like(x[:, :, :1]), x[:, :, :-1]], axis=2)


def pixelcnn_pp(x, h=None, *, nr_resnet=5, nr_filters=160, nr_logistic_mix=10, nonlinearity="concat_elu", init=False,
                ema=None, dtype=tf.float32):
    """docs/model_spec.md's network (``pxpp_spec``) with one counter dictionary for the whole model
    (no dropout: a checkpoint does not depend on it)."""
    counters: dict[str, int] = {}
    kw = dict(counters=counters, init=init, ema=ema, dtype=dtype)
    F_, R = nr_filters, nr_resnet

    def block(t, conv, a=None):
        return gated_resnet(t, a, h, nonlinearity, conv, counters=counters, init=init, ema=ema, dtype=dtype)

    xp = tf.concat([x, tf.ones_like(x[..., :1])], axis=3)
    U = [down_shift(down_shifted_conv2d(xp, F_, (2, 3), **kw))]
    L = [down_shift(down_shifted_conv2d(xp, F_, (1, 3), **kw)) + right_shift(down_right_shifted_conv2d(xp, F_, (2, 1), **kw))]
    for res in range(3):
        for _ in range(R):
            U.append(block(U[-1], "down_shifted_conv2d"))
            L.append(block(L[-1], "down_right_shifted_conv2d", U[-1]))
        if res < 2:
            U.append(down_shifted_conv2d(U[-1], F_, stride=(2, 2), **kw))
            L.append(down_right_shifted_conv2d(L[-1], F_, stride=(2, 2), **kw))
    u, ul = U.pop(), L.pop()
    for res in range(3):
        for _ in range(R if res == 0 else R + 1):
            u = block(u, "down_shifted_conv2d", U.pop())
            ul = block(ul, "down_right_shifted_conv2d", tf.concat([u, L.pop()], 3))
        if res < 2:
            u = down_shifted_deconv2d(u, F_, stride=(2, 2), **kw)
            ul = down_right_shifted_deconv2d(ul, F_, stride=(2, 2), **kw)
    return nin(tf.nn.elu(ul), 10 * nr_logistic_mix, **kw)


def causal_attention(key, mixin, query, downsample, H, W):
    """docs/pixelsnail.md's attention in graph ops on H x W images: the strictly lower-triangular mask
    built as a constant, pooled as ``-max_pool(-mask)`` with the keys' ``max_pool``."""
    K = int(key.shape[-1])
    key, mixin, query = (tf.reshape(t, [-1, H, W, int(t.shape[-1])]) for t in (key, mixin, query))
    n = H * W
    mask = tf.constant(np.tril(np.ones((n, n), np.float32), -1))
    if downsample > 1:
        pool = [1, downsample, downsample, 1]
        key, mixin = tf.nn.max_pool2d(key, pool, pool, "SAME"), tf.nn.max_pool2d(mixin, pool, pool, "SAME")
        mask = -tf.nn.max_pool2d(-tf.reshape(mask, [n, H, W, 1]), pool, pool, "SAME")
    mask = tf.reshape(mask, [1, n, -1])
    C = int(mixin.shape[-1])
    dot = tf.matmul(tf.reshape(query, [-1, n, K]), tf.reshape(key, [-1, int(key.shape[1]) * int(key.shape[2]), K]),
                    transpose_b=True) - (1.0 - mask) * 1e10
    dot = dot - tf.reduce_max(dot, axis=-1, keepdims=True)
    e = tf.exp(dot / np.sqrt(K).astype(np.float32)) * mask
    probs = e / (tf.reduce_sum(e, axis=-1, keepdims=True) + 1e-6)
    return tf.reshape(tf.matmul(probs, tf.reshape(mixin, [-1, int(mixin.shape[1]) * int(mixin.shape[2]), C])), [-1, H, W, C])


def pixelsnail(x, h=None, *, spec="h12_noup_smallkey", nr_resnet=4, nr_filters=256, nr_logistic_mix=10, attn_rep=12,
               nonlinearity="elu", init=False, ema=None, dtype=tf.float32):
    """docs/pixelsnail.md's networks: ``_base_noup_smallkey_spec`` (``spec`` one of its partials) or
    ``model_spec``, one counter dictionary for the whole model (no dropout)."""
    counters: dict[str, int] = {}
    kw = dict(counters=counters, init=init, ema=ema, dtype=dtype)
    F_, R, two = nr_filters, nr_resnet, spec == "model_spec"

    def block(t, conv, a=None):
        return gated_resnet(t, a, h, nonlinearity, conv, counters=counters, init=init, ema=ema, dtype=dtype)

    H, W = int(x.shape[1]), int(x.shape[2])
    background = tf.concat([((tf.range(H, dtype=dtype) - H / 2) / H)[None, :, None, None] + 0.0 * x,
                            ((tf.range(W, dtype=dtype) - W / 2) / W)[None, None, :, None] + 0.0 * x], axis=3)
    xp = tf.concat([x, tf.ones_like(x[..., :1])], axis=3)
    u = down_shift(down_shifted_conv2d(xp, F_, (2, 3), **kw)) if two else None
    ul = down_shift(down_shifted_conv2d(xp, F_, (1, 3), **kw)) + right_shift(down_right_shifted_conv2d(xp, F_, (2, 1), **kw))
    n_key = F_ if two else 16
    for _ in range(attn_rep):
        for _ in range(R):
            if two:
                u = block(u, "down_shifted_conv2d")
            ul = block(ul, "down_right_shifted_conv2d", u)
        raw = nin(block(tf.concat([x, ul, background], axis=3), "nin"), 2 * F_ if two else F_ // 2 + n_key, **kw)
        query = nin(block(tf.concat([ul, background], axis=3), "nin"), n_key, **kw)
        mixed = causal_attention(raw[..., :n_key], raw[..., n_key:], query, 2 if spec == "h12_pool2_smallkey" else 1, H, W)
        ul = block(ul, "nin", mixed)
    return nin(tf.nn.elu(ul), 10 * nr_logistic_mix, **kw)


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


def write_model_checkpoint(prefix: str, config: Mapping[str, Any], init_batch: Mapping[str, np.ndarray],
                           test_batch: Mapping[str, np.ndarray], steps: int = 2, seed: int = 0, decay: float = 0.9995
                           ) -> dict[str, np.ndarray]:
    """:func:`write_checkpoint` for the whole network: init pass, ``steps`` fake training steps with
    the EMA update, the trainer's Adam state, a Saver checkpoint; returns the graph's float32 ``out``
    and ``ema_out`` on ``test_batch``."""
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    args = {k: config[k] for k in ("nr_resnet", "nr_filters", "nr_logistic_mix", "nonlinearity", "attn_rep") if k in config}
    network = pixelcnn_pp
    if config.get("model", "pixelcnn_pp") != "pixelcnn_pp":  # a PixelSNAIL spec
        network, args["spec"] = pixelsnail, config["model"]
    with graph.as_default():
        v1.set_random_seed(seed)
        ph = {k: v1.placeholder(tf.float32, [None, *v.shape[1:]], name=f"{k}_in") for k, v in init_batch.items()}
        model = v1.make_template("model", network)
        model(ph["x"], ph.get("h"), init="assign", **args)
        init_pass = v1.get_collection(INIT_ASSIGNS)
        params = v1.trainable_variables()
        ema = v1.train.ExponentialMovingAverage(decay=decay)
        maintain = ema.apply(params)
        out = model(ph["x"], ph.get("h"), **args)
        ema_out = model(ph["x"], ph.get("h"), ema=ema, **args)
        moves = [v1.placeholder(tf.float32, p.shape) for p in params]  # one fake training step, in one run
        step = [v1.assign_add(p, m) for p, m in zip(params, moves)]
        slots = [v1.Variable(tf.zeros(p.shape), False) for p in params[:3]]  # saved as Variable, Variable_1, ...
        slots += [v1.Variable(tf.zeros(p.shape), name=p.op.name + suffix) for p in params for suffix in ("_adam_mg", "_adam_v")]
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run([p.initializer for p in params])  # V, hw random; g, b zeros until the init pass
            sess.run(init_pass, {ph[k]: v for k, v in init_batch.items()})
            _initialize(sess, params, ema, {}, skip=params)  # the shadows start as copies, then the slots
            for _ in range(steps):
                sess.run(step, {m: rng.normal(0.0, 0.01, m.shape).astype(np.float32) for m in moves})
                sess.run(maintain)
            feed = {ph[k]: v for k, v in test_batch.items()}
            result = dict(zip(("out", "ema_out"), sess.run([out, ema_out], feed)))
            saver.save(sess, prefix, write_meta_graph=False)
            del slots
    return result


# -- the original trainer: loss, nn.adam_updates and the EMA in one tf.group -------------------------------
def mixture_loss(x: tf.Tensor, l: tf.Tensor) -> tf.Tensor:
    """docs/model_spec.md's ``discretized_mix_logistic_loss`` (summed over the batch), in graph ops."""
    M = l.shape[-1] // 10
    logit_probs = l[..., :M]
    rest = tf.reshape(l[..., M:], [-1, *l.shape[1:3], 3, 3 * M])
    means, log_scales, coeffs = rest[..., :M], tf.maximum(rest[..., M:2 * M], -7.0), tf.tanh(rest[..., 2 * M:])
    xs = tf.expand_dims(x, -1) + tf.zeros_like(means)
    m2 = means[..., 1:2, :] + coeffs[..., 0:1, :] * xs[..., 0:1, :]
    m3 = means[..., 2:3, :] + coeffs[..., 1:2, :] * xs[..., 0:1, :] + coeffs[..., 2:3, :] * xs[..., 1:2, :]
    means = tf.concat([means[..., 0:1, :], m2, m3], axis=3)
    centered = xs - means
    inv = tf.exp(-log_scales)
    plus, minus = inv * (centered + 1.0 / 255.0), inv * (centered - 1.0 / 255.0)
    cdf_delta = tf.sigmoid(plus) - tf.sigmoid(minus)
    log_cdf_plus = plus - tf.nn.softplus(plus)
    log_one_minus_cdf_min = -tf.nn.softplus(minus)
    mid = inv * centered
    log_pdf_mid = mid - log_scales - 2.0 * tf.nn.softplus(mid)
    inner = tf.where(cdf_delta > 1e-5, tf.math.log(tf.maximum(cdf_delta, 1e-12)), log_pdf_mid - np.log(127.5))
    log_probs = tf.where(xs < -0.999, log_cdf_plus, tf.where(xs > 0.999, log_one_minus_cdf_min, inner))
    log_probs = tf.reduce_sum(log_probs, 3) + tf.nn.log_softmax(logit_probs)
    return -tf.reduce_sum(tf.reduce_logsumexp(log_probs, -1))


def adam_updates(params: list, grads: list, lr: Any, mom1: float, mom2: float, eps: float) -> Any:
    """The original's ``nn.adam_updates``, in its own graph ops and variable creation order: the
    counter ``t`` (from 1), then per parameter its second moment ``mg`` and first moment ``v`` (each
    ``tf.Variable(value, name)``: the name lands in ``trainable``, so they save as ``Variable_k``);
    the counter's increment ordered after the updates (see below)."""
    updates = []
    t = v1.Variable(1.0, "adam_t")
    for p, g in zip(params, grads):
        mg = v1.Variable(tf.zeros(p.shape, p.dtype.base_dtype), p.name + "_adam_mg")
        if mom1 > 0:
            v = v1.Variable(tf.zeros(p.shape, p.dtype.base_dtype), p.name + "_adam_v")
            v_t = mom1 * v + (1.0 - mom1) * g
            v_hat = v_t / (1.0 - tf.pow(tf.constant(mom1, p.dtype.base_dtype), tf.cast(t, p.dtype.base_dtype)))
            updates.append(v.assign(v_t))
        else:
            v_hat = g
        mg_t = mom2 * mg + (1.0 - mom2) * tf.square(g)
        mg_hat = mg_t / (1.0 - tf.pow(tf.constant(mom2, p.dtype.base_dtype), tf.cast(t, p.dtype.base_dtype)))
        g_t = v_hat / tf.sqrt(mg_hat + eps)
        updates.append(mg.assign(mg_t))
        updates.append(p.assign(p - tf.cast(lr, p.dtype.base_dtype) * g_t))
    # The original appends t.assign_add(1) to the same group: nothing orders it after the reads of t
    # above, and with a RefVariable some updates then see t + 1 (measured here with grappler off: the
    # first step's bias correction of some layers at t = 2). The increment after the updates is the
    # order measured on the original graph (t = 1 on the first step).
    with tf.control_dependencies(updates):
        updates.append(t.assign_add(1))
    return tf.group(*updates)


def train_model(weights: Mapping[str, np.ndarray] | None, config: Mapping[str, Any], batches: list[np.ndarray], lr: float,
                lr_decay: float, mom1: float, mom2: float, eps: float, decay: float = 0.9995,
                dtype: Any = tf.float32, restore: str | None = None, save: str | None = None) -> dict[str, Any]:
    """train.py's loop on the network without dropout, from initialised ``weights`` (canonical names,
    shadows started as copies of them): per step ``lr *= lr_decay`` in Python, fed as a placeholder;
    the loss and its gradients; the EMA update; ``nn.adam_updates``.

    The original runs the last two and the gradients in one ``sess.run(tf.group(...))`` with no control
    dependency: with the RefVariables of a TF1 graph the executor may run a weight's update before
    another op has read that weight. Here each stage is its own ``run``: the gradients of the weights
    before the step, the shadows from them too (the order measured on the original graph), then Adam. Returns each step's loss, the parameters' names in creation order, and every variable
    by name (``model/...``, the shadows, the slots as ``Variable``, ``Variable_1``, ...). ``restore``: start
    from that Saver checkpoint instead of ``weights`` (``lr`` then is the rate before the first step
    here); ``save``: a Saver checkpoint of every variable at the end."""
    np_dtype = dtype.as_numpy_dtype
    args = {k: config[k] for k in ("nr_resnet", "nr_filters", "nr_logistic_mix", "nonlinearity") if k in config}
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(dtype, [None, *batches[0].shape[1:]])
        tf_lr = v1.placeholder(tf.float64, [])
        model = v1.make_template("model", pixelcnn_pp)
        loss = mixture_loss(x, model(x, dtype=dtype, **args))
        params = v1.trainable_variables()
        grads = v1.gradients(loss, params)
        ema = v1.train.ExponentialMovingAverage(decay=decay)
        maintain = ema.apply(params)
        fed = [v1.placeholder(dtype, p.shape) for p in params]
        adam = adam_updates(params, fed, tf_lr, mom1, mom2, eps)
        session_config = v1.ConfigProto()
        session_config.graph_options.rewrite_options.disable_meta_optimizer = True  # minutes of grappler otherwise
        with v1.Session(graph=graph, config=session_config) as sess:
            _initialize(sess, params, ema, {})
            saver = v1.train.Saver()
            if restore:
                saver.restore(sess, restore)
            else:
                for p in params:
                    p.load(weights[p.op.name[len("model/"):]].astype(np_dtype), sess)
                    ema.average(p).load(weights[p.op.name[len("model/"):]].astype(np_dtype), sess)
            losses = []
            for b in batches:
                lr *= lr_decay
                value, g = sess.run([loss, grads], {x: b.astype(np_dtype)})
                sess.run(maintain)
                sess.run(adam, {tf_lr: lr, **dict(zip(fed, g))})
                losses.append(float(value))
            if save:
                saver.save(sess, save, write_meta_graph=False)
            return {"losses": losses, "params": [p.op.name for p in params],
                    "variables": {v.op.name: sess.run(v) for v in v1.global_variables()}}
