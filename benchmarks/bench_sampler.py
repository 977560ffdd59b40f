"""Benchmark the cached sampler against the naive one, both twins, side by side, each twin in its own
subprocess (docs/sampler.md).

Per twin and batch size: the naive sampler's step (the whole network on the current image, then the
draw at the step's pixel, as ``mixture.sample`` loops) timed over ``--naive-steps`` steps after one
warm-up step, and the cached sampler (``fast_sample.CachedSampler``: build, then ``output``, draw,
``put``) timed over its first ``--cached-rows`` rows of steps. Every naive step costs the same, and the
cached sampler's work repeats every 4 rows (its coarsest level computes every fourth row), so both
extrapolate to a whole batch of H x W steps: the naive one by ``H W / steps``, the cached one by
``H / rows`` (plus its build). A full naive draw of a 32x32 batch at the CIFAR-10 size takes tens of
minutes on this CPU, hence the extrapolation; ``--cached-rows`` equal to H times the whole cached draw.

    python -m benchmarks.bench_sampler                    # 32x32, R=5, F=160, M=10, batch 1 and 16, CPU
    python -m benchmarks.bench_sampler --size tiny        # seconds; what the tests run
    python -m benchmarks.bench_sampler --model h12_noup_smallkey --size snail --attn-rep 2
    python -m benchmarks.bench_sampler --model h12_noup_smallkey --size snail-released --batch 1   # the released size

``--model`` a PixelSNAIL spec: its cached step costs more as the raster goes on (the attention reads
every earlier key), so the cached sampler is timed over the whole draw (``--cached-rows`` is H).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

from benchmarks.bench_block import run_worker
from gated_spec.pixelsnail import SPECS as PIXELSNAIL_SPECS

SIZES = {"pixelcnn": (5, 160, 32), "snail": (2, 64, 16), "snail-released": (4, 256, 32), "tiny": (1, 8, 8)}  # R, F, H = W
M = 10


def _torch_worker(size: tuple[int, int, int], batch: int, naive_steps: int, cached_rows: int, threads: int | None,
                  model_name: str = "pixelcnn_pp", attn_rep: int | None = None) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)

    import torch_impl
    from torch_impl.fast_sample import CachedSampler

    R, F_, S = size
    gen = torch.Generator().manual_seed(0)
    if model_name == "pixelcnn_pp":
        model = torch_impl.PixelCNNpp(nr_resnet=R, nr_filters=F_, nr_logistic_mix=M, dropout_p=0.0)
    else:
        model = torch_impl.PixelSNAIL(model_name, nr_resnet=R, nr_filters=F_, nr_logistic_mix=M, dropout_p=0.0, attn_rep=attn_rep)
    model.initialize(torch.rand(min(batch, 4), 3, S, S, generator=gen) * 2 - 1)
    model.eval()
    u_mix = torch.rand(batch, S, S, M, generator=gen) * 0.99 + 0.005
    u_value = torch.rand(batch, S, S, 3, generator=gen) * 0.99 + 0.005
    draw = torch_impl.sample_from_discretized_mix_logistic

    def naive(steps: int) -> None:
        x = torch.zeros(batch, 3, S, S)
        with torch.no_grad():
            for k in range(steps):
                i, j = divmod(k, S)
                l = model(x)
                x[:, :, i, j] = draw(l[:, :, i:i + 1, j:j + 1], u_mix[:, i:i + 1, j:j + 1], u_value[:, i:i + 1, j:j + 1])[:, :, 0, 0]

    def cached(rows: int) -> float:
        start = time.perf_counter()
        s = CachedSampler(model, batch, S, S)
        built = time.perf_counter() - start
        for i in range(rows):
            for j in range(S):
                l = s.output(i, j)
                s.put(i, j, draw(l, u_mix[:, i:i + 1, j:j + 1], u_value[:, i:i + 1, j:j + 1])[:, :, 0, 0])
        return built

    return _measure(naive, cached, size, batch, naive_steps, cached_rows, f"torch {torch.__version__}", torch.get_num_threads())


def _tf_worker(size: tuple[int, int, int], batch: int, naive_steps: int, cached_rows: int, threads: int | None,
               model_name: str = "pixelcnn_pp", attn_rep: int | None = None) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)

    import tf_impl
    from tf_impl.fast_sample import CachedSampler

    R, F_, S = size
    rng = np.random.default_rng(0)
    if model_name == "pixelcnn_pp":
        model = tf_impl.PixelCNNpp(nr_resnet=R, nr_filters=F_, nr_logistic_mix=M, dropout_p=0.0)
    else:
        model = tf_impl.PixelSNAIL(model_name, nr_resnet=R, nr_filters=F_, nr_logistic_mix=M, dropout_p=0.0, attn_rep=attn_rep)
    model.initialize(tf.constant(rng.uniform(-1, 1, (min(batch, 4), S, S, 3)).astype(np.float32)))
    u_mix = tf.constant(rng.uniform(0.005, 0.995, (batch, S, S, M)).astype(np.float32))
    u_value = tf.constant(rng.uniform(0.005, 0.995, (batch, S, S, 3)).astype(np.float32))
    draw = tf_impl.sample_from_discretized_mix_logistic
    network = tf.function(lambda x: model(x), autograph=False)  # as tf_impl.mixture.sample runs it

    def naive(steps: int) -> None:
        x = np.zeros((batch, S, S, 3), np.float32)
        for k in range(steps):
            i, j = divmod(k, S)
            l = network(tf.constant(x))
            x[:, i, j] = draw(l[:, i:i + 1, j:j + 1], u_mix[:, i:i + 1, j:j + 1], u_value[:, i:i + 1, j:j + 1]).numpy()[:, 0, 0]

    def cached(rows: int) -> float:
        start = time.perf_counter()
        s = CachedSampler(model, batch, S, S)
        built = time.perf_counter() - start
        for i in range(rows):
            for j in range(S):
                l = s.output(i, j)
                s.put(i, j, draw(l, u_mix[:, i:i + 1, j:j + 1], u_value[:, i:i + 1, j:j + 1])[:, 0, 0])
        s.image().numpy()
        return built

    return _measure(naive, cached, size, batch, naive_steps, cached_rows, f"tensorflow {tf.__version__}",
                    tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count())


def _measure(naive: Callable[[int], None], cached: Callable[[int], float], size: tuple[int, int, int], batch: int,
             naive_steps: int, cached_rows: int, framework: str, threads: Any) -> dict[str, Any]:
    S = size[2]
    naive(1)  # warm-up (tracing, allocator)
    start = time.perf_counter()
    naive(naive_steps)
    naive_step = (time.perf_counter() - start) / naive_steps
    cached(1)  # warm-up
    start = time.perf_counter()
    built = cached(cached_rows)
    rows_s = time.perf_counter() - start - built
    naive_batch = naive_step * S * S
    cached_batch = built + rows_s * S / cached_rows
    return {"framework": framework, "threads": threads, "batch": batch, "naive_step_ms": 1e3 * naive_step,
            "naive_steps_timed": naive_steps, "cached_rows_timed": cached_rows, "cached_build_ms": 1e3 * built,
            "cached_step_ms": 1e3 * rows_s / (cached_rows * S), "naive_s_per_batch": naive_batch,
            "cached_s_per_batch": cached_batch, "naive_s_per_image": naive_batch / batch,
            "cached_s_per_image": cached_batch / batch, "speedup": naive_batch / cached_batch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="pixelcnn", choices=sorted(SIZES))
    p.add_argument("--model", default="pixelcnn_pp", choices=["pixelcnn_pp", *PIXELSNAIL_SPECS])
    p.add_argument("--attn-rep", type=int, default=None, help="a PixelSNAIL's attention blocks (default: the spec's)")
    p.add_argument("--batch", type=int, action="append", help="repeatable; default: 1 and 16")
    p.add_argument("--backend", action="append", choices=["tf", "torch"], help="repeatable; default: both (where installed)")
    p.add_argument("--naive-steps", type=int, default=2)
    p.add_argument("--cached-rows", type=int, default=4, help="rows of cached steps timed (a multiple of 4: whole periods)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per framework (default: its own choice); 1 on a machine shared with other work")
    p.add_argument("--timeout", type=float, default=1200.0)
    p.add_argument("--json", default="benchmark_sampler.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        worker = _tf_worker if spec["backend"] == "tf" else _torch_worker
        print(json.dumps(worker(tuple(spec["size"]), spec["batch"], spec["naive_steps"], spec["cached_rows"], spec["threads"],
                                spec["model"], spec["attn_rep"])))
        return 0
    import importlib.util

    R, F_, S = SIZES[args.size]
    if args.cached_rows % 4 or not 0 < args.cached_rows <= S:
        raise SystemExit(f"--cached-rows: expected a multiple of 4 up to {S}; received {args.cached_rows}")
    snail = args.model != "pixelcnn_pp"
    cached_rows = S if snail else args.cached_rows  # a PixelSNAIL's steps grow dearer: the whole draw
    attn_rep = (args.attn_rep or PIXELSNAIL_SPECS[args.model].attn_rep) if snail else None
    if attn_rep is not None and attn_rep <= 0:
        raise SystemExit(f"--attn-rep: expected a positive integer; received {attn_rep}")
    backends = [b for b, mod in (("tf", "tensorflow"), ("torch", "torch"))
                if importlib.util.find_spec(mod) and b in (args.backend or ["tf", "torch"])]
    network = f"PixelSNAIL {args.model} (attn_rep={attn_rep}, elu)" if snail else "PixelCNN++ (concat_elu)"
    print(f"{network} sampling (R={R}, F={F_}, M={M}, {S}x{S}), float32, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; naive: {args.naive_steps} steps timed, cached: "
          f"{cached_rows} rows timed, both extrapolated to {S * S} steps; threads: {args.threads or 'default'}")
    print(f"{'twin':<6} {'batch':>5} {'naive ms/step':>14} {'cached ms/step':>15} {'naive s/batch':>14} "
          f"{'cached s/batch':>15} {'naive s/img':>12} {'cached s/img':>13} {'speed-up':>9}")
    rows = []
    for batch in args.batch or [1, 16]:
        for backend in backends:
            spec = {"backend": backend, "size": SIZES[args.size], "batch": batch, "naive_steps": args.naive_steps,
                    "cached_rows": cached_rows, "threads": args.threads, "model": args.model, "attn_rep": attn_rep}
            row = {"size": args.size, "shape": SIZES[args.size], "model": args.model, "attn_rep": attn_rep, "backend": backend,
                   **run_worker("benchmarks.bench_sampler", spec, args.timeout)}
            row.setdefault("batch", batch)
            rows.append(row)
            if "error" in row:
                print(f"{backend:<6} {batch:>5} error: {row['error'][:120]}")
                continue
            print(f"{backend:<6} {batch:>5} {row['naive_step_ms']:14.1f} {row['cached_step_ms']:15.2f} "
                  f"{row['naive_s_per_batch']:14.1f} {row['cached_s_per_batch']:15.2f} {row['naive_s_per_image']:12.2f} "
                  f"{row['cached_s_per_image']:13.3f} {row['speedup']:8.1f}x")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
