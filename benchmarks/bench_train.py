"""Benchmark one training step of PixelCNN++ in both twins, side by side, each in its own subprocess.

A step is what ``gated-resnet-parity train`` runs (``docs/training.md``): the forward with dropout
drawn by the framework, the summed loss, its gradients, the original's Adam (``OriginalAdam`` with
train.py's schedule) and the Polyak update before it, through the backends' ``model_optimizer`` and
``model_train_step``, in parity mode. Twins: ``torch`` (eager), ``tf`` (eager: ``train_step`` as the
backend calls it) and ``tf-function`` (the same ``tf_impl.train.train_step`` traced once with
``tf.function``: what a Keras user would run). Sizes as ``bench_model``: ``moderate`` (R=2, F=64,
batch 8, 32x32), ``pixelcnn`` (R=5, F=160, batch 4, 32x32), ``tiny`` (what the tests run).

    python -m benchmarks.bench_train                             # moderate, CPU
    python -m benchmarks.bench_train --threads 1                 # one thread each (a shared machine)
    python -m benchmarks.bench_train --size tiny --repeats 1     # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

import numpy as np

from benchmarks.bench_block import _ms, _timeit, run_worker
from benchmarks.bench_model import M, SIZES

VARIANTS = ("tf", "tf-function", "torch")


def _worker(variant: str, size: tuple[int, int, int, int], repeats: int, threads: int | None = None) -> dict[str, Any]:
    from parity.backends import get_backend
    from parity.case import random_weights

    backend = get_backend("torch" if variant == "torch" else "tf")
    if threads and variant == "torch":
        import torch

        torch.set_num_threads(threads)
    elif threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    R, F_, B, S = size
    config = {"model": "pixelcnn_pp", "nr_resnet": R, "nr_filters": F_, "nr_logistic_mix": M, "dropout_p": 0.5,
              "polyak_decay": 0.9995}
    x = np.round(np.random.default_rng(0).uniform(-1, 1, (B, S, S, 3)) * 127.5).astype(np.float32) / np.float32(127.5)
    with backend.parity_mode("cpu"):
        net = backend.build(config, "float32", "cpu")
        backend.import_weights(net, random_weights(config, seed=1), initialized=True)
        optimizer = backend.model_optimizer(net, 1e-3, 0.999995, 0.95, 0.9995, 1e-8)
        if variant == "tf-function":
            import tensorflow as tf

            from tf_impl.train import train_step

            traced = tf.function(lambda images: train_step(net, optimizer, images), autograph=False)
            given = tf.constant(x)

            def step() -> None:
                traced(given).numpy()
        else:
            def step() -> None:
                backend.model_train_step(net, optimizer, x, None, None, "pre")

        times = _timeit(step, lambda: None, repeats, 2)
    return {"step_ms": _ms(times), "framework": backend.describe("cpu"), "threads": threads}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", action="append", choices=sorted(SIZES), help="repeatable; default: moderate")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of every twin (default: each framework's own); on a shared machine, 1 keeps "
                        "torch's OpenMP from spinning against other processes (13x slower measured there)")
    p.add_argument("--timeout", type=float, default=1200.0)
    p.add_argument("--json", default="benchmark_train.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(_worker(spec["variant"], tuple(spec["size"]), spec["repeats"], spec.get("threads"))))
        return 0
    import importlib.util

    have = {v: importlib.util.find_spec("torch" if v == "torch" else "tensorflow") is not None for v in VARIANTS}
    rows = []
    print(f"PixelCNN++ training step (M={M}, concat_elu, dropout 0.5, OriginalAdam, Polyak before Adam), float32, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, threads {args.threads or 'default'}")
    print(f"{'size':<9} {'twin':<12} {'step ms':>9} {'min ms':>9}")
    for name in args.size or ["moderate"]:
        for variant in (v for v in VARIANTS if have[v]):
            row = {"size": name, "shape": SIZES[name], "variant": variant,
                   **run_worker("benchmarks.bench_train", {"variant": variant, "size": SIZES[name], "repeats": args.repeats,
                                                                  "threads": args.threads},
                                args.timeout)}
            rows.append(row)
            if "error" in row:
                print(f"{name:<9} {variant:<12} error: {row['error'][:120]}")
                continue
            print(f"{name:<9} {variant:<12} {row['step_ms']['median']:9.1f} {row['step_ms']['min']:9.1f}")
        got = {r["variant"]: r["step_ms"]["median"] for r in rows if r["size"] == name and "error" not in r}
        if "torch" in got:
            print(f"{name}: " + ", ".join(f"torch / {v} {got['torch'] / got[v]:.2f}" for v in ("tf", "tf-function") if v in got)
                  + f" (medians of {args.repeats} steps each, after 2 warm-up steps)")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
