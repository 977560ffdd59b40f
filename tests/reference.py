"""A hand-written NumPy float64 reference of docs/spec.md, NHWC, weights in the original TF layout.

Written from the formulas, not from either implementation: convolutions are sums of shifted
matrix products over the kernel taps; the transposed conv scatters each input pixel.
"""

from __future__ import annotations

import numpy as np


def elu(x):
    return np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1.0)


def concat_elu(x):
    return elu(np.concatenate([x, -x], axis=-1))


NONLIN = {"concat_elu": concat_elu, "elu": elu, "relu": lambda x: np.maximum(x, 0.0), None: lambda x: x}


def l2n(v, axes):
    return v / np.sqrt(np.maximum(np.sum(v * v, axis=axes, keepdims=True), 1e-12))


def sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + exp(-x)) without overflow


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def conv2d_raw(x, W, stride=(1, 1), pad="SAME"):
    """x [B, H, W, Cin], W [kh, kw, Cin, Cout]."""
    kh, kw = W.shape[:2]
    sh, sw = stride
    if pad == "SAME":
        (t, b), (l, r) = same_pads(x.shape[1], kh, sh), same_pads(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    Ho = (x.shape[1] - kh) // sh + 1
    Wo = (x.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], Ho, Wo, W.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + sh * (Ho - 1) + 1 : sh, j : j + sw * (Wo - 1) + 1 : sw, :]
            out += patch @ W[i, j]
    return out


def deconv2d_raw(x, W, target, stride=(1, 1), pad="SAME"):
    """x [B, H, W, Cin], W [kh, kw, Cout, Cin]; TF's conv2d_transpose with output size ``target``."""
    kh, kw = W.shape[:2]
    sh, sw = stride
    B, H, Wd, _ = x.shape
    full = np.zeros((B, (H - 1) * sh + kh, (Wd - 1) * sw + kw, W.shape[2]))
    for i in range(kh):
        for j in range(kw):
            full[:, i : i + sh * (H - 1) + 1 : sh, j : j + sw * (Wd - 1) + 1 : sw, :] += x @ W[i, j].T
    Ht, Wt = target
    top = same_pads(Ht, kh, sh)[0] if pad == "SAME" else 0
    left = same_pads(Wt, kw, sw)[0] if pad == "SAME" else 0
    out = np.zeros((B, Ht, Wt, W.shape[2]))
    src = full[:, top : top + Ht, left : left + Wt, :]
    out[:, : src.shape[1], : src.shape[2], :] = src
    return out


def deconv_target(H, W, k, s, pad):
    return (H * s[0], W * s[1]) if pad == "SAME" else (H * s[0] + k[0] - 1, W * s[1] + k[1] - 1)


# -- layer forwards: w = {"V", "g", "b"} ---------------------------------------------------------
def dense(x, w):
    V = w["V"]
    return (x @ V) * (w["g"] / np.sqrt(np.sum(V * V, axis=0))) + w["b"]


def nin(x, w):
    s = x.shape
    return dense(x.reshape(-1, s[-1]), w).reshape(*s[:-1], -1)


def conv2d(x, w, stride=(1, 1), pad="SAME"):
    return conv2d_raw(x, w["g"] * l2n(w["V"], (0, 1, 2)), stride, pad) + w["b"]


def deconv2d(x, w, stride=(1, 1), pad="SAME"):
    W = w["g"][None, None, :, None] * l2n(w["V"], (0, 1, 3))
    target = deconv_target(x.shape[1], x.shape[2], W.shape[:2], stride, pad)
    return deconv2d_raw(x, W, target, stride, pad) + w["b"]


def down_shifted_pad(x, k):
    kh, kw = k
    return np.pad(x, ((0, 0), (kh - 1, 0), ((kw - 1) // 2, (kw - 1) // 2), (0, 0)))


def down_right_shifted_pad(x, k):
    kh, kw = k
    return np.pad(x, ((0, 0), (kh - 1, 0), (kw - 1, 0), (0, 0)))


def down_shifted_conv2d(x, w, stride=(1, 1)):
    return conv2d(down_shifted_pad(x, w["V"].shape[:2]), w, stride, "VALID")


def down_right_shifted_conv2d(x, w, stride=(1, 1)):
    return conv2d(down_right_shifted_pad(x, w["V"].shape[:2]), w, stride, "VALID")


def crop_down_shifted(y, k):
    kh, kw = k
    side = (kw - 1) // 2
    return y[:, : y.shape[1] - kh + 1, side : y.shape[2] - side, :]


def crop_down_right_shifted(y, k):
    kh, kw = k
    return y[:, : y.shape[1] - kh + 1, : y.shape[2] - kw + 1, :]


def down_shifted_deconv2d(x, w, stride=(1, 1)):
    return crop_down_shifted(deconv2d(x, w, stride, "VALID"), w["V"].shape[:2])


def down_right_shifted_deconv2d(x, w, stride=(1, 1)):
    return crop_down_right_shifted(deconv2d(x, w, stride, "VALID"), w["V"].shape[:2])


# -- data-dependent init: returns (output, g, b) ---------------------------------------------------
def init_normalise(t, init_scale, eps):
    axes = tuple(range(t.ndim - 1))
    m = t.mean(axis=axes)
    v = ((t - m) ** 2).mean(axis=axes)  # biased
    s = init_scale / np.sqrt(v + eps)
    return s * (t - m), s, -m * s


def dense_init(x, V, init_scale=1.0):
    return init_normalise(x @ l2n(V, (0,)), init_scale, 1e-10)


def nin_init(x, V, init_scale=1.0):
    s = x.shape
    out, g, b = dense_init(x.reshape(-1, s[-1]), V, init_scale)
    return out.reshape(*s[:-1], -1), g, b


def conv2d_init(x, V, stride=(1, 1), pad="SAME", init_scale=1.0):
    return init_normalise(conv2d_raw(x, l2n(V, (0, 1, 2)), stride, pad), init_scale, 1e-8)


def deconv2d_init(x, V, stride=(1, 1), pad="SAME", init_scale=1.0):
    target = deconv_target(x.shape[1], x.shape[2], V.shape[:2], stride, pad)
    return init_normalise(deconv2d_raw(x, l2n(V, (0, 1, 3)), target, stride, pad), init_scale, 1e-8)


# -- the block -------------------------------------------------------------------------------------
CONV_FORWARD = {
    "conv2d": conv2d,
    "down_shifted_conv2d": down_shifted_conv2d,
    "down_right_shifted_conv2d": down_right_shifted_conv2d,
    "nin": nin,
}


def _conv_init(kind, x, V, init_scale):
    if kind == "nin":
        return nin_init(x, V, init_scale)
    if kind == "down_shifted_conv2d":
        return conv2d_init(down_shifted_pad(x, V.shape[:2]), V, pad="VALID", init_scale=init_scale)
    if kind == "down_right_shifted_conv2d":
        return conv2d_init(down_right_shifted_pad(x, V.shape[:2]), V, pad="VALID", init_scale=init_scale)
    return conv2d_init(x, V, init_scale=init_scale)


def gated_resnet(x, weights, conv="conv2d", nonlinearity="concat_elu", a=None, h=None, mask=None, p=0.0, init=False):
    """The block with canonical ``weights`` (TF1 names); with ``init`` returns (out, {name: (g, b)})."""
    nl = NONLIN[nonlinearity]
    kind = "dense" if conv == "nin" else "conv2d"
    names = [f"{kind}_0"]
    if a is not None:
        names.append("dense_0" if kind == "conv2d" else "dense_1")
    names.append(f"{kind}_1" if kind == "conv2d" else f"dense_{len(names)}")
    w = {n: {leaf: weights.get(f"{n}/{leaf}") for leaf in "Vgb"} for n in names}
    new = {}
    if init:
        c1, *new[names[0]] = _conv_init(conv, nl(x), w[names[0]]["V"], 1.0)
    else:
        c1 = CONV_FORWARD[conv](nl(x), w[names[0]])
    if a is not None:
        if init:
            skip, *new[names[1]] = nin_init(nl(a), w[names[1]]["V"])
        else:
            skip = nin(nl(a), w[names[1]])
        c1 = c1 + skip
    c1 = nl(c1)
    if mask is not None:
        c1 = c1 * (1.0 / (1.0 - p)) * mask
    if init:
        c2, *new[names[-1]] = _conv_init(conv, c1, w[names[-1]]["V"], 0.1)
    else:
        c2 = CONV_FORWARD[conv](c1, w[names[-1]])
    if h is not None:
        c2 = c2 + (h @ weights["conditional_weights_0/hw"])[:, None, None, :]
    F_ = x.shape[-1]
    out = x + c2[..., :F_] * sigmoid(c2[..., F_:])
    return (out, new) if init else out


# -- PixelCNN++ (docs/model_spec.md) -----------------------------------------------------------------
def down_shift(x):
    return np.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))


def right_shift(x):
    return np.pad(x[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0)))


class _Names:
    """The original's counters: one per kind, names in call order."""

    def __init__(self):
        self.k = {}

    def __call__(self, kind):
        n = self.k.get(kind, 0)
        self.k[kind] = n + 1
        return f"{kind}_{n}"


def _layer(kind, x, w, name, stride, init, new):
    """A shifted conv / deconv or nin of the model; with ``init``, initialises (records g, b in ``new``)."""
    leaf = {k: w.get(f"{name}/{k}") for k in "Vgb"}
    if not init:
        if kind == "nin":
            return nin(x, leaf)
        fn = {"down_shifted_conv2d": down_shifted_conv2d, "down_right_shifted_conv2d": down_right_shifted_conv2d,
              "down_shifted_deconv2d": down_shifted_deconv2d, "down_right_shifted_deconv2d": down_right_shifted_deconv2d}[kind]
        return fn(x, leaf, stride)
    V = leaf["V"]
    k = V.shape[:2]
    if kind == "nin":
        out, g, b = nin_init(x, V)
    elif kind == "down_shifted_conv2d":
        out, g, b = conv2d_init(down_shifted_pad(x, k), V, stride, "VALID")
    elif kind == "down_right_shifted_conv2d":
        out, g, b = conv2d_init(down_right_shifted_pad(x, k), V, stride, "VALID")
    elif kind == "down_shifted_deconv2d":
        out, g, b = deconv2d_init(x, V, stride, "VALID")
        out = crop_down_shifted(out, k)
    else:
        out, g, b = deconv2d_init(x, V, stride, "VALID")
        out = crop_down_right_shifted(out, k)
    new[name] = (g, b)
    return out


def _block(x, w, names, conv, nonlinearity, a, h, mask, p, init, new):
    """gated_resnet with model-wide names: the block reference runs on the renamed weights."""
    local = {"conv2d": 0, "dense": 0}
    rename = {}
    for kind in (["conv2d"] if conv != "nin" else ["dense"]) + (["dense"] if a is not None else []) + (["conv2d"] if conv != "nin" else ["dense"]):
        rename[f"{kind}_{local[kind]}"] = names(kind)
        local[kind] += 1
    sub = {f"{lo}/{leaf}": w[f"{gl}/{leaf}"] for lo, gl in rename.items() for leaf in "Vgb" if f"{gl}/{leaf}" in w}
    if h is not None:
        sub["conditional_weights_0/hw"] = w[f"{names('conditional_weights')}/hw"]
    got = gated_resnet(x, sub, conv, nonlinearity, a=a, h=h, mask=mask, p=p, init=init)
    if not init:
        return got
    out, fresh = got
    new.update({rename[lo]: gb for lo, gb in fresh.items()})
    return out


def pixelcnn_pp(x, w, nr_resnet, nonlinearity="concat_elu", h=None, masks=None, p=0.0, init=False):
    """The network on NHWC ``x`` with canonical weights ``w`` (TF1 names in the model scope); with
    ``init``, the init pass: returns (out, {layer name: (g, b)})."""
    names = _Names()
    new = {}
    masks = iter(masks) if masks is not None else None

    def layer(kind, t, stride=(1, 1)):
        return _layer(kind, t, w, names("dense" if kind == "nin" else ("deconv2d" if "deconv" in kind else "conv2d")),
                      stride, init, new)

    def block(t, conv, a=None):
        return _block(t, w, names, conv, nonlinearity, a, h, None if masks is None else next(masks), p, init, new)

    xp = np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)
    U = [down_shift(layer("down_shifted_conv2d", xp))]
    L = [down_shift(layer("down_shifted_conv2d", xp)) + right_shift(layer("down_right_shifted_conv2d", xp))]
    for res in range(3):
        for _ in range(nr_resnet):
            U.append(block(U[-1], "down_shifted_conv2d"))
            L.append(block(L[-1], "down_right_shifted_conv2d", U[-1]))
        if res < 2:
            U.append(layer("down_shifted_conv2d", U[-1], (2, 2)))
            L.append(layer("down_right_shifted_conv2d", L[-1], (2, 2)))
    u, ul = U.pop(), L.pop()
    for res in range(3):
        for _ in range(nr_resnet if res == 0 else nr_resnet + 1):
            u = block(u, "down_shifted_conv2d", U.pop())
            ul = block(ul, "down_right_shifted_conv2d", np.concatenate([u, L.pop()], axis=-1))
        if res < 2:
            u = layer("down_shifted_deconv2d", u, (2, 2))
            ul = layer("down_right_shifted_deconv2d", ul, (2, 2))
    assert not U and not L
    out = layer("nin", elu(ul))
    return (out, new) if init else out


def softplus(x):
    return np.logaddexp(0.0, x)


def mix_logistic_loss(x, l, sum_all=True):
    """The discretized logistic mixture NLL (docs/model_spec.md), NHWC, float64."""
    M = l.shape[-1] // 10
    B, H, W, _ = x.shape
    logits = l[..., :M]
    rest = l[..., M:].reshape(B, H, W, 3, 3 * M)
    means, log_scales, coeffs = rest[..., :M], np.maximum(rest[..., M:2 * M], -7.0), np.tanh(rest[..., 2 * M:])
    xs = x[..., None]
    mu = np.stack([means[..., 0, :], means[..., 1, :] + coeffs[..., 0, :] * xs[..., 0, :],
                   means[..., 2, :] + coeffs[..., 1, :] * xs[..., 0, :] + coeffs[..., 2, :] * xs[..., 1, :]], axis=3)
    c = xs - mu
    s = np.exp(-log_scales)
    plus, minus, mid = s * (c + 1 / 255), s * (c - 1 / 255), s * c
    cdf_delta = sigmoid(plus) - sigmoid(minus)
    with np.errstate(divide="ignore"):
        inner = np.where(cdf_delta > 1e-5, np.log(np.maximum(cdf_delta, 1e-12)), mid - log_scales - 2 * softplus(mid) - np.log(127.5))
    lp = np.where(xs < -0.999, plus - softplus(plus), np.where(xs > 0.999, -softplus(minus), inner))
    lp = lp.sum(axis=3) + logits - logits.max(-1, keepdims=True) - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    m = lp.max(-1)
    per_pixel = m + np.log(np.exp(lp - m[..., None]).sum(-1))
    return -per_pixel.sum() if sum_all else -per_pixel.sum(axis=(1, 2))


def mix_logistic_sample(l, u_mix, u_value):
    """One draw from the mixture with the given uniforms (docs/model_spec.md "Sampler"), NHWC."""
    M = l.shape[-1] // 10
    B, H, W, _ = l.shape
    rest = l[..., M:].reshape(B, H, W, 3, 3 * M)
    k = np.argmax(l[..., :M] - np.log(-np.log(u_mix)), axis=-1)[..., None, None]
    pick = lambda t: np.take_along_axis(t, np.broadcast_to(k, (B, H, W, 3, 1)), axis=-1)[..., 0]  # noqa: E731
    means, log_scales, coeffs = pick(rest[..., :M]), np.maximum(pick(rest[..., M:2 * M]), -7.0), pick(np.tanh(rest[..., 2 * M:]))
    z = means + np.exp(log_scales) * (np.log(u_value) - np.log(1 - u_value))
    x0 = np.clip(z[..., 0], -1, 1)
    x1 = np.clip(z[..., 1] + coeffs[..., 0] * x0, -1, 1)
    x2 = np.clip(z[..., 2] + coeffs[..., 1] * x0 + coeffs[..., 2] * x1, -1, 1)
    return np.stack([x0, x1, x2], axis=-1)


# -- the original's optimiser (nn.adam_updates), in NumPy ------------------------------------------------
def adam_updates(p: np.ndarray, g: np.ndarray, state: dict, lr: float, mom1: float, mom2: float, eps: float) -> np.ndarray:
    """One step of the original's ``nn.adam_updates`` on one parameter, every operation in ``p``'s
    dtype in the graph's order (``state``: ``t`` from 1, ``v``, ``mg``; updated in place); the bias
    correction as the graph's correctly rounded scalar ``pow`` gives it (``gated_spec.training``)."""
    from gated_spec.training import bias_correction

    d = p.dtype.type
    t = state.setdefault("t", 1)
    mg = state.setdefault("mg", np.zeros_like(p))
    if mom1 > 0:
        v = state.setdefault("v", np.zeros_like(p))
        v_t = d(mom1) * v + d(1.0 - mom1) * g
        v_hat = v_t / d(bias_correction(mom1, t, p.dtype.name))
        state["v"] = v_t
    else:
        v_hat = g
    mg_t = d(mom2) * mg + d(1.0 - mom2) * np.square(g)
    mg_hat = mg_t / d(bias_correction(mom2, t, p.dtype.name))
    state["mg"], state["t"] = mg_t, t + 1
    return p - d(lr) * (v_hat / np.sqrt(mg_hat + d(eps)))


# -- PixelSNAIL (docs/pixelsnail.md) ------------------------------------------------------------------
def _pool_windows(size, d):
    """``SAME`` pooling's windows along one axis: (start, stop) of the valid pixels of each output."""
    top = same_pads(size, d, d)[0]
    return [(max(o * d - top, 0), min(o * d - top + d, size)) for o in range(-(-size // d))]


def causal_attention(key, mixin, query, downsample=1):
    """The original's attention on NHWC arrays, from the formulas: key j is a pixel (or with
    ``downsample`` a pooled window of pixels); query i may use it only if every pixel in it comes
    strictly before i in raster order."""
    B, H, W, K = query.shape
    rows, cols = _pool_windows(H, downsample), _pool_windows(W, downsample)
    keys, values, members = [], [], []
    for r0, r1 in rows:
        for c0, c1 in cols:
            keys.append(key[:, r0:r1, c0:c1].max(axis=(1, 2)))
            values.append(mixin[:, r0:r1, c0:c1].max(axis=(1, 2)))
            members.append([i * W + j for i in range(r0, r1) for j in range(c0, c1)])
    k, v = np.stack(keys, 1), np.stack(values, 1)  # (B, n_keys, .)
    mask = np.array([[float(max(m) < q) for m in members] for q in range(H * W)])
    dot = query.reshape(B, H * W, K) @ k.transpose(0, 2, 1) - (1 - mask) * 1e10
    dot = dot - dot.max(-1, keepdims=True)
    e = np.exp(dot / float(np.float32(np.sqrt(K)))) * mask
    probs = e / (e.sum(-1, keepdims=True) + 1e-6)
    return (probs @ v).reshape(B, H, W, -1)


def pixelsnail(x, w, spec, nr_resnet, attn_rep, nonlinearity="elu", h=None, masks=None, p=0.0, init=False):
    """The original ``_base_noup_smallkey_spec`` (``spec`` one of its partials) or ``model_spec`` on
    NHWC ``x`` with canonical weights ``w``; with ``init``, returns (out, {layer name: (g, b)})."""
    names = _Names()
    new = {}
    masks = iter(masks) if masks is not None else None
    two = spec == "model_spec"
    downsample = 2 if spec == "h12_pool2_smallkey" else 1

    def layer(kind, t):
        return _layer(kind, t, w, names("dense" if kind == "nin" else "conv2d"), (1, 1), init, new)

    def block(t, conv, a=None):
        return _block(t, w, names, conv, nonlinearity, a, h, None if masks is None else next(masks), p, init, new)

    B, H, W, _ = x.shape
    rows = np.broadcast_to(((np.arange(H) - H / 2) / H)[None, :, None, None], x.shape)
    cols = np.broadcast_to(((np.arange(W) - W / 2) / W)[None, None, :, None], x.shape)
    bg = np.concatenate([rows, cols], axis=-1)
    xp = np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)
    u = down_shift(layer("down_shifted_conv2d", xp)) if two else None
    ul = down_shift(layer("down_shifted_conv2d", xp)) + right_shift(layer("down_right_shifted_conv2d", xp))
    F_ = ul.shape[-1]
    n_key = F_ if two else 16
    for _ in range(attn_rep):
        for _ in range(nr_resnet):
            if two:
                u = block(u, "down_shifted_conv2d")
            ul = block(ul, "down_right_shifted_conv2d", u)
        raw = layer("nin", block(np.concatenate([x, ul, bg], axis=-1), "nin"))
        query = layer("nin", block(np.concatenate([ul, bg], axis=-1), "nin"))
        ul = block(ul, "nin", causal_attention(raw[..., :n_key], raw[..., n_key:], query, downsample))
    out = layer("nin", elu(ul))
    return (out, new) if init else out
