"""Benchmark the whole PixelCNN++ or PixelSNAIL in both twins, side by side, each in its own subprocess.

Per twin: forward+backward of the summed loss w.r.t. every weight (torch eager; tf_impl as one
``tf.function``), the data-dependent init of a fresh model, and sampling (``sample``'s loop: one
network forward per pixel; timed over the first ``--sample-steps`` steps and given per step and, at
that rate, per image of the size). Sizes: ``moderate`` (R=2, F=64, batch 8, 32x32) and ``pixelcnn``
(R=5, F=160, batch 4, 32x32: the CIFAR-10 network on one small batch). PixelSNAIL's released
``h12_noup_smallkey`` (F=256, elu, batch 1, 32x32): ``snail-small`` (R=1, 2 attention blocks) and
``snail-released`` (R=4, 12 attention blocks).

    python -m benchmarks.bench_model                       # both sizes, CPU
    python -m benchmarks.bench_model --size tiny --repeats 1   # seconds; what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from benchmarks.bench_block import _ms, _timeit, run_worker

SIZES = {"moderate": (2, 64, 8, 32), "pixelcnn": (5, 160, 4, 32), "tiny": (1, 8, 2, 8),  # R, F, batch, H = W
         "snail-small": (1, 256, 1, 32), "snail-released": (4, 256, 1, 32)}
SNAIL = {"snail-small": 2, "snail-released": 12}  # PixelSNAIL sizes: attention blocks of h12_noup_smallkey
M = 10


def _network(impl: Any, size: tuple[int, int, int, int]) -> tuple[Any, dict[str, Any]]:
    """The twin's class and its config for ``size``: PixelSNAIL (elu, as released) for a ``SNAIL`` size."""
    R, F_, _, _ = size
    for name, attn_rep in SNAIL.items():
        if SIZES[name] == tuple(size):
            return impl.PixelSNAIL, {"spec": "h12_noup_smallkey", "attn_rep": attn_rep, "nr_resnet": R, "nr_filters": F_,
                                     "nr_logistic_mix": M, "dropout_p": 0.0, "nonlinearity": "elu"}
    return impl.PixelCNNpp, {"nr_resnet": R, "nr_filters": F_, "nr_logistic_mix": M, "dropout_p": 0.0}


def _torch_worker(size: tuple[int, int, int, int], repeats: int, sample_steps: int) -> dict[str, Any]:
    import torch

    import torch_impl

    _, _, B, S = size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, S, S, generator=gen) * 2 - 1
    net, config = _network(torch_impl, size)
    model = net(**config)
    model.initialize(x)
    params = list(model.parameters())

    def fwd_bwd() -> None:
        torch.autograd.grad(torch_impl.discretized_mix_logistic_loss(x, model(x)), params)

    def init() -> None:
        net(**config).initialize(x)

    def steps() -> None:
        img = torch.zeros_like(x)
        with torch.no_grad():
            for _ in range(sample_steps):
                img[:, :, 0, 0] = torch_impl.sample_from_discretized_mix_logistic(model(img)[:, :, :1, :1])[:, :, 0, 0]

    fwd_bwd()
    steps()
    return _result(fwd_bwd, init, steps, repeats, sample_steps, size, f"torch {torch.__version__}", torch.get_num_threads())


def _tf_worker(size: tuple[int, int, int, int], repeats: int, sample_steps: int) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    import tf_impl

    _, _, B, S = size
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (B, S, S, 3)).astype(np.float32))
    net, config = _network(tf_impl, size)
    model = net(**config)
    model.initialize(x)
    params = model.trainable_variables

    @tf.function
    def grads(x: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = tf_impl.discretized_mix_logistic_loss(x, model(x))
        return tape.gradient(loss, params)

    network = tf.function(lambda img: model(img), autograph=False)

    def fwd_bwd() -> None:
        grads(x)[0].numpy()

    def init() -> None:
        net(**config).initialize(x).numpy()

    def steps() -> None:
        img = np.zeros(x.shape, np.float32)
        for _ in range(sample_steps):
            img[:, 0, 0] = tf_impl.sample_from_discretized_mix_logistic(network(tf.constant(img))[:, :1, :1]).numpy()[:, 0, 0]

    fwd_bwd()
    steps()
    return _result(fwd_bwd, init, steps, repeats, sample_steps, size, f"tensorflow {tf.__version__}", os.cpu_count())


def _result(fwd_bwd: Any, init: Any, steps: Any, repeats: int, sample_steps: int, size: tuple[int, int, int, int],
            framework: str, threads: Any) -> dict[str, Any]:
    R, F_, B, S = size
    out: dict[str, Any] = {"framework": framework, "threads": threads}
    out["forward_backward_ms"] = _ms(_timeit(fwd_bwd, lambda: None, repeats, 1))
    out["init_ms"] = _ms(_timeit(init, lambda: None, max(1, repeats // 2), 0))
    per_step = _ms(_timeit(steps, lambda: None, max(1, repeats // 2), 0))
    out["sample_step_ms"] = {k: v / sample_steps if k != "n" else v for k, v in per_step.items()}
    out["sample_s_per_image"] = out["sample_step_ms"]["median"] * S * S / B / 1e3
    return out


def run(backend: str, size: tuple[int, int, int, int], repeats: int, sample_steps: int, timeout: float) -> dict[str, Any]:
    spec = {"backend": backend, "size": size, "repeats": repeats, "sample_steps": sample_steps}
    return run_worker("benchmarks.bench_model", spec, timeout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", action="append", choices=sorted(SIZES), help="repeatable; default: moderate and pixelcnn")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sample-steps", type=int, default=4)
    p.add_argument("--timeout", type=float, default=1200.0)
    p.add_argument("--json", default="benchmark_model.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        worker = _tf_worker if spec["backend"] == "tf" else _torch_worker
        print(json.dumps(worker(tuple(spec["size"]), spec["repeats"], spec["sample_steps"])))
        return 0
    import importlib.util

    backends = [b for b, mod in (("tf", "tensorflow"), ("torch", "torch")) if importlib.util.find_spec(mod)]
    rows = []
    print(f"PixelCNN++ (M={M}, concat_elu) / PixelSNAIL h12_noup_smallkey (M={M}, elu), float32, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'size':<14} {'twin':<6} {'fwd+bwd ms':>11} {'init ms':>9} {'sample ms/step':>15} {'s/image':>8}")
    for name in args.size or ["moderate", "pixelcnn"]:
        for backend in backends:
            row = {"size": name, "shape": SIZES[name], "backend": backend,
                   **run(backend, SIZES[name], args.repeats, args.sample_steps, args.timeout)}
            rows.append(row)
            if "error" in row:
                print(f"{name:<14} {backend:<6} error: {row['error'][:120]}")
                continue
            print(f"{name:<14} {backend:<6} {row['forward_backward_ms']['median']:11.1f} {row['init_ms']['median']:9.1f} "
                  f"{row['sample_step_ms']['median']:15.1f} {row['sample_s_per_image']:8.2f}")
        got = {r["backend"]: r for r in rows if r["size"] == name and "error" not in r}
        if len(got) == 2:
            print(f"{name}: torch / tf, forward+backward {got['torch']['forward_backward_ms']['median'] / got['tf']['forward_backward_ms']['median']:.2f}"
                  f", init {got['torch']['init_ms']['median'] / got['tf']['init_ms']['median']:.2f}"
                  f", sampling {got['torch']['sample_step_ms']['median'] / got['tf']['sample_step_ms']['median']:.2f}")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
