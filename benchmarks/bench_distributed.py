"""Steps per second of the train command with 1 and with N workers on this machine, side by side.

Each variant is the real ``python -m parity train`` on the same synthetic images: one process (its
framework's default threads, and one thread), and N workers started as torchrun starts them (torch:
gloo over 127.0.0.1, meeting through a file; TensorFlow: ``TF_CONFIG`` on 127.0.0.1) with one thread
each. The rate is taken from the log as worker 0 writes it: the steps after the first ``--warmup``
divided by the time between their lines, so start-up, the init and the first steps' tracing are not
counted. A step of N workers takes N times the images of a one-process step (``--batch-size`` is per
worker): images per second is the comparable figure.

    python -m benchmarks.bench_distributed                           # torch, 1 and 2 workers, small size
    python -m benchmarks.bench_distributed --backend tf --steps 12   # TensorFlow (MultiWorkerMirroredStrategy)
    python -m benchmarks.bench_distributed --size tiny --steps 4 --warmup 1   # seconds
    python -m benchmarks.bench_distributed --baseline /tmp/main   # and main's one-process run beside this one's
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"tiny": (1, 8, 2, 4, 8), "small": (1, 32, 5, 8, 16), "moderate": (2, 64, 10, 8, 32)}  # R, F, M, batch, H = W


def _env(threads: int | None, extra: dict[str, str], root: str = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TF_CONFIG", "MASTER_ADDR")}
    env.update(PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _launch(backend: str, workers: int, threads: int | None, args: list[str], where: str, root: str) -> list[subprocess.Popen]:
    envs = []
    if workers == 1:
        envs.append(_env(threads, {}, root))
    elif backend == "torch":
        for r in range(workers):
            envs.append(_env(threads, {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(workers), "GLOO_SOCKET_IFNAME": "lo",
                                       "PARITY_DIST_INIT": f"file://{where}/store"}))
    else:
        import socket

        ports = []
        for _ in range(workers):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        for r in range(workers):
            envs.append(_env(threads, {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": r}})}))
    return [subprocess.Popen([sys.executable, "-m", "parity", "train", *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True) for env in envs]


def measure(backend: str, workers: int, threads: int | None, size: str, steps: int, warmup: int, timeout: float,
            root: str = ROOT) -> dict[str, Any]:
    """One variant's rate: steps and images per second between the log lines of step ``warmup`` and ``steps``
    (the train command of the checkout at ``root``)."""
    R, F, M, B, S = SIZES[size]
    with tempfile.TemporaryDirectory() as where:
        data = os.path.join(where, "d.npz")
        n = max(4 * workers * B, 64)
        np.savez(data, x=np.random.default_rng(0).integers(0, 256, (n, S, S, 3), dtype=np.uint8))
        out = os.path.join(where, "run")
        args = ["--data", data, "--out", out, "--backend", backend, "--nr-resnet", str(R), "--nr-filters", str(F),
                "--nr-logistic-mix", str(M), "--batch-size", str(B), "--init-batch-size", str(B), "--steps", str(steps),
                "--save-every", str(10 * steps)]
        procs = _launch(backend, workers, threads, args, where, root)
        seen: dict[int, float] = {}
        log = os.path.join(out, "log.jsonl")
        deadline = time.monotonic() + timeout
        try:
            while len(seen) < steps and time.monotonic() < deadline:
                if any(p.poll() not in (None, 0) for p in procs):
                    break
                if os.path.exists(log):
                    with open(log) as f:
                        lines = sum(1 for line in f if line.endswith("\n"))
                    now = time.perf_counter()
                    for k in range(1, lines + 1):
                        seen.setdefault(k, now)
                time.sleep(0.01)
            errors = [p.communicate(timeout=max(deadline - time.monotonic(), 5))[1] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, 9)
                    p.wait()
        if len(seen) < steps or warmup not in seen:
            return {"error": (" | ".join(e.strip().splitlines()[-1] for e in errors if e.strip()) or "timed out")[:300]}
    rate = (steps - warmup) / (seen[steps] - seen[warmup])
    return {"steps_per_s": rate, "images_per_s": rate * workers * B, "step_ms": 1000 / rate}


def _allreduce_worker(rank: int, size: int, store: str, numel: int, repeats: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    flat = torch.zeros(numel)
    for _ in range(3):
        dist.all_reduce(flat)
    began = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(flat)
    if rank == 0:
        print(json.dumps({"allreduce_ms": 1000 * (time.perf_counter() - began) / repeats}))
    dist.destroy_process_group()


def allreduce_ms(size: str, workers: int, repeats: int = 20) -> tuple[int, float]:
    """(gradient elements, ms of one gloo all-reduce of them over 127.0.0.1 between ``workers`` processes)."""
    import torch_impl

    R, F, M, _, _ = SIZES[size]
    numel = sum(p.numel() for p in torch_impl.PixelCNNpp(nr_resnet=R, nr_filters=F, nr_logistic_mix=M).parameters())
    with tempfile.TemporaryDirectory() as where:
        env = _env(1, {"GLOO_SOCKET_IFNAME": "lo"})
        code = (f"import sys; from benchmarks.bench_distributed import _allreduce_worker; "
                f"_allreduce_worker(int(sys.argv[1]), {workers}, {where + '/store'!r}, {numel}, {repeats})")
        procs = [subprocess.Popen([sys.executable, "-c", code, str(r)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                 for r in range(workers)]
        out = [p.communicate(timeout=300)[0] for p in procs]
    return numel, json.loads(out[0])["allreduce_ms"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="torch", choices=["torch", "tf"])
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", default=None)
    p.add_argument("--baseline", default=None, help="another checkout (e.g. main's, `git archive`d): its one-process run, "
                   "1 thread, measured before and after this one's, for the one-process path's speed")
    args = p.parse_args(argv)
    if not 1 <= args.warmup < args.steps:
        p.error("expected 1 <= --warmup < --steps")
    R, F, M, B, S = SIZES[args.size]
    variants = [(1, None), (1, 1), (args.workers, 1)]
    if args.baseline:
        base = [measure(args.backend, 1, 1, args.size, args.steps, args.warmup, args.timeout, os.path.abspath(args.baseline))]
    print(f"train --backend {args.backend}, PixelCNN++ R={R} F={F} M={M}, batch {B} per worker, {S}x{S}, float32; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'workers':>7} {'threads each':>12} {'steps/s':>8} {'images/s':>9} {'ms/step':>8}")
    rows = []
    for workers, threads in variants:
        row = {"workers": workers, "threads": threads or "default",
               **measure(args.backend, workers, threads, args.size, args.steps, args.warmup, args.timeout)}
        rows.append(row)
        if "error" in row:
            print(f"{workers:>7} {str(row['threads']):>12} error: {row['error']}")
        else:
            print(f"{workers:>7} {str(row['threads']):>12} {row['steps_per_s']:8.2f} {row['images_per_s']:9.1f} {row['step_ms']:8.1f}")
    ok = [r for r in rows if "error" not in r]
    if args.baseline:
        base.append(measure(args.backend, 1, 1, args.size, args.steps, args.warmup, args.timeout, os.path.abspath(args.baseline)))
        if all("error" not in b for b in base) and len(ok) > 1:
            mean = sum(b["steps_per_s"] for b in base) / 2
            print(f"1 process, 1 thread: this checkout {ok[1]['steps_per_s']:.2f} steps/s, the baseline {base[0]['steps_per_s']:.2f} "
                  f"before and {base[1]['steps_per_s']:.2f} after it: ratio {ok[1]['steps_per_s'] / mean:.3f}")
        rows.append({"baseline": args.baseline, "baseline_steps_per_s": [b.get("steps_per_s") for b in base]})
    if len(ok) == 3:
        print(f"images/s, {args.workers} workers / 1 process (1 thread): {ok[2]['images_per_s'] / ok[1]['images_per_s']:.2f}; "
              f"/ 1 process (default threads): {ok[2]['images_per_s'] / ok[0]['images_per_s']:.2f}")
    if args.backend == "torch" and args.workers > 1:
        numel, ms = allreduce_ms(args.size, args.workers)
        print(f"the gradients' all-reduce alone ({numel} float32, gloo over 127.0.0.1, {args.workers} processes): {ms:.2f} ms"
              + (f", {ms / ok[2]['step_ms']:.1%} of a {args.workers}-worker step" if len(ok) == 3 else ""))
        rows.append({"allreduce_numel": numel, "allreduce_ms": ms})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": args.backend, "size": args.size, "rows": rows}, f, indent=1)
    return 0 if len(ok) == len(variants) else 1


if __name__ == "__main__":
    sys.exit(main())
