"""Benchmark one GatedResnet (down-shifted conv, concat_elu, as in PixelCNN++) in both twins, side by side.

Every variant runs in its own subprocess (clean peak memory, no thread pools shared between
TensorFlow and PyTorch), one after the other in this one run, on the same sizes:

* ``tf-eager``, ``tf-function`` (``tf.function``), ``tf-xla`` (``jit_compile=True``: changes rounding);
* ``tf1-graph``: the original TF1 code as a ``tf.compat.v1`` graph in a ``Session`` (the tests' graph of
  docs/spec.md, ``tests/tf1_original.py``), what ``tf-function`` must not be slower than;
* ``torch-eager`` (NCHW), ``torch-channels-last``, ``torch-compile`` (inductor: changes rounding);
* ``torch-idiomatic``: the block as most ports write it (``nn.Conv2d`` + torch's weight-norm
  parametrisation, ``benchmarks/idiomatic_torch.py``), what ``torch-eager`` must not be slower than
  (no data-dependent init there, so no init figure).

On the CPU the run also measures the machine's large-GEMM rate (``torch.mm``, 2048^3, float32) and
reports each variant's forward+backward rate in GFLOP/s of the block's two convolutions next to it.

Each measures forward (inference), forward+backward (gradients of ``sum(out * cot)`` w.r.t. ``x`` and
every weight), the data-dependent init (a fresh block's ``initialize``), one Polyak update over a
30-block stack (eager variants), and the peak extra memory of forward+backward: process RSS high-water
mark on CPU, ``max_memory_allocated`` on CUDA. The table gives medians and ratios against
``tf-function`` from the same run (or ``torch-eager`` where TensorFlow is absent).

Modes: ``parity`` (TF32 off: the numerics the parity check uses) and ``fast`` (TF32 on where the
framework has it). GPU rows also report achieved TFLOP/s against the card's peak (FLOPs of the two
convolutions; backward = 2x forward).

    python -m benchmarks.bench_block                       # F=160, 32x32, batch 16, and the small size, CPU
    python -m benchmarks.bench_block --device cuda --batch 64 --mode both
    python -m benchmarks.bench_block --size tiny --repeats 2   # seconds; what CI runs
    python -m benchmarks.bench_block --tf-pair --repeats 20     # tf-function vs tf1-graph, one process
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from gated_spec import DEFAULT_POLYAK_DECAY

SIZES = {  # name: (F, batch, H, W)
    "pixelcnn": (160, 16, 32, 32),
    "small": (32, 8, 16, 16),
    "tiny": (8, 2, 8, 8),
}
VARIANTS = ("tf-eager", "tf-function", "tf-xla", "tf1-graph", "torch-eager", "torch-channels-last", "torch-compile",
            "torch-idiomatic")
ROUNDING_CHANGES = {"tf-xla": "XLA fusion", "torch-compile": "inductor fusion"}
EMA_BLOCKS = 30
# float32 peak TFLOP/s (dense, no sparsity) by card name fragment: (FP32 CUDA cores, TF32 tensor cores).
PEAK_TFLOPS = {"H200": (67.0, 494.7), "H100": (67.0, 494.7), "A100": (19.5, 156.0)}


def block_config(num_filters: int) -> dict[str, Any]:
    """The benchmarked block: the PixelCNN++ up-pass block, built by the harness backends' ``build``."""
    return {"num_filters": num_filters, "conv": "down_shifted_conv2d", "polyak_decay": DEFAULT_POLYAK_DECAY}


def conv_flops(F_: int, batch: int, H: int, W: int, kh: int = 2, kw: int = 3) -> float:
    """Multiply-adds x 2 of the block's two convolutions (concat_elu doubles their inputs)."""
    positions = batch * H * W
    return 2.0 * positions * kh * kw * (2 * F_ * F_ + 2 * F_ * 2 * F_)


def _timeit(fn: Callable[[], Any], sync: Callable[[], None], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _rss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


# -- workers ------------------------------------------------------------------------------------
def _torch_worker(variant: str, size: tuple[int, int, int, int], device: str, mode: str, repeats: int, warmup: int) -> dict:
    import torch

    import torch_impl
    from parity.backends import torch_backend

    fast = mode == "fast"
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    torch.backends.cudnn.benchmark = True
    F_, B, H, W = size
    gen = torch.Generator().manual_seed(0)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fmt = torch.channels_last if variant == "torch-channels-last" else torch.contiguous_format

    idiomatic = variant == "torch-idiomatic"

    def make_block() -> torch.nn.Module:
        if idiomatic:
            from benchmarks.idiomatic_torch import IdiomaticGatedResnet

            return IdiomaticGatedResnet(F_).to(device)
        return torch_backend.build(block_config(F_), "float32", device).to(memory_format=fmt)

    def data(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device).contiguous(memory_format=fmt)

    x, cot, xinit = data(B, F_, H, W), data(B, F_, H, W), data(B, F_, H, W)
    block = make_block()
    if not idiomatic:
        block.initialize(xinit)
    params = list(block.parameters())
    result: dict[str, Any] = {}
    if variant == "torch-compile":
        fwd_fn = torch.compile(block)
    else:
        fwd_fn = block

    def forward() -> None:
        with torch.no_grad():
            fwd_fn(x)

    xg = x.clone().requires_grad_(True)

    def forward_backward() -> None:
        out = fwd_fn(xg)
        torch.autograd.grad((out * cot).sum(), [xg, *params])

    start = time.perf_counter()
    forward()
    forward_backward()
    sync()
    result["first_call_s"] = time.perf_counter() - start  # includes compile for torch-compile
    result["forward_ms"] = _ms(_timeit(forward, sync, repeats, warmup))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mib()
    result["forward_backward_ms"] = _ms(_timeit(forward_backward, sync, repeats, warmup))
    result["peak_extra_mib"] = ((torch.cuda.max_memory_allocated() - base) / 2**20) if cuda else (_rss_mib() - base)

    def init() -> None:
        fresh = make_block()
        sync()
        start = time.perf_counter()
        fresh.initialize(xinit)
        sync()
        init_times.append(time.perf_counter() - start)

    init_times: list[float] = []
    if not idiomatic:
        for _ in range(warmup + repeats):
            init()
        result["init_ms"] = _ms(init_times[warmup:])
    if variant == "torch-eager" and not cuda:
        result["gemm_gflops"] = _gemm_gflops(torch, repeats)
    if variant == "torch-eager":
        stack = torch.nn.ModuleList(make_block() for _ in range(EMA_BLOCKS))
        result["ema30_ms"] = _ms(_timeit(lambda: torch_impl.update_averages(stack), sync, repeats * 5, warmup))
    result["framework"] = f"torch {torch.__version__}"
    result["device_name"] = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    result["threads"] = torch.get_num_threads()
    return result


def _gemm_gflops(torch: Any, repeats: int, n: int = 2048) -> float:
    """The machine's large-GEMM rate: float32 ``torch.mm`` of two n x n matrices, best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timeit(lambda: torch.mm(a, b), lambda: None, max(repeats, 3), 1))
    return 2.0 * n**3 / best / 1e9


def _tf1_graph_steps(size: tuple[int, int, int, int]) -> tuple[Callable[[], Any], Callable[[], Any], str]:
    """(forward, forward+backward, framework) of the original code's graph (tests/tf1_original.py) in
    a compat.v1 Session, on the CPU. ``x`` and the cotangent are variables, as the TF2 side's inputs
    are not constants either (a ``tf.constant`` would let grappler fold the ops that depend on it only)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from tests import tf1_original as original

    v1 = tf.compat.v1
    F_, B, H, W = size
    rng = np.random.default_rng(0)
    x_value, cot_value = (rng.normal(size=(B, H, W, F_)).astype(np.float32) for _ in range(2))
    graph = tf.Graph()
    with graph.as_default(), tf.device("/CPU:0"):
        x = tf.identity(v1.get_variable("bench_x", initializer=x_value, trainable=False))
        cot = tf.identity(v1.get_variable("bench_cot", initializer=cot_value, trainable=False))
        out = v1.make_template("model", original.gated_resnet)(x, conv="down_shifted_conv2d")
        params = v1.trainable_variables()
        grads = tf.gradients(tf.reduce_sum(out * cot), [x, *params])
        sess = v1.Session(graph=graph)
        sess.run(v1.global_variables_initializer())
    return (lambda: sess.run(out)), (lambda: sess.run(grads)), f"tensorflow {tf.__version__} (compat.v1 graph)"


def _tf1_graph_worker(size: tuple[int, int, int, int], repeats: int, warmup: int) -> dict:
    """The original code's graph in a Session (:func:`_tf1_graph_steps`)."""
    forward, forward_backward, framework = _tf1_graph_steps(size)
    result: dict[str, Any] = {}
    start = time.perf_counter()
    forward()
    forward_backward()
    result["first_call_s"] = time.perf_counter() - start
    result["forward_ms"] = _ms(_timeit(forward, lambda: None, repeats, warmup))
    base = _rss_mib()
    result["forward_backward_ms"] = _ms(_timeit(forward_backward, lambda: None, repeats, warmup))
    result["peak_extra_mib"] = _rss_mib() - base
    result["framework"] = framework
    result["device_name"] = "/CPU:0"
    return result


def _tf_function_step(size: tuple[int, int, int, int]) -> Callable[[], Any]:
    """forward+backward of ``tf_impl``'s block as one ``tf.function`` on the CPU, result fetched."""
    import tensorflow as tf

    from parity.backends import tf_backend

    F_, B, H, W = size
    rng = tf.random.Generator.from_seed(0)
    with tf.device("/CPU:0"):
        x, cot, xinit = (rng.normal((B, H, W, F_)) for _ in range(3))
        block = tf_backend.build(block_config(F_), "float32", "cpu")
        block.initialize(xinit)
        params = block.trainable_variables

        @tf.function
        def fwd_bwd(x: tf.Tensor) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(block(x, training=False) * cot)
            return tape.gradient(loss, [x, *params])

    return lambda: [g.numpy() for g in fwd_bwd(x)]


def _tf_pair_worker(size: tuple[int, int, int, int], repeats: int, warmup: int) -> dict:
    """``tf-function`` and ``tf1-graph`` forward+backward in one process, call by call alternately, so
    that both see the same machine load; ratio of the medians and of the minima."""
    mine, theirs = _tf_function_step(size), _tf1_graph_steps(size)[1]
    times: dict[str, list[float]] = {"tf-function": [], "tf1-graph": []}
    for i in range(warmup + repeats):
        for name, fn in (("tf-function", mine), ("tf1-graph", theirs)) if i % 2 else (("tf1-graph", theirs), ("tf-function", mine)):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {"forward_backward_ms": {k: _ms(v) for k, v in times.items()},
            "median_ratio": statistics.median(times["tf-function"]) / statistics.median(times["tf1-graph"]),
            "min_ratio": min(times["tf-function"]) / min(times["tf1-graph"])}


def _tf_worker(variant: str, size: tuple[int, int, int, int], device: str, mode: str, repeats: int, warmup: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import tf_impl
    from parity.backends import tf_backend

    cuda = device.startswith("cuda")
    if cuda:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)  # pitfall 32
    tf.config.experimental.enable_tensor_float_32_execution(mode == "fast")
    F_, B, H, W = size
    rng = tf.random.Generator.from_seed(0)
    dev = "/GPU:0" if cuda else "/CPU:0"
    result: dict[str, Any] = {}
    with tf.device(dev):
        x, cot, xinit = (rng.normal((B, H, W, F_)) for _ in range(3))

        def make_block() -> tf_impl.GatedResnet:
            return tf_backend.build(block_config(F_), "float32", device)

        block = make_block()
        block.initialize(xinit)
        params = block.trainable_variables

        def fwd(x: tf.Tensor) -> tf.Tensor:
            return block(x, training=False)

        def fwd_bwd(x: tf.Tensor) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(block(x, training=False) * cot)
            return tape.gradient(loss, [x, *params])

        if variant != "tf-eager":
            jit = variant == "tf-xla"
            fwd, fwd_bwd = tf.function(fwd, jit_compile=jit), tf.function(fwd_bwd, jit_compile=jit)

        def sync_value(t: Any) -> None:
            (t[0] if isinstance(t, list) else t).numpy()  # waits for the device

        last: list[Any] = [None]

        def forward() -> None:
            last[0] = fwd(x)

        def forward_backward() -> None:
            last[0] = fwd_bwd(x)

        def sync() -> None:
            if last[0] is not None:
                sync_value(last[0])

        start = time.perf_counter()
        forward()
        forward_backward()
        sync()
        result["first_call_s"] = time.perf_counter() - start
        result["forward_ms"] = _ms(_timeit(forward, sync, repeats, warmup))
        if cuda:
            tf.config.experimental.reset_memory_stats("GPU:0")
            base = tf.config.experimental.get_memory_info("GPU:0")["current"]
        else:
            base = _rss_mib()
        result["forward_backward_ms"] = _ms(_timeit(forward_backward, sync, repeats, warmup))
        result["peak_extra_mib"] = ((tf.config.experimental.get_memory_info("GPU:0")["peak"] - base) / 2**20
                                    if cuda else _rss_mib() - base)
        init_times = []
        for _ in range(warmup + repeats):
            fresh = make_block()
            start = time.perf_counter()
            fresh.initialize(xinit).numpy()
            init_times.append(time.perf_counter() - start)
        result["init_ms"] = _ms(init_times[warmup:])
        if variant == "tf-eager":
            stack = [make_block() for _ in range(EMA_BLOCKS)]

            def ema() -> None:
                for b in stack:
                    tf_impl.update_averages(b)

            result["ema30_ms"] = _ms(_timeit(ema, lambda: stack[-1].conv_output.V_ema.numpy(), repeats, warmup))
    result["framework"] = f"tensorflow {tf.__version__}"
    result["device_name"] = dev
    return result


def _ms(times: list[float]) -> dict[str, float]:
    return {"median": 1e3 * statistics.median(times), "min": 1e3 * min(times), "n": len(times)}


# -- driver -------------------------------------------------------------------------------------
def _available(variant: str) -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow" if variant.startswith("tf") else "torch") is not None


def run_worker(module: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``python -m <module> --worker <spec as JSON>`` in a fresh interpreter (this checkout first on
    the path): the last JSON line it prints, or ``{"error": ...}`` with its last words."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run([sys.executable, "-m", module, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) or f"exit {proc.returncode}"}
    return json.loads(lines[-1])


def run_variant(variant: str, size_name: str, size: tuple[int, int, int, int], device: str, mode: str,
                repeats: int, warmup: int, timeout: float) -> dict:
    """One variant in a fresh interpreter; returns its measurements or an ``error``."""
    spec = {"variant": variant, "size": size, "device": device, "mode": mode, "repeats": repeats, "warmup": warmup}
    result = run_worker("benchmarks.bench_block", spec, timeout)
    shape = {} if "error" in result else {"shape": list(size)}
    return {"variant": variant, "size": size_name, **shape, "mode": mode, **result}


def _add_ratios(rows: list[dict], device: str) -> None:
    """Ratios (time / baseline time) against tf-function, or torch-eager without TF; TFLOP/s on GPU."""
    for row in rows:
        if "error" in row:
            continue
        group = [r for r in rows if r["size"] == row["size"] and r["mode"] == row["mode"] and r.get("round") == row.get("round")
                 and "error" not in r]
        base = next((r for r in group if r["variant"] == "tf-function"), None) or next(
            (r for r in group if r["variant"] == "torch-eager"), None)
        row["baseline"] = base["variant"]
        for key in ("forward_ms", "forward_backward_ms", "init_ms"):
            if key in row and key in base:
                row[key.replace("_ms", "_ratio")] = row[key]["median"] / base[key]["median"]
        flops = conv_flops(*row["shape"])
        row["forward_backward_gflops"] = 3 * flops / (row["forward_backward_ms"]["median"] * 1e-3) / 1e9
        row["forward_tflops"] = flops / (row["forward_ms"]["median"] * 1e-3) / 1e12
        row["forward_backward_tflops"] = 3 * flops / (row["forward_backward_ms"]["median"] * 1e-3) / 1e12
        peak = next((p for name, p in PEAK_TFLOPS.items() if name in str(row.get("device_name", ""))), None)
        if device.startswith("cuda") and peak:
            row["peak_tflops"] = peak[1] if row["mode"] == "fast" else peak[0]
        if "ema30_ms" in row:
            step = EMA_BLOCKS * row["forward_backward_ms"]["median"]
            row["ema30_fraction_of_step"] = row["ema30_ms"]["median"] / step


PAIRS = (("torch-eager", "torch-idiomatic"), ("torch-channels-last", "torch-idiomatic"), ("tf-function", "tf1-graph"))


def pair_ratios(rows: list[dict]) -> list[dict]:
    """forward+backward time of ours over theirs (``PAIRS``), per round, then the median over rounds."""
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        for mode in dict.fromkeys(r["mode"] for r in rows):
            for mine, theirs in PAIRS:
                ratios = []
                for rnd in dict.fromkeys(r.get("round", 0) for r in rows):
                    got = {r["variant"]: r for r in rows if r["size"] == size and r["mode"] == mode
                           and r.get("round", 0) == rnd and "error" not in r}
                    if mine in got and theirs in got:
                        ratios.append(got[mine]["forward_backward_ms"]["median"] / got[theirs]["forward_backward_ms"]["median"])
                if ratios:
                    out.append({"size": size, "mode": mode, "ours": mine, "theirs": theirs, "ratios": ratios,
                                "median": statistics.median(ratios)})
    return out


def merge_rounds(rows: list[dict]) -> list[dict]:
    """One row per size, mode and variant: times and rates as the median over rounds (ratios taken
    within each round first, so slow drifts of a shared machine cancel)."""
    merged: dict[tuple, list[dict]] = {}
    for r in rows:
        merged.setdefault((r["size"], r["mode"], r["variant"]), []).append(r)
    out = []
    for group in merged.values():
        ok = [r for r in group if "error" not in r]
        if not ok:
            out.append(group[0])
            continue
        row = dict(ok[0], rounds=len(ok))
        for key, value in ok[0].items():
            if isinstance(value, dict) and "median" in value:
                row[key] = {"median": statistics.median(r[key]["median"] for r in ok if key in r),
                            "min": min(r[key]["min"] for r in ok if key in r), "n": sum(r[key]["n"] for r in ok if key in r)}
            elif isinstance(value, float) and key != "first_call_s":
                row[key] = statistics.median(r[key] for r in ok if key in r)
        out.append(row)
    return out


def format_table(rows: list[dict], device: str, pair_ratios_of_table: list[dict] = ()) -> str:
    """The merged rows as a table, then the GEMM rate, the pair ratios and the EMA fractions."""
    gpu = device.startswith("cuda")
    head = (f"{'size':<9} {'mode':<7} {'variant':<20} {'fwd ms':>8} {'x':>5} {'fwd+bwd ms':>10} {'x':>5} "
            f"{'init ms':>8} {'x':>5} {'peak MiB':>9} {'EMA30 ms':>9}")
    head += f" {'TFLOP/s f':>9} {'f+b':>6} {'peak':>5}" if gpu else f" {'GFLOP/s':>8}"
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['size']:<9} {r['mode']:<7} {r['variant']:<20} error: {r['error'][:120]}")
            continue
        ema = f"{r['ema30_ms']['median']:9.3f}" if "ema30_ms" in r else f"{'':>9}"
        init = f"{r['init_ms']['median']:8.2f} {r['init_ratio']:5.2f}" if "init_ratio" in r else f"{'-':>8} {'':>5}"
        line = (f"{r['size']:<9} {r['mode']:<7} {r['variant'] + ('*' if r['variant'] in ROUNDING_CHANGES else ''):<20} "
                f"{r['forward_ms']['median']:8.2f} {r['forward_ratio']:5.2f} {r['forward_backward_ms']['median']:10.2f} "
                f"{r['forward_backward_ratio']:5.2f} {init} "
                f"{r['peak_extra_mib']:9.1f} {ema}")
        if not gpu:
            line += f" {r['forward_backward_gflops']:8.1f}"
        if gpu:
            line += f" {r['forward_tflops']:9.1f} {r['forward_backward_tflops']:6.1f} {r.get('peak_tflops', float('nan')):5.0f}"
        lines.append(line)
    lines.append("x: median time over the baseline's median in the same round, median over rounds (baseline: tf-function, or torch-eager "
                 "without TensorFlow); * changes rounding (opt-in). EMA30: one Polyak update of a 30-block stack.")
    for r in rows:
        if "gemm_gflops" in r:
            lines.append(f"GFLOP/s: fwd+bwd of the two convolutions; this machine's large GEMM (torch.mm 2048^3 float32): "
                         f"{r['gemm_gflops']:.1f} GFLOP/s")
    for pr in pair_ratios_of_table:
        spread = f"; {min(pr['ratios']):.2f}-{max(pr['ratios']):.2f} over {len(pr['ratios'])} rounds" if len(pr["ratios"]) > 1 else ""
        lines.append(f"{pr['size']} {pr['mode']}: {pr['ours']} / {pr['theirs']}, forward+backward: {pr['median']:.2f}{spread}")
    for r in rows:
        if "ema30_fraction_of_step" in r:
            lines.append(f"EMA30 / (30 x block fwd+bwd), {r['size']} {r['mode']} {r['variant']}: {100 * r['ema30_fraction_of_step']:.2f} %")
    return "\n".join(lines)


def _run_tf_pair(args: argparse.Namespace) -> int:
    """``--tf-pair``: the two TF graphs in one worker, alternating (:func:`_tf_pair_worker`)."""
    for size_name in args.size or ["pixelcnn"]:
        F_, B, H, W = SIZES[size_name]
        row = run_variant("tf-pair", size_name, (F_, args.batch or B, H, W), "cpu", "parity", args.repeats, args.warmup, args.timeout)
        if "error" in row:
            print(f"{size_name}: error: {row['error']}")
            return 1
        t = row["forward_backward_ms"]
        print(f"{size_name} (F={F_}, batch {args.batch or B}, {H}x{W}), forward+backward, {args.repeats} alternating calls each: "
              f"tf-function median {t['tf-function']['median']:.1f} ms (min {t['tf-function']['min']:.1f}), "
              f"tf1-graph median {t['tf1-graph']['median']:.1f} ms (min {t['tf1-graph']['min']:.1f}); "
              f"tf-function / tf1-graph: median {row['median_ratio']:.3f}, min {row['min_ratio']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", action="append", choices=sorted(SIZES), help="repeatable; default: pixelcnn and small")
    p.add_argument("--batch", type=int, help="override the batch of every size (e.g. 64 on a GPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", default="parity", choices=["parity", "fast", "both"])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1,
                   help="run every variant this many times, interleaved; ratios are taken within a round, then the median")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per variant")
    p.add_argument("--json", default="benchmark.json", help="where to write the results")
    p.add_argument("--tf-pair", action="store_true",
                   help="only tf-function against tf1-graph, forward+backward, alternating call by call in one process")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        if spec["variant"] == "tf-pair":
            out = _tf_pair_worker(tuple(spec["size"]), spec["repeats"], spec["warmup"])
        elif spec["variant"] == "tf1-graph":
            out = _tf1_graph_worker(tuple(spec["size"]), spec["repeats"], spec["warmup"])
        else:
            worker = _tf_worker if spec["variant"].startswith("tf") else _torch_worker
            out = worker(spec["variant"], tuple(spec["size"]), spec["device"], spec["mode"], spec["repeats"], spec["warmup"])
        print(json.dumps(out))
        return 0

    if args.tf_pair:
        return _run_tf_pair(args)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    variants = [v for v in variants if _available(v)]
    modes = ["parity", "fast"] if args.mode == "both" else [args.mode]
    rows = []
    sizes = {}
    for rnd in range(args.rounds):
        for size_name in args.size or ["pixelcnn", "small"]:
            F_, B, H, W = SIZES[size_name]
            sizes[size_name] = (F_, args.batch or B, H, W)
            for mode in modes:
                for variant in variants:
                    row = run_variant(variant, size_name, sizes[size_name], args.device, mode, args.repeats,
                                      args.warmup, args.timeout)
                    row["round"] = rnd
                    print(f"  round {rnd} {size_name} {mode} {variant}: "
                          + (row["error"] if "error" in row else f"fwd+bwd {row['forward_backward_ms']['median']:.2f} ms"),
                          file=sys.stderr, flush=True)
                    rows.append(row)
    _add_ratios(rows, args.device)
    machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "device": args.device, "sizes": {k: list(v) for k, v in sizes.items()}}
    print(f"GatedResnet(down_shifted_conv2d, concat_elu), float32, {machine['cpus']} CPUs, device {args.device}; "
          + ", ".join(f"{k}: F={v[0]} batch={v[1]} {v[2]}x{v[3]}" for k, v in sizes.items()))
    pairs = pair_ratios(rows)
    print(format_table(merge_rounds(rows), args.device, pairs))
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "rows": rows, "pairs": pairs}, f, indent=1)
    print(f"wrote {args.json}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
