"""Does a finished N-worker run compute what one process would? ``python -m parity.distributed_check --data D RUN``.

The check behind ``tests/parity/test_distributed.py``, for any worker count (docs/training.md, "Several
workers"). From the run's folder (``init.safetensors``, ``log.jsonl``, ``checkpoint.safetensors``, all
written by worker 0) and its data, in one process of the run's backend:

* **init**: each worker's single-process init is recomputed (its seed ``seed + r`` and init batch,
  :func:`parity.training.initial_weights_here`); the run's starting weights must be their mean, to the
  rounding of an N-term float32 sum (``N * eps32`` at the tensor's scale; exact for N = 2), and its
  shadows worker 0's own init (``--shadows own``, bit for bit) or the mean (``averaged``);
* **steps**: one process steps from those starting weights on the concatenated batches (worker r's
  images and keep-masks at rows ``[r B, (r + 1) B)``) with the summed loss of the whole batch divided by
  N. Written as the training suite's case (:class:`parity.case.TrainingCase`): the loss is not divided;
  Adam's epsilon is multiplied by ``N**2`` instead, which in exact arithmetic is the same update
  (``(v / N) / sqrt(mg / N**2 + eps) = v / sqrt(mg + N**2 eps)``) with moments N and N**2 times the run's;
  for N a power of two it is the same in float32 too (scaling by a power of two commutes with rounding).
  Each step's loss (the log's sum over the workers) and, at the checkpoint's step, every weight, shadow
  and Adam slot (scaled by N, N**2) must lie within the training suite's bound: ``K`` times the one
  process's own float32 spread (its float32 run and ``MCA_SAMPLES`` runs from inputs and weights moved by
  one ulp, against its float64 run; :mod:`parity.tolerance`), no pooling of the run's own error.

A conditional run (``--conditional``) is checked the same way, each image's one-hot label its ``h``;
its data's labels must be the run's (the digest in its checkpoint).

Needs a run that started here (``init.safetensors``) on a PixelCNN++ and ran with one worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from gated_spec.training import ADAM_SLOTS, slot_name
from parity.tolerance import EPS, MCA, MCA_SAMPLES, Comparison, compare


def check_run(run: str, data: str, mca_samples: int = MCA_SAMPLES) -> tuple[list[dict[str, Any]], list[Comparison]]:
    """(the init's comparisons, the steps' comparisons) of the N-worker run in folder ``run``."""
    from parity.case import TrainingCase
    from parity.data import load_images, load_labels, to_model_range
    from parity.distributed import INIT, WorkerBatches
    from parity.formats.canonical import load_canonical
    from parity.formats.training import read_checkpoint
    from parity.harness import run_backend_here
    from parity.table import EMA_SUFFIX
    from parity.kinds import table_for
    from parity.training import CHECKPOINT, LOG, _digest, _h, _masks, initial_weights_here

    _, adam, state = read_checkpoint(os.path.join(run, CHECKPOINT))
    if "workers" not in state or not os.path.exists(os.path.join(run, INIT)):
        raise ValueError(f"{run}: expected a run of several workers that started here ({INIT} and 'workers' in its checkpoint)")
    config, N, S, backend = state["config"], int(state["workers"]), int(state["step"]), state["backend"]
    if config["model"] != TrainingCase.kind:
        raise ValueError(f"{run}: the check steps a {TrainingCase.kind} network; the run trained {config['model']}")
    images = load_images(data)
    if _digest(images) != state["data"]["sha256"]:
        raise ValueError(f"{data}: not the run's data (digest {_digest(images)}; the run's {state['data']['sha256']})")
    labels = None
    if config.get("h_channels"):  # a conditional run: each image's one-hot label is its h
        labels = load_labels(data)
        if _digest(labels) != state["data"].get("labels_sha256"):
            raise ValueError(f"{data}: not the run's labels (digest {_digest(labels)}; the run's "
                             f"{state['data'].get('labels_sha256')})")
    B, I, seed = state["batch_size"], state["init_batch_size"], state["seed"]
    _, H, W, _ = images.shape
    workers = [WorkerBatches(len(images), B, seed, state["shuffle"], I, r, N, state["worker_order"]) for r in range(N)]
    rows = table_for(config, shadows=False)

    start, _, _ = load_canonical(os.path.join(run, INIT))
    singles = [initial_weights_here(backend, config, images[w.init()], seed + r, _h(config, labels, w.init()))
               for r, w in enumerate(workers)]
    init = []
    for row in rows:
        name = row.tf1_name
        mean = (sum(s[name].astype(np.float64) for s in singles) / N).astype(np.float32)
        bound = N * EPS["float32"] * max(float(np.max(np.abs(s[name]))) for s in singles)
        own = start[name] if state["shadows"] == "averaged" else singles[0][name]
        init.append({"tensor": name, "max_abs": float(np.max(np.abs(start[name] - mean))), "bound": bound,
                     "shadow_identical": bool(np.array_equal(start[name + EMA_SUFFIX], own))})

    arrays = {f"weights/{k}": v for k, v in start.items()}
    for s in range(1, S + 1):
        arrays[f"x/{s}"] = np.concatenate([to_model_range(images[w.batch(s)]) for w in workers])
        if labels is not None:
            arrays[f"h/{s}"] = np.concatenate([_h(config, labels, w.batch(s)) for w in workers])
        masks = [_masks(config, (seed + r, 1, s), B, H, W) for r in range(N)]
        for i in range(len(masks[0] or [])):
            arrays[f"dropout_mask/{s}/{i}"] = np.concatenate([m[i] for m in masks])
    own_config = {k: v for k, v in config.items() if k != "model"}
    case = TrainingCase(f"{N}-workers-vs-one-process", own_config, batch=N * B, height=H, width=W, seed=seed, steps=S,
                        lr=state["lr"], lr_decay=state["lr_decay"], mom1=state["mom1"], mom2=state["mom2"],
                        eps=state["eps"] * N * N, ema=state["ema"], arrays=arrays)
    ref = run_backend_here(backend, case, "cpu", mca_samples=mca_samples)

    with open(os.path.join(run, LOG)) as f:
        losses = {e["step"]: e["loss"] for e in map(json.loads, f)}
    final, _, _ = load_canonical(os.path.join(run, "last.safetensors"))
    ours = {f"step_{s}/loss": np.array([losses[s]], np.float64) for s in range(1, S + 1)}
    for row in rows:
        ours[f"step_{S}/{row.tf1_name}"] = final[row.tf1_name]
        ours[f"step_{S}/{row.tf1_name}{EMA_SUFFIX}"] = final[row.tf1_name + EMA_SUFFIX]
        for slot, scale in zip(ADAM_SLOTS, (N * N, N)):  # mg, v
            if slot_name(row.tf1_name, slot) in adam:
                ours[f"step_{S}/{slot_name(row.tf1_name, slot)}"] = adam[slot_name(row.tf1_name, slot)] * np.float32(scale)
    steps = []
    for tensor, value in ours.items():
        pair_r = {d: ref[d][tensor] for d in ("float32", "float64", MCA) if d in ref}
        steps.append(compare(case.name, tensor, "float32", pair_r, {"float32": value, "float64": value}))
    return init, steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity.distributed_check", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the folder of a finished multi-worker run (train --out)")
    parser.add_argument("--data", required=True, help="the run's --data")
    args = parser.parse_args(argv)
    try:
        init, steps = check_run(args.run, args.data)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad_init = [c for c in init if c["max_abs"] > c["bound"] or not c["shadow_identical"]]
    worst = max(init, key=lambda c: c["max_abs"] / c["bound"] if c["bound"] else 0.0)
    exact = all(c["max_abs"] == 0 for c in init)
    print(f"init: {len(init)} weights {'bit for bit' if exact else 'within N * eps32 at scale'} the mean of the workers' "
          f"own inits (worst {worst['tensor']}: {worst['max_abs']:.3g}, bound {worst['bound']:.3g}); shadows as --shadows "
          f"says: {'yes' if all(c['shadow_identical'] for c in init) else 'NO'}")
    failed = [c for c in steps if not c.passed]
    top = max(steps, key=lambda c: c.ratio)
    print(f"steps: {len(steps)} tensors (each step's loss; weights, shadows, Adam at the last step) against one process "
          f"on the concatenated batches: {len(steps) - len(failed)} within the bound; worst {top.tensor} at "
          f"{top.ratio:.3f} of its bound ({top.max_abs:.3g} <= {top.bound:.3g}, {top.source})")
    for c in failed[:10]:
        print(f"  FAIL {c.tensor}: {c.max_abs:.3g} > {c.bound:.3g}")
    return 1 if failed or bad_init else 0


if __name__ == "__main__":
    sys.exit(main())
