"""PixelSNAIL's causal attention alone in both twins, side by side, each size in a fresh subprocess:
forward time and the peak resident memory it adds. Its score matrices are ``(H W)^2`` per image
(``dot``, ``e``, ``probs`` and the mask are each ``n x n``), so memory grows with the fourth power
of the side: 4 MiB per float32 matrix at 32x32, 64 MiB at 64x64.

    python -m benchmarks.bench_attention                   # 32x32 and 64x64, batch 1, 16 keys, 128 values
    python -m benchmarks.bench_attention --side 16 --repeats 1   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from typing import Any

from benchmarks.bench_block import _ms, _timeit, run_worker

KEYS, VALUES = 16, 128  # the released h12_noup_smallkey at F = 256


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _worker(backend: str, side: int, batch: int, downsample: int, repeats: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(batch, side, side, c)).astype(np.float32) for c in (KEYS, VALUES, KEYS)]
    if backend == "torch":
        import torch

        from torch_impl import causal_attention

        key, mixin, query = (torch.from_numpy(a).permute(0, 3, 1, 2).contiguous() for a in arrays)

        def run() -> None:
            with torch.no_grad():
                causal_attention(key, mixin, query, downsample)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        from tf_impl import causal_attention

        key, mixin, query = (tf.constant(a) for a in arrays)

        def run() -> None:
            causal_attention(key, mixin, query, downsample).numpy()

    before = _peak_mib()
    times = _timeit(run, lambda: None, repeats, 1)
    return {"forward_ms": _ms(times), "peak_added_mib": _peak_mib() - before}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, action="append", help="H = W; repeatable (default 32 and 64)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--downsample", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(_worker(spec["backend"], spec["side"], spec["batch"], spec["downsample"], spec["repeats"])))
        return 0
    import importlib.util

    backends = [b for b, mod in (("tf", "tensorflow"), ("torch", "torch")) if importlib.util.find_spec(mod)]
    print(f"causal_attention, {KEYS} keys, {VALUES} values, batch {args.batch}, downsample {args.downsample}, float32, "
          f"{os.cpu_count()} CPUs")
    print(f"{'side':>5} {'n x n MiB':>10} {'twin':<6} {'forward ms':>11} {'peak added MiB':>15}")
    ok = True
    for side in args.side or [32, 64]:
        n = side * side
        rows = {}
        for backend in backends:
            spec = {"backend": backend, "side": side, "batch": args.batch, "downsample": args.downsample, "repeats": args.repeats}
            row = rows[backend] = run_worker("benchmarks.bench_attention", spec, args.timeout)
            if "error" in row:
                ok = False
                print(f"{side:>5} {'':>10} {backend:<6} error: {row['error'][:120]}")
                continue
            print(f"{side:>5} {args.batch * n * n * 4 / 2**20:10.0f} {backend:<6} {row['forward_ms']['median']:11.1f} "
                  f"{row['peak_added_mib']:15.0f}")
        if all("error" not in r for r in rows.values()) and len(rows) == 2:
            print(f"{side}x{side}: torch / tf forward {rows['torch']['forward_ms']['median'] / rows['tf']['forward_ms']['median']:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
