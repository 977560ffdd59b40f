"""Training a network as the original's ``train.py`` trains it, in either backend, resumable.

:func:`train` runs in the chosen backend's worker process (:mod:`parity.isolation`). Everything a
step consumes comes from NumPy and is a function of the seed and the step: the batch (the original
loader's order, :class:`parity.data.Batches`) and the dropout keep-masks (drawn from
``default_rng((seed, 1, step))``; the init pass's from ``(seed, 0)``), and so are the weights before
the data-dependent init (``(seed, 2)``). So both twins train on the same
numbers, and a run resumed from a checkpoint replays exactly what an uninterrupted run would have
done: ``DIR/checkpoint.safetensors`` (:mod:`parity.formats.training`) holds the weights, shadows,
Adam's state and the step, written atomically every ``save_every`` steps and at the end, together
with ``DIR/last.safetensors`` (the canonical model file ``run``, ``sample`` and ``convert`` read) and
``DIR/log.jsonl`` (one object per step: ``step``, ``loss`` of the step's forward before its update,
``bpd``, ``lr``). A resumed run drops log lines past its checkpoint's step.

The step itself is the twin's (``torch_impl.train.train_step``, ``tf_impl.train.train_step``): the
summed loss in nats, ``OriginalAdam``, the learning rate ``lr * lr_decay ** s`` at step s, and the
Polyak update from the parameters before Adam's (``ema="pre"``, the original's measured order) or
after it (``"post"``). The shadows start at the weights after the data-dependent init (or as the
``--init-from`` file holds them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gated_spec.training import (ADAM_COUNTER, DEFAULT_EMA_ORDER, DEFAULT_EPS, DEFAULT_LR, DEFAULT_LR_DECAY, DEFAULT_MOM1,
                                 DEFAULT_MOM2, EMA_ORDERS, learning_rate, slot_name)

CHECKPOINT, LAST, LOG = "checkpoint.safetensors", "last.safetensors", "log.jsonl"
CURVES = "curves.png"  # --sample-every's bits/dim curves (beside samples_<step>.png)
# What a resumed run must agree on with its checkpoint (the rest, e.g. --steps or --save-every, may change).
AGREE = ("config", "batch_size", "init_batch_size", "seed", "shuffle", "lr", "lr_decay", "mom1", "mom2", "eps", "ema", "data")


@dataclass
class TrainOptions:
    """One training run. ``config``: a network's config (with its ``model`` key); ``steps`` or ``epochs``."""

    config: dict[str, Any]
    data: str
    out: str
    backend: str = "torch"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    init_batch_size: int = 16
    init_from: str | None = None
    lr: float = DEFAULT_LR
    lr_decay: float = DEFAULT_LR_DECAY
    mom1: float = DEFAULT_MOM1
    mom2: float = DEFAULT_MOM2
    eps: float = DEFAULT_EPS
    seed: int = 1
    shuffle: bool = True
    save_every: int = 100
    ema: str = DEFAULT_EMA_ORDER
    resume: bool = False
    test_data: str | None = None
    sample_every: int | None = None
    device: str = "cpu"
    progress: bool = False
    shadows: str = "own"  # several workers: shadows from each worker's own init (the original's) or the averaged one
    worker_order: str = "shards"  # several workers: shards of one order, or each its own (parity.distributed)
    worker_timeout: float = 300.0  # several workers: seconds a collective waits before the run stops
    conditional: bool = False  # the original's --class_conditional: h = one-hot labels of the data (parity.data.load_labels)
    preloaded: Any = None  # --init-from read by train() where the backend's worker cannot read it (a TF1 checkpoint)

    def check(self) -> None:
        from parity.kinds import kind_of, normalize

        self.config = normalize(self.config)
        if not kind_of(self.config).network:
            raise ValueError("expected a network to train (--model); a block alone has no loss")
        if self.config.get("h_channels"):
            raise ValueError(f"expected no h_channels in the config (--conditional sets it: the labels' one-hot width); "
                             f"received h_channels={self.config['h_channels']}")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"expected one of --steps or --epochs; received steps={self.steps}, epochs={self.epochs}")
        for name in ("steps", "epochs", "batch_size", "save_every", "sample_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"expected --{name.replace('_', '-')} to be a positive integer; received {value!r}")
        if self.init_from is None and self.init_batch_size < 1:
            raise ValueError(f"expected --init-batch-size >= 1 (or --init-from weights); received {self.init_batch_size}")
        from parity.distributed import SHADOWS, WORKER_ORDERS

        if self.shadows not in SHADOWS or self.worker_order not in WORKER_ORDERS or not self.worker_timeout > 0:
            raise ValueError(f"expected --shadows in {list(SHADOWS)}, --worker-order in {list(WORKER_ORDERS)}, --worker-timeout > 0; "
                             f"received {self.shadows!r}, {self.worker_order!r}, {self.worker_timeout!r}")
        self.check_paths()
        if self.ema not in EMA_ORDERS:
            raise ValueError(f"expected --ema-order one of {list(EMA_ORDERS)}; received {self.ema!r}")
        if not (self.lr > 0 and self.lr_decay > 0 and 0 <= self.mom1 < 1 and 0 <= self.mom2 < 1 and self.eps >= 0):
            raise ValueError(f"expected lr > 0, lr_decay > 0, mom1 and mom2 in [0, 1), eps >= 0; received lr={self.lr}, "
                             f"lr_decay={self.lr_decay}, mom1={self.mom1}, mom2={self.mom2}, eps={self.eps}")


    def check_paths(self) -> None:
        """``--out`` is not a folder an input names (the sample PNGs would join a PNG folder's images),
        and none of the files the run writes there (checkpoint, model file, log, curves, and the
        averaged init of a run without ``--init-from``) is an input: ``--init-from DIR/last.safetensors
        --out DIR`` would end by writing over the weights it started from. A ``--resume`` reads no
        ``--init-from`` (the checkpoint holds the run), so that one is not an input then."""
        from parity.atomic import check_outputs, same_file
        from parity.distributed import INIT

        inputs = {"--data": self.data, "--test-data": self.test_data, "--init-from": None if self.resume else self.init_from}
        for name, path in inputs.items():
            if path and os.path.isdir(path) and same_file(self.out, path):
                raise ValueError(f"--out {self.out} is the folder {name} names; expected a folder that holds no input "
                                 f"(the run writes its files there)")
        if os.path.isdir(self.out):  # a folder not made yet holds no input
            written = (CHECKPOINT, LAST, LOG, CURVES, *(() if self.init_from else (INIT,)))
            check_outputs({f"--out's {n}": os.path.join(self.out, n) for n in written}, inputs)


def train(options: TrainOptions) -> dict[str, Any]:
    """Run (or resume) a training run in the backend's worker; returns a summary."""
    from parity import isolation

    options.check()
    if options.init_from and not options.resume:
        from parity.formats import detect_format

        if detect_format(options.init_from) in ("tf1", "keras") and options.backend != "tf":
            # TensorFlow reads these, and the torch worker refuses TensorFlow: read them in the TF worker
            options.preloaded = isolation.call("tf", "parity.training:read_init", options.init_from, options.config)
    return isolation.call(options.backend, "parity.training:train_here", options)


def read_init(path: str, config: dict[str, Any]) -> Any:
    """The ``--init-from`` file as :class:`parity.formats.base.Loaded`, with the original trainer's
    Adam state where a TF1 checkpoint holds it (strictly: slots that do not fit are an error)."""
    import dataclasses

    from parity.formats import read_any

    from parity.formats import detect_format

    loaded = read_any(path, {"model": config["model"], "nonlinearity": config["nonlinearity"]})
    if not loaded.initialized:
        raise ValueError(f"--init-from {path}: the weights have not been through the data-dependent init; "
                         "drop --init-from to run it (--init-batch-size)")
    # a training checkpoint carries its Adam state; a TF1 checkpoint the original trainer's, read strictly
    adam = loaded.adam if detect_format(path) == "training" else _tf1_adam(path, config)
    return dataclasses.replace(loaded, adam=adam)


def _digest(images: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes()).hexdigest()[:16]


def _masks(config: dict[str, Any], seed: tuple[int, ...], batch: int, height: int, width: int) -> list[np.ndarray] | None:
    """The step's keep-masks, one per block in call order (NHWC float32), or none without dropout."""
    from parity.kinds import dropout_mask_shapes

    p = config["dropout_p"]
    if p == 0:
        return None
    rng = np.random.default_rng(seed)
    return [(rng.uniform(size=s) >= p).astype(np.float32) for s in dropout_mask_shapes(config, batch, height, width)]


def _tf1_adam(path: str, config: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The original trainer's Adam state where ``path`` is a TF1 checkpoint that holds it, else ``None``."""
    from parity.formats import detect_format

    if detect_format(path) != "tf1":
        return None
    from parity.formats.tf1 import LazyCheckpoint, map_adam_slots

    return map_adam_slots(LazyCheckpoint(path), config)


def _start_weights(config: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """The weights before the data-dependent init, drawn in NumPy so that both twins start alike: ``V``
    and ``hw`` from N(0, 0.05) as the original's initialisers, ``g`` 1 and ``b`` 0 (the init sets both)."""
    from parity.kinds import table_for

    rng = np.random.default_rng((seed, 2))
    out = {}
    for row in table_for(config, shadows=False):
        leaf = row.tf1_name.rsplit("/", 1)[1]
        value = rng.normal(0.0, 0.05, row.shape) if leaf in ("V", "hw") else np.full(row.shape, 1.0 if leaf == "g" else 0.0)
        out[row.tf1_name] = value.astype(np.float32)
    return out


def _initialise(backend: Any, net: Any, config: dict[str, Any], images: np.ndarray, seed: int, device: str,
                h: np.ndarray | None = None) -> None:
    """The run's start: the weights drawn from ``seed`` (:func:`_start_weights`), then the data-dependent
    init on the uint8 ``images`` (and their ``h``, conditional) with the keep-masks of ``(seed, 0)``."""
    from parity.data import to_model_range
    from parity.kinds import kind_of

    backend.import_weights(net, _start_weights(config, seed), initialized=False)
    x = to_model_range(images)
    given = backend.inputs({"x": x, **({} if h is None else {"h": h})}, kind_of(config).inputs, "float32", device)
    backend.model_initialize(net, given, _masks(config, (seed, 0), len(x), x.shape[1], x.shape[2]))


def initial_weights_here(backend_name: str, config: dict[str, Any], images: np.ndarray, seed: int,
                         h: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The weights (shadows included) a one-worker run with ``seed`` starts from after its init on ``images``
    (uint8; with their ``h``, conditional), in this process: what each worker of a multi-worker run
    computes before the averaging."""
    from parity.backends import get_backend
    from parity.kinds import normalize

    backend, config = get_backend(backend_name), normalize(config)
    with backend.parity_mode("cpu"):
        net = backend.build(config, "float32", "cpu")
        _initialise(backend, net, config, images, seed, "cpu", h)
        return backend.export_weights(net)


def _bits_per_dim(loss: float, batch: int, height: int, width: int) -> float:
    return loss / (math.log(2.0) * batch * height * width * 3)


def _read_log(path: str, upto: int) -> list[str]:
    if not os.path.exists(path):
        return []
    kept = []
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: past the checkpoint anyway
                continue
            if entry.get("step", 0) <= upto:
                kept.append(json.dumps(entry) + "\n")
    return kept


def train_here(options: TrainOptions) -> dict[str, Any]:
    """:func:`train` in this process (what the worker runs); one of several workers where torchrun's
    environment says so (:mod:`parity.distributed`)."""
    from parity.distributed import join

    world = join(options.backend, options.device, options.worker_timeout)
    try:
        return _train_here(options, world)
    finally:
        world.close()


def _train_here(options: TrainOptions, world: Any) -> dict[str, Any]:
    from gated_spec.model import check_image_size
    from parity.atomic import atomic_path
    from parity.backends import get_backend
    from parity.data import load_images, to_model_range
    from parity.distributed import INIT
    from parity.formats.canonical import save_canonical
    from parity.formats.training import read_checkpoint, write_checkpoint

    options.check()
    options.device = world.device(options.device)
    images = load_images(options.data)
    N, H, W, _ = images.shape
    check_image_size("train", H, W)
    test_images = None
    if options.test_data:  # read and checked before any step, not after hours of training
        test_images = load_images(options.test_data, "test")
        check_image_size("train --test-data", test_images.shape[1], test_images.shape[2])
        if len(test_images) < options.batch_size:
            raise ValueError(f"--test-data holds {len(test_images)} images, fewer than one batch of {options.batch_size}")
    labels = test_labels = None
    if options.conditional:
        labels, test_labels = _labels(options, len(images), test_images)
        options.config = {**options.config, "h_channels": int(labels.max()) + 1}
    batches = world.batches(N, options.batch_size, options.seed, options.shuffle, 0 if options.init_from else options.init_batch_size,
                            options.worker_order)
    total = options.steps if options.steps is not None else options.epochs * batches.per_epoch
    run = {"config": options.config, "batch_size": options.batch_size, "init_batch_size": options.init_batch_size,
           "seed": options.seed, "shuffle": options.shuffle, "lr": options.lr, "lr_decay": options.lr_decay,
           "mom1": options.mom1, "mom2": options.mom2, "eps": options.eps, "ema": options.ema,
           "data": {"n": N, "shape": [H, W, 3], "sha256": _digest(images),
                    **({} if labels is None else {"labels_sha256": _digest(labels)})}}
    if world.size > 1:  # recorded, not required to agree on resume: a run may go on with another worker count
        run.update(workers=world.size, worker_order=options.worker_order, shadows=options.shadows)
    ckpt, last, log = (os.path.join(options.out, name) for name in (CHECKPOINT, LAST, LOG))
    adam_state = None
    if options.resume:
        if not os.path.exists(ckpt):
            raise ValueError(f"--resume: {ckpt} does not exist; nothing to resume (start without --resume)")
        loaded, adam_state, state = read_checkpoint(ckpt)
        differ = [k for k in AGREE if json.loads(json.dumps(state.get(k))) != json.loads(json.dumps(run[k]))]
        if differ:
            raise ValueError(f"--resume: the run in {ckpt} has " + ", ".join(f"{k}={state.get(k)!r}" for k in differ)
                             + "; the options give " + ", ".join(f"{k}={run[k]!r}" for k in differ))
        start = int(state["step"])
    else:
        if os.path.exists(ckpt):
            raise ValueError(f"{options.out} already holds a run ({CHECKPOINT}); pass --resume to go on, or another --out")
        start = 0
        if options.init_from:
            if options.preloaded is None:
                options.preloaded = read_init(options.init_from, options.config)
            adam_state = options.preloaded.adam
            if adam_state is not None:  # an original run's Adam state: its step count goes on
                start = int(adam_state[ADAM_COUNTER][0]) - 1
                has_v = any(k.endswith(slot_name("", "v")) for k in adam_state)
                if has_v != (options.mom1 > 0):
                    raise ValueError(f"--init-from {options.init_from}: its Adam state has {'a' if has_v else 'no'} first "
                                     f"moment; the options give mom1={options.mom1}")
    if start > total:
        raise ValueError(f"the run is at step {start}, past the {total} steps asked for (--steps counts from the run's first step)")
    world.agree({**run, "steps": total, "start": start, "backend": options.backend, "init_from": options.init_from,
                 "save_every": options.save_every, "device": options.device.split(":")[0]})
    os.makedirs(options.out, exist_ok=True)
    seed = options.seed + world.rank  # worker r's own starting weights and keep-masks (the original's seed + rank)

    backend = get_backend(options.backend)
    config = options.config
    with backend.parity_mode(options.device), world.scope():
        net = backend.build(config, "float32", options.device)
        if options.resume:
            backend.import_weights(net, loaded.tensors, True)
        elif options.init_from:
            source = options.preloaded
            own = {k: v for k, v in config.items() if k not in ("dropout_p", "polyak_decay")}
            differ = [k for k in own if source.config.get(k) != own[k]]
            if differ:
                raise ValueError(f"--init-from {options.init_from}: holds " + ", ".join(f"{k}={source.config.get(k)!r}" for k in differ)
                                 + "; the options give " + ", ".join(f"{k}={own[k]!r}" for k in differ))
            backend.import_weights(net, {k: v.astype(np.float32) for k, v in source.tensors.items()}, True)
        else:
            _initialise(backend, net, config, images[batches.init()], seed, options.device, _h(config, labels, batches.init()))
            world.average_parameters(net, options.shadows)
            if world.size > 1 and world.rank == 0:
                save_canonical(os.path.join(options.out, INIT), backend.export_weights(net), config, True)
        optimizer = backend.model_optimizer(net, options.lr, options.lr_decay, options.mom1, options.mom2, options.eps)
        if adam_state is not None:
            backend.model_set_optimizer_state(net, optimizer, adam_state)
        world.average_gradients(optimizer)

        if world.rank == 0:  # worker 0 alone writes the log, the checkpoints and the model file
            lines = _read_log(log, start) if options.resume else []
            with atomic_path(log) as tmp, open(tmp, "w") as f:
                f.writelines(lines)

        def save(step: int) -> None:
            if world.rank != 0:
                return
            tensors = backend.export_weights(net)
            write_checkpoint(ckpt, tensors, backend.model_optimizer_state(net, optimizer), config,
                             {**run, "step": step, "backend": options.backend, "steps_per_epoch": batches.per_epoch})
            save_canonical(last, tensors, config, True)

        began, loss = time.perf_counter(), float("nan")
        with open(log if world.rank == 0 else os.devnull, "a") as f:
            for step in range(start + 1, total + 1):
                x = to_model_range(images[batches.batch(step)])
                loss = world.sum(world.step(backend.model_train_step, net, optimizer, x, _h(config, labels, batches.batch(step)),
                                            _masks(config, (seed, 1, step), len(x), H, W), options.ema))
                bpd = _bits_per_dim(loss, len(x) * world.size, H, W)
                entry = {"step": step, "epoch": batches.epoch_of(step), "loss": loss, "bpd": bpd,
                         "lr": learning_rate(options.lr, options.lr_decay, step)}
                snapshot = (options.sample_every is not None and world.rank == 0
                            and (step % options.sample_every == 0 or step == total))
                if snapshot and test_images is not None:
                    entry["test_bpd_ema"] = _test_bits_per_dim(backend, net, config, test_images, options.batch_size, options.device, test_labels)
                f.write(json.dumps(entry) + "\n")
                f.flush()
                if step % options.save_every == 0 or step == total:
                    save(step)
                if snapshot:
                    _figures(backend, net, config, options, step, H, W)
                if options.progress and world.rank == 0:
                    rate = (step - start) / max(time.perf_counter() - began, 1e-9)
                    print(f"\rstep {step}/{total}  loss {loss:.1f}  bits/dim {bpd:.4f}  "
                          f"lr {learning_rate(options.lr, options.lr_decay, step):.3g}  {rate:.2f} steps/s  "
                          f"ETA {(total - step) / rate:.0f} s ", end="", file=sys.stderr, flush=True)
            if options.progress:
                print(file=sys.stderr)
        if start == total:
            save(total)
        summary: dict[str, Any] = {"steps": total, "resumed_from": start, "loss": loss, "out": options.out, "worker": world.rank}
        if test_images is not None and world.rank == 0:
            summary["test_bpd_ema"] = _test_bits_per_dim(backend, net, config, test_images, options.batch_size, options.device, test_labels)
    return summary


def _labels(options: TrainOptions, n: int, test_images: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``--conditional``: the training labels and (with ``--test-data``) the test labels, checked: one per
    image, the test labels below the training labels' count (the original's ``np.amax(labels) + 1``)."""
    from parity.data import load_labels

    labels = load_labels(options.data)
    if len(labels) != n or not n:
        raise ValueError(f"{options.data}: expected one label per image ({n}); received {len(labels)}")
    if test_images is None:
        return labels, None
    test = load_labels(options.test_data, "test")
    if len(test) != len(test_images):
        raise ValueError(f"{options.test_data}: expected one label per image ({len(test_images)}); received {len(test)}")
    if test.size and test.max() > labels.max():
        raise ValueError(f"{options.test_data}: expected labels below {labels.max() + 1} (the training labels'); received {test.max()}")
    return labels, test


def _h(config: dict[str, Any], labels: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The one-hot ``h`` of ``labels[rows]`` for a conditional run, ``None`` otherwise."""
    from parity.data import one_hot

    return None if labels is None else one_hot(labels[rows], config["h_channels"])


SAMPLES = 16  # images in each --sample-every grid


def _figures(backend: Any, net: Any, config: dict[str, Any], options: TrainOptions, step: int, height: int, width: int) -> None:
    """``--sample-every``: ``samples_<step>.png``, a grid of images drawn with the averaged weights from
    NumPy noise of ``(seed, 3, step)`` (the same for both backends, and no training RNG consumed), and
    ``curves.png``, the train bits/dim of every logged step (blue) and the test bits/dim with the
    averaged weights where logged (orange) against the step."""
    from gated_spec.model import SAMPLER_U_MIN
    from parity.images import plot_curves, save_png, save_png_grid

    rng = np.random.default_rng((options.seed, 3, step))
    shape = (SAMPLES, height, width)
    noise = {"u_mix": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (*shape, config["nr_logistic_mix"])).astype(np.float32),
             "u_value": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (*shape, 3)).astype(np.float32)}
    # conditional: the labels 0, 1, ... in turn, as the original's y_sample
    classes = config.get("h_channels") or 0
    h = _h(config, np.arange(SAMPLES) % classes, np.arange(SAMPLES)) if classes else None
    images = backend.sample(net, noise, h, use_ema=config.get("polyak_decay") is not None)
    save_png_grid(images, os.path.join(options.out, f"samples_{step:06d}.png"))
    with open(os.path.join(options.out, LOG)) as f:
        entries = [json.loads(line) for line in f if line.endswith("\n")]
    train = (np.array([e["step"] for e in entries]), np.array([e["bpd"] for e in entries]))
    tested = [e for e in entries if "test_bpd_ema" in e]
    test = (np.array([e["step"] for e in tested]), np.array([e["test_bpd_ema"] for e in tested]))
    save_png(plot_curves([train, test]), os.path.join(options.out, CURVES))


def _test_bits_per_dim(backend: Any, net: Any, config: dict[str, Any], images: np.ndarray, batch_size: int, device: str,
                       labels: np.ndarray | None = None) -> float:
    """Bits per dimension of the test images (given their ``labels``, conditional) under the averaged
    weights (or the live ones without shadows), over whole batches as the original's test loop."""
    from parity.data import to_model_range

    N, H, W, _ = images.shape
    use_ema = config.get("polyak_decay") is not None
    total, seen = 0.0, 0
    for i in range(0, N - batch_size + 1, batch_size):
        given = {"x": to_model_range(images[i:i + batch_size])}
        h = _h(config, labels, np.arange(i, i + batch_size))
        if h is not None:
            given["h"] = h
        total += float(backend.apply(net, given, use_ema=use_ema)["loss"])
        seen += batch_size
    if not seen:
        raise ValueError(f"--test-data holds {N} images, fewer than one batch of {batch_size}")
    return _bits_per_dim(total, seen, H, W)
