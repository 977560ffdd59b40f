"""Benchmark one training step of the torch twin against pclucas14/pixel-cnn-pp, the most-used PyTorch port.

The port is not part of this repository: pass a checkout of it with ``--port-dir`` (its ``model.py``,
``layers.py`` and ``utils.py`` are imported from there, in their own subprocess). Each side's step
is what its trainer runs, on the same config (R, F, M = 10, concat_elu, batch, image size), float32, CPU:

* port: ``main.py``'s step: ``PixelCNN(nr_resnet=R, nr_filters=F, nr_logistic_mix=M)`` in train mode
  (its ``nn.Dropout2d(0.5)`` drawn by torch), ``discretized_mix_logistic_loss`` (summed, nats), ``zero_grad``,
  ``backward``, ``torch.optim.Adam`` (epsilon outside the root); its weights from torch's default init
  through ``weight_norm``; no Polyak averaging (it keeps none);
* twin: ``benchmarks.bench_train``'s ``torch`` step, ``torch_impl.train.train_step`` through the backend:
  the same loss, ``OriginalAdam`` (epsilon inside the root) with train.py's schedule, the Polyak update,
  in parity mode.

So the twin does a little more per step (the shadows' update, the schedule). Printed: each side's median
and minimum step time and ``twin / port`` (above 1: the twin is slower).

    git --git-dir=MIRROR archive HEAD | tar -x -C /tmp/pcnn-port      # or git clone the port
    python -m benchmarks.bench_train_port --port-dir /tmp/pcnn-port --size tiny --size moderate --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from typing import Any

import numpy as np

from benchmarks.bench_block import _ms, _timeit, run_worker
from benchmarks.bench_model import M, SIZES


def _import_port(port_dir: str) -> tuple[Any, Any]:
    """The port's ``PixelCNN`` and ``discretized_mix_logistic_loss``. Its ``utils.py`` (at 7cb4436) has one
    Python 2 statement, ``print e`` in ``load_part_of_model`` (not used here), which Python 3 refuses to
    compile: the module is compiled from its source with such ``print NAME`` lines read as ``print(NAME)``;
    nothing else of it changes, and no file is written. Its loss moves a tensor of zeros to the GPU
    (``torch.zeros(...).cuda()``) whatever the input's device: where torch sees no GPU, ``Tensor.cuda``
    returns the tensor itself in this (the port's own) process, so that the loss runs on the CPU."""
    import re
    import types

    port_dir = os.path.abspath(port_dir)
    path = os.path.join(port_dir, "utils.py")
    with open(path) as f:
        source, fixes = re.subn(r"^(\s*)print (\w+)\s*$", r"\1print(\2)", f.read(), flags=re.M)
    import torch

    if not torch.cuda.is_available():  # before the module runs: it could call .cuda() at import
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    utils = types.ModuleType("utils")
    utils.__file__ = path
    exec(compile(source, path, "exec"), utils.__dict__)
    sys.modules["utils"] = utils  # what the port's `from utils import *` finds
    sys.path.insert(0, port_dir)  # its other modules are top-level too: model, layers
    from model import PixelCNN  # type: ignore[import-not-found]

    return PixelCNN, utils.discretized_mix_logistic_loss


def _port_worker(port_dir: str, size: tuple[int, int, int, int], repeats: int, threads: int | None) -> dict[str, Any]:
    import torch

    PixelCNN, discretized_mix_logistic_loss = _import_port(port_dir)

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    R, F_, B, S = size
    model = PixelCNN(nr_resnet=R, nr_filters=F_, nr_logistic_mix=M, input_channels=3)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = np.round(np.random.default_rng(0).uniform(-1, 1, (B, S, S, 3)) * 127.5).astype(np.float32) / np.float32(127.5)
    given = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # the port is NCHW

    def step() -> None:
        output = model(given)
        loss = discretized_mix_logistic_loss(given, output)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times = _timeit(step, lambda: None, repeats, 2)
    with torch.no_grad():
        loss = float(discretized_mix_logistic_loss(given, model(given)))
    if not np.isfinite(loss):
        raise RuntimeError(f"the port's loss after {repeats + 2} steps is {loss}")
    return {"step_ms": _ms(times), "framework": f"torch {torch.__version__} on CPU", "threads": threads, "loss": loss}


def _commit(port_dir: str) -> str:
    try:
        return subprocess.run(["git", "-C", port_dir, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout; name it yourself)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port-dir", help="a checkout of github.com/pclucas14/pixel-cnn-pp (model.py, layers.py, utils.py)")
    p.add_argument("--port-commit", help="the port's commit, where --port-dir is not a git checkout (git archive)")
    p.add_argument("--size", action="append", choices=["tiny", "moderate", "pixelcnn"], help="repeatable; default: moderate")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on both sides (default: torch's own)")
    p.add_argument("--timeout", type=float, default=1200.0)
    p.add_argument("--json", default="benchmark_train_port.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        if spec["variant"] == "port":
            print(json.dumps(_port_worker(spec["port_dir"], tuple(spec["size"]), spec["repeats"], spec.get("threads"))))
        else:
            from benchmarks.bench_train import _worker

            print(json.dumps(_worker("torch", tuple(spec["size"]), spec["repeats"], spec.get("threads"))))
        return 0
    if not args.port_dir:
        p.error("--port-dir is required")
    missing = [f for f in ("model.py", "layers.py", "utils.py") if not os.path.isfile(os.path.join(args.port_dir, f))]
    if missing:
        print(f"error: --port-dir {args.port_dir}: expected a checkout of pclucas14/pixel-cnn-pp; missing {', '.join(missing)}",
              file=sys.stderr)
        return 2
    port_dir = os.path.abspath(args.port_dir)
    print(f"PixelCNN++ training step, twin (torch_impl) against pclucas14/pixel-cnn-pp at {args.port_commit or _commit(port_dir)}; M={M}, "
          f"concat_elu, dropout 0.5, float32, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"threads {args.threads or 'default'}")
    print(f"{'size':<9} {'R, F, B, HxW':<16} {'side':<6} {'step ms':>9} {'min ms':>9}")
    rows = []
    for name in args.size or ["moderate"]:
        R, F_, B, S = SIZES[name]
        got = {}
        for side in ("port", "twin"):
            row = {"size": name, "shape": SIZES[name], "side": side,
                   **run_worker("benchmarks.bench_train_port", {"variant": side, "size": SIZES[name], "repeats": args.repeats,
                                                                "threads": args.threads, "port_dir": port_dir}, args.timeout)}
            rows.append(row)
            if "error" in row:
                print(f"{name:<9} {f'{R}, {F_}, {B}, {S}x{S}':<16} {side:<6} error: {row['error'][:120]}")
                continue
            got[side] = row["step_ms"]["median"]
            print(f"{name:<9} {f'{R}, {F_}, {B}, {S}x{S}':<16} {side:<6} {row['step_ms']['median']:9.1f} {row['step_ms']['min']:9.1f}")
        if len(got) == 2:
            print(f"{name}: twin / port {got['twin'] / got['port']:.2f} (medians of {args.repeats} steps each, after 2 warm-up steps)")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
