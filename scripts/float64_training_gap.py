"""Why the twins' float64 training results part beyond the extrapolated float64 bound (docs/training.md,
"Lockstep parity"): the measurements behind that paragraph, on one step from the data-dependent init.

    PYTHONPATH=. python scripts/float64_training_gap.py [--seed 0]

Prints, for the worst tensors of the step: the twins' float64 difference; each twin's float64 spread
over three re-runs from inputs and weights moved by one float64 ulp (what a "measured" float64 floor
from re-runs would be); each twin's change when the batch's two images swap places (summation
order); the difference of the swapped runs; then the loss's gradient alone on one float64 network
output in both precisions; and how far apart the twins' float64 and float32 elementwise kernels are.
Each backend runs in its worker process (``parity.isolation``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from parity.case import NOT_PERTURBED_PREFIXES, TrainingCase


def _case(seed: int) -> TrainingCase:
    return TrainingCase("float64-gap", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "dropout_p": 0.5},
                        steps=1, init=True, seed=seed)


def _moved64(arrays: dict[str, np.ndarray], seed: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every float input and weight as float64, each element moved by one float64 ulp at random (down,
    up or not at all); keep-masks as they are."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in arrays.items():
        if k.startswith(NOT_PERTURBED_PREFIXES) or v.dtype != np.float32:
            out[k] = v
            continue
        v = v.astype(np.float64)
        step = rng.integers(-1, 2, v.shape)
        moved = np.where(step > 0, np.nextafter(v, np.inf), np.nextafter(v, -np.inf))
        out[k] = np.where((step == 0) | (v == 0), v, moved)
    return out


def _swapped(case: TrainingCase) -> TrainingCase:
    arrays = {k: (v[::-1].copy() if k.startswith(("x/", "dropout_mask/")) else v) for k, v in case.arrays.items()}
    return dataclasses.replace(case, arrays=arrays)


def run_float64(backend: str, case: TrainingCase) -> dict[str, np.ndarray]:
    from parity.harness import run_float64_here

    return run_float64_here(backend, case)


def loss_gradient(backend: str, x: np.ndarray, l: np.ndarray, dtype: str) -> np.ndarray:
    """d(summed loss)/d(network output), NHWC, for ``x`` and output ``l`` (both NHWC)."""
    if backend == "tf":
        import tensorflow as tf

        from tf_impl.mixture import discretized_mix_logistic_loss

        out = tf.Variable(l.astype(dtype))
        with tf.GradientTape() as tape:
            loss = discretized_mix_logistic_loss(tf.constant(x.astype(dtype)), out)
        return tape.gradient(loss, out).numpy().astype(np.float64)
    import torch

    from torch_impl.mixture import discretized_mix_logistic_loss

    out = torch.tensor(l.astype(dtype)).permute(0, 3, 1, 2).clone().requires_grad_()
    discretized_mix_logistic_loss(torch.tensor(x.astype(dtype)).permute(0, 3, 1, 2), out).backward()
    return out.grad.permute(0, 2, 3, 1).numpy().astype(np.float64)


def kernels(backend: str, x: np.ndarray) -> dict[str, np.ndarray]:
    if backend == "tf":
        import tensorflow as tf

        t = tf.constant(x)
        return {"sigmoid": tf.sigmoid(t).numpy(), "tanh": tf.tanh(t).numpy(), "exp": tf.exp(t).numpy(),
                "softplus": tf.nn.softplus(t).numpy()}
    import torch

    from torch_impl.mixture import softplus

    t = torch.tensor(x)
    return {"sigmoid": torch.sigmoid(t).numpy(), "tanh": torch.tanh(t).numpy(), "exp": torch.exp(t).numpy(),
            "softplus": softplus(t).numpy()}


def main(argv: list[str] | None = None) -> int:
    from parity import isolation
    from parity.tolerance import ulp_distance

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    case = _case(args.seed)
    call = lambda backend, fn, *a: isolation.call(backend, f"scripts.float64_training_gap:{fn}", backend, *a)  # noqa: E731
    ref, other = call("tf", "run_float64", case), call("torch", "run_float64", case)
    spread: dict[str, dict[str, float]] = {"tf": dict.fromkeys(ref, 0.0), "torch": dict.fromkeys(ref, 0.0)}
    for sample in range(3):
        moved = dataclasses.replace(case, arrays=_moved64(case.arrays, (args.seed, sample, 0x64)))
        for backend, base in (("tf", ref), ("torch", other)):
            got = call(backend, "run_float64", moved)
            for k in base:
                spread[backend][k] = max(spread[backend][k], float(np.max(np.abs(got[k] - base[k]))))
    swap = {b: call(b, "run_float64", _swapped(case)) for b in ("tf", "torch")}
    gap = {k: float(np.max(np.abs(ref[k] - other[k]))) for k in ref}
    worst = sorted(gap, key=lambda k: -gap[k] / max(spread["tf"][k], spread["torch"][k], 1e-300))[:6]
    print(f"seed {args.seed}: one step from the init, float64; twins' difference against each twin's own variation")
    print(f"{'tensor':<34} {'twins':>9} {'tf 1ulp':>9} {'torch 1ulp':>10} {'tf swap':>9} {'torch swap':>10} {'twins swapped':>13}")
    for k in worst:
        print(f"{k:<34} {gap[k]:9.2e} {spread['tf'][k]:9.2e} {spread['torch'][k]:10.2e} "
              f"{np.max(np.abs(swap['tf'][k] - ref[k])):9.2e} {np.max(np.abs(swap['torch'][k] - other[k])):10.2e} "
              f"{np.max(np.abs(swap['tf'][k] - swap['torch'][k])):13.2e}")
    ratio = max(gap[k] / max(spread["tf"][k], spread["torch"][k], 1e-300) for k in ref if gap[k] > 0)
    print(f"largest twins' difference over the larger one-ulp float64 spread: {ratio:.1f}")

    rng = np.random.default_rng(args.seed)
    x = np.round(rng.uniform(-1, 1, (2, 8, 8, 3)) * 127.5) / 127.5
    x.reshape(-1)[::13] = -1.0
    l = rng.normal(0.0, 1.0, (2, 8, 8, 20)).astype(np.float32).astype(np.float64)
    g = {(b, dt): call(b, "loss_gradient", x, l, dt) for b in ("tf", "torch") for dt in ("float32", "float64")}
    tf_err32 = np.abs(g["tf", "float32"] - g["tf", "float64"])
    d64 = np.abs(g["tf", "float64"] - g["torch", "float64"])
    d32 = np.abs(g["tf", "float32"] - g["torch", "float32"])
    top = d64 > 0.1 * d64.max()
    print(f"loss gradient on one output (scale {np.abs(g['tf', 'float64']).max():.2f}): float32 twins {d32.max():.2e}, "
          f"tf's own float32 error {tf_err32.max():.2e}; float64 twins {d64.max():.2e} = "
          f"{d64.max() / (tf_err32.max() * 2.0**-29):.2f} x tf's float32 error scaled by 2^-29")
    print(f"  where the float64 twins differ most ({top.sum()} elements): float32 twins / tf's float32 error "
          f"{np.median(d32[top] / np.maximum(tf_err32[top], 1e-300)):.2f} (median)")
    draws = np.random.default_rng(1).normal(0.0, 6.0, 200000)
    for dt in ("float64", "float32"):
        a, b = call("tf", "kernels", draws.astype(dt)), call("torch", "kernels", draws.astype(dt))
        print(f"  {dt} kernels, twins apart on 2e5 normal draws (sd 6): " + ", ".join(
            f"{k} {ulp_distance(a[k], b[k])} ulp on {np.mean(a[k] != b[k]):.0%}" for k in a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
