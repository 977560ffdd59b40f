"""Train a tiny PixelCNN++ on real images offline: scikit-learn's bundled digits (docs/training.md).

scikit-learn ships 1797 handwritten digits, 8x8 pixels of 0..16 (``sklearn.datasets.load_digits``,
no download). This script scales them to 0..255, replicates the grey to three channels, writes a
train/test split as ``.npz`` files with ``x`` uint8 ``[N, 8, 8, 3]`` (and ``y``, the digit), runs
``python -m parity train`` on them with ``--test-data``, and prints the test bits/dim with the averaged
weights as the run's log recorded it every ``--sample-every`` steps.

Needs scikit-learn (``pip install "gated-resnet-parity[examples]"`` or ``pip install scikit-learn``);
the package itself does not.

    python examples/train_digits.py --out /tmp/digits --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

LEVELS = 16  # load_digits' pixels are 0..16


def digits_npz(folder: str, test: int, seed: int) -> tuple[str, str]:
    """Write ``train.npz`` and ``test.npz`` (``x`` uint8 [N, 8, 8, 3], ``y`` int64) into ``folder``;
    ``test`` images, drawn by ``default_rng(seed)``, go to the test split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("error: this example needs scikit-learn: pip install scikit-learn")
    digits = load_digits()
    grey = np.rint(digits.images * (255.0 / LEVELS)).astype(np.uint8)  # [N, 8, 8], 0..255
    x = np.repeat(grey[..., None], 3, axis=-1)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    paths = []
    for name, idx in (("train", order[test:]), ("test", order[:test])):
        path = os.path.join(folder, f"{name}.npz")
        np.savez(path, x=x[idx], y=y[idx])
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the .npz files and the run (OUT/run)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--sample-every", type=int, default=50, help="log the test bits/dim every N steps")
    p.add_argument("--test", type=int, default=297, help="images held out for the test bits/dim")
    p.add_argument("--nr-resnet", type=int, default=1)
    p.add_argument("--nr-filters", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--polyak-decay", type=float, default=0.99,
                   help="the averaged weights' decay (the original's 0.9995 barely moves them in a few hundred steps)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", default="torch", choices=["torch", "tf"])
    p.add_argument("--conditional", action="store_true", help="class-conditional: the digit's one-hot label as h")
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    train, test = digits_npz(args.out, args.test, args.seed)
    run = os.path.join(args.out, "run")
    command = [sys.executable, "-m", "parity", "train", "--data", train, "--test-data", test, "--out", run,
               "--steps", str(args.steps), "--sample-every", str(args.sample_every), "--batch-size", str(args.batch_size),
               "--nr-resnet", str(args.nr_resnet), "--nr-filters", str(args.nr_filters), "--seed", str(args.seed),
               "--polyak-decay", str(args.polyak_decay), "--backend", args.backend] + (["--conditional"] if args.conditional else [])
    print(" ".join(command), flush=True)
    began = time.perf_counter()
    done = subprocess.run(command)
    seconds = time.perf_counter() - began
    if done.returncode:
        return done.returncode
    with open(os.path.join(run, "log.jsonl")) as f:
        entries = [json.loads(line) for line in f]
    print("step  train bits/dim  test bits/dim (averaged weights)")
    for e in entries:
        if "test_bpd_ema" in e:
            print(f"{e['step']:4d}  {e['bpd']:14.4f}  {e['test_bpd_ema']:.4f}")
    print(f"{args.steps} steps in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
