"""Which kernel makes the twins' float64 loss gradients part, and why the float32 spread does not
predict it (docs/translation_pitfalls.md M11, docs/pixelsnail.md "Float64 and flat mixtures").

    PYTHONPATH=. python scripts/float64_sigmoid.py

Prints (1) each sigmoid kernel's error against mpmath (50 digits) in ulps of its own dtype, on
uniform draws in [-4, 4] and in [6, 12] (outputs near 1, where the loss's ``cdf_delta`` of a
sub-pixel far out in a flat component's upper tail is a difference of two numbers near 1);
(2) the twins' float64 gradients of the summed loss w.r.t. one network output (the output and batch
of ``scripts/float64_training_gap.py``), with torch's sigmoid being ``torch_impl.ops.sigmoid``
(TensorFlow's formula) or ``torch.sigmoid``, against TensorFlow's float32 error scaled by 2^-29 (the
harness's float64 bound is K = 4 times that at most); and, at the element where the float32 error is
largest, the sigmoid kernels' errors at the bin's two edges in both dtypes.
Each backend runs in its worker process (``parity.isolation``).
"""

from __future__ import annotations

import sys

import numpy as np


def _exact_sigmoid(x: np.ndarray) -> np.ndarray:
    import mpmath as mp

    mp.mp.dps = 50
    return np.array([float(1 / (1 + mp.exp(-mp.mpf(float(v))))) for v in x])


def sigmoids(backend: str, x: np.ndarray) -> dict[str, np.ndarray]:
    if backend == "tf":
        import tensorflow as tf

        return {"tf.sigmoid": tf.sigmoid(tf.constant(x)).numpy()}
    import torch

    from torch_impl.ops import sigmoid

    t = torch.tensor(x)
    return {"torch.sigmoid": torch.sigmoid(t).numpy(), "torch_impl.ops.sigmoid": sigmoid(t).numpy()}


def loss_gradient(backend: str, x: np.ndarray, l: np.ndarray, dtype: str, torch_sigmoid: bool = False) -> np.ndarray:
    """d(summed loss)/d(network output), NHWC; ``torch_sigmoid``: torch's loss with ``torch.sigmoid``."""
    if backend == "tf":
        import tensorflow as tf

        from tf_impl.mixture import discretized_mix_logistic_loss

        out = tf.Variable(l.astype(dtype))
        with tf.GradientTape() as tape:
            loss = discretized_mix_logistic_loss(tf.constant(x.astype(dtype)), out)
        return tape.gradient(loss, out).numpy().astype(np.float64)
    import torch

    import torch_impl.mixture as mixture

    kept = mixture.sigmoid
    mixture.sigmoid = torch.sigmoid if torch_sigmoid else kept
    try:
        out = torch.tensor(l.astype(dtype)).permute(0, 3, 1, 2).clone().requires_grad_()
        mixture.discretized_mix_logistic_loss(torch.tensor(x.astype(dtype)).permute(0, 3, 1, 2), out).backward()
    finally:
        mixture.sigmoid = kept
    return out.grad.permute(0, 2, 3, 1).numpy().astype(np.float64)


def bin_edges(x: np.ndarray, l: np.ndarray, index: tuple[int, ...], dtype: str) -> tuple[float, float]:
    """``plus_in`` and ``min_in`` of the sub-pixel and component whose mean is output channel
    ``index[-1]`` (M = 2, a green mean: channels 2 + 6 c + k), computed as the loss computes them."""
    from gated_spec.model import HALF_BIN, LOG_SCALE_MIN

    dt = np.dtype(dtype).type
    b, i, j, ch = index
    c, k = divmod(ch - 2, 6)
    assert c == 1 and k < 2, "this helper follows a green mean"
    rest = l[b, i, j, 2:].astype(dt).reshape(3, 6)
    xs = x[b, i, j].astype(dt)
    mean = rest[1, k] + np.tanh(rest[0, 4 + k]) * xs[0]
    inv = np.exp(-np.maximum(rest[1, 2 + k], dt(LOG_SCALE_MIN)))
    centered = xs[1] - mean
    return float(inv * (centered + dt(HALF_BIN))), float(inv * (centered - dt(HALF_BIN)))


def _ulps(got: np.ndarray, exact: np.ndarray, dtype: str) -> np.ndarray:
    """Signed error of ``got`` in ulps of ``dtype`` at the exact value."""
    return (got.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)


def main() -> int:
    from parity import isolation

    call = lambda backend, fn, *a: isolation.call(backend, f"scripts.float64_sigmoid:{fn}", backend, *a)  # noqa: E731
    rng = np.random.default_rng(0)
    print("(1) sigmoid kernels against mpmath: max |error| in ulps of the dtype; share not correctly rounded")
    for lo, hi in ((-4.0, 4.0), (6.0, 12.0)):
        draws = rng.uniform(lo, hi, 20000)
        for dtype in ("float32", "float64"):
            x = draws.astype(dtype)
            exact = _exact_sigmoid(x.astype(np.float64))
            got = {**call("tf", "sigmoids", x), **call("torch", "sigmoids", x)}
            print(f"  x in [{lo:g}, {hi:g}], {dtype}: " + ", ".join(
                f"{k} {np.abs(_ulps(v, exact, dtype)).max():.2f} ({np.mean(np.abs(_ulps(v, exact, dtype)) > 0.5):.1%})"
                for k, v in got.items()))

    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(-1, 1, (2, 8, 8, 3)) * 127.5) / 127.5
    x.reshape(-1)[::13] = -1.0
    l = rng.normal(0.0, 1.0, (2, 8, 8, 20)).astype(np.float32).astype(np.float64)
    tf64, tf32 = call("tf", "loss_gradient", x, l, "float64"), call("tf", "loss_gradient", x, l, "float32")
    scale = np.abs(tf64).max()
    err32 = np.abs(tf32 - tf64)
    print(f"(2) loss gradient on one output (scale {scale:.2f}); TensorFlow's float32 error {err32.max():.3e} "
          f"(x 2^-29 = {err32.max() * 2.0**-29:.3e})")
    for label, flag in (("torch_impl.ops.sigmoid", False), ("torch.sigmoid", True)):
        d = np.abs(tf64 - call("torch", "loss_gradient", x, l, "float64", flag))
        print(f"  float64 twins with {label}: {d.max():.3e} = {d.max() / (scale * 2.0**-52):.0f} ulp at scale = "
              f"{d.max() / (err32.max() * 2.0**-29):.2f} x the scaled float32 error, at {tuple(int(i) for i in np.unravel_index(d.argmax(), d.shape))}")
    worst = tuple(int(i) for i in np.unravel_index(err32.argmax(), err32.shape))
    print(f"  at {worst}, where the float32 error is largest: the bin's sigmoids' errors in ulps of each dtype")
    for dtype in ("float32", "float64"):
        edges = np.array(bin_edges(x, l, worst, dtype), dtype)
        exact = _exact_sigmoid(edges.astype(np.float64))
        got = {**call("tf", "sigmoids", edges), **call("torch", "sigmoids", edges)}
        print(f"    {dtype}: plus_in {edges[0]:.6f}, min_in {edges[1]:.6f}, cdf_delta {exact[0] - exact[1]:.3e}; " + ", ".join(
            f"{k} {_ulps(v, exact, dtype)[0]:+.2f} / {_ulps(v, exact, dtype)[1]:+.2f}" for k, v in got.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
