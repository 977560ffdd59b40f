"""Data-parallel training with the semantics of PixelSNAIL's MPI trainer, on the frameworks' own engines.

``train`` joins the other workers where the environment says there are some: with ``--backend torch``
torchrun's (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), a
``torch.distributed`` process group, gloo on the CPU and NCCL on CUDA (one GPU per local rank)
(:class:`TorchWorld`); with ``--backend tf`` ``TF_CONFIG``, a ``tf.distribute.MultiWorkerMirroredStrategy``
driving the twin's own step in a custom loop (:class:`TfWorld`). What the workers do, as the original's
``train.py`` does over MPI (docs/training.md, "Several workers"):

* worker r draws its starting weights, dropout keep-masks and init batch from ``seed + r``
  (:class:`WorkerBatches`: with the shared order, the r-th ``init_batch_size`` images of the first
  ``N * init_batch_size``) and runs its own data-dependent init; then every trainable parameter is
  averaged across the workers (all-reduce sum, divided by the worker count);
* the shadows are each worker's own and start at its own, un-averaged init (``shadows="own"``, the
  original's); ``shadows="averaged"`` restarts them from the averaged parameters instead;
* each worker's gradient is that of its own summed loss; before Adam's update the gradients are
  averaged (all-reduce sum / worker count), so every worker takes the same update and keeps the same
  Adam state;
* worker 0 alone writes the checkpoint, ``last.safetensors``, ``init.safetensors`` (the averaged
  weights, with worker 0's own shadows) and the log, whose ``loss`` is the sum over the workers.

torch: explicit all-reduce, not ``DistributedDataParallel``. DDP broadcasts rank 0's parameters *and
buffers* at construction; the twin's shadows are buffers (``<param>_ema``), so DDP would replace
every worker's own shadows with worker 0's and its parameter broadcast would stand in for the
averaging of the inits. Its gradient averaging (sum / world size) is the original's, but the
forward it wraps is only part of the twin's step (the Polyak update and the keep-masks live outside
it). One flat all-reduce per step over all gradients, in a step pre-hook on the optimiser.

A collective that fails (a worker killed, a machine gone, nothing within ``timeout`` seconds) raises
:class:`WorkerLost`, a one-line error; the run goes on from its last checkpoint with ``--resume``.
This module imports a framework only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from parity.data import Batches

SHADOWS = ("own", "averaged")  # where each worker's shadows start: its own init (the original's) or the averaged one
WORKER_ORDERS = ("shards", "independent")  # disjoint shards of one order, or each worker its own (seed + r) order
DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait for the other workers
INIT = "init.safetensors"  # a multi-worker run's averaged starting weights (worker 0's own shadows)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# file:///PATH: meet through a file (a torch FileStore) instead of MASTER_ADDR:MASTER_PORT, whose TCP store
# listens on every interface; the tests use it so that nothing but gloo's 127.0.0.1 sockets listens
INIT_ENV = "PARITY_DIST_INIT"


class WorkerLost(ConnectionError):
    """A collective with the other workers failed: one of them stopped, or none answered in time."""


def env_world() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's environment, ``(0, 1, 0)`` without it."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    try:
        size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", ""))
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError("expected integer RANK and WORLD_SIZE (torchrun's environment); received "
                         f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}") from None
    if not (size >= 1 and 0 <= rank < size and local >= 0):
        raise ValueError(f"expected 0 <= RANK < WORLD_SIZE; received RANK={rank}, WORLD_SIZE={size}")
    return rank, size, local


class WorkerBatches:
    """Worker ``rank``'s part of the original loader's order (:class:`parity.data.Batches`).

    ``order="shards"``: one order over the images (the seed's), whose step s's global batch is its
    next ``size * batch_size`` images, worker r taking the r-th ``batch_size`` of them; the init
    batches likewise (worker r: the r-th ``init_batch_size`` of the first ``size * init_batch_size``),
    so the workers see disjoint shards of each epoch's permutation (with ``shuffle=False``, file order:
    worker r inits on images ``[r I, (r + 1) I)``). ``order="independent"``: each worker its own
    loader seeded ``seed + rank``, as the original's MPI workers (their batches may overlap)."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool, init_batch_size: int, rank: int, size: int,
                 order: str = "shards") -> None:
        if order not in WORKER_ORDERS:
            raise ValueError(f"expected a worker order in {list(WORKER_ORDERS)}; received {order!r}")
        if order == "independent" and not shuffle:
            raise ValueError("--worker-order independent draws each worker's own permutation; with --no-shuffle every "
                             "worker would take the same images (use --worker-order shards)")
        self.rank, self.batch_size, self.init_batch_size = rank, batch_size, init_batch_size
        if order == "independent":
            self._order, self._share = Batches(n, batch_size, seed + rank, shuffle, init_batch_size), 0
        else:
            if size * batch_size > n or size * init_batch_size > n:
                raise ValueError(f"{size} workers take {size} x {batch_size} images a step and {size} x {init_batch_size} "
                                 f"for the init; the data holds {n}")
            self._order, self._share = Batches(n, size * batch_size, seed, shuffle, size * init_batch_size), rank
        self.per_epoch = self._order.per_epoch

    def init(self) -> np.ndarray:
        return self._order.init()[self._share * self.init_batch_size:(self._share + 1) * self.init_batch_size]

    def epoch_of(self, step: int) -> int:
        return self._order.epoch_of(step)

    def batch(self, step: int) -> np.ndarray:
        return self._order.batch(step)[self._share * self.batch_size:(self._share + 1) * self.batch_size]


@dataclass
class World:
    """This process's place among the workers. The base class is the one-worker world: every method
    leaves the run as it was. :class:`TorchWorld` and :class:`TfWorld` talk to the other workers."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout: float = DEFAULT_TIMEOUT
    errors: tuple[type[BaseException], ...] = field(default=(), repr=False)  # what a failed collective raises

    def device(self, device: str) -> str:
        """``cuda`` becomes this worker's GPU, ``cuda:LOCAL_RANK``, when there are several workers."""
        return f"cuda:{self.local_rank}" if self.size > 1 and device == "cuda" else device

    def batches(self, n: int, batch_size: int, seed: int, shuffle: bool, init_batch_size: int, order: str) -> Any:
        if self.size == 1:
            return Batches(n, batch_size, seed, shuffle, init_batch_size)
        return WorkerBatches(n, batch_size, seed, shuffle, init_batch_size, self.rank, self.size, order)

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except self.errors as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise WorkerLost(f"worker {self.rank} of {self.size}: {what} failed ({first}); another worker stopped or did not "
                             f"answer within {self.timeout:g} s; go on from the last checkpoint with --resume") from None

    def scope(self) -> contextlib.AbstractContextManager:
        """Where the network and its optimiser are built (TensorFlow: the strategy's scope)."""
        return contextlib.nullcontext()

    def step(self, fn: Any, *args: Any) -> Any:
        """One training step ``fn(*args)`` on this worker (TensorFlow: in the strategy's replica context)."""
        return fn(*args)

    def agree(self, settings: dict[str, Any]) -> None:
        """Refuse to start unless every worker runs with the same ``settings`` (worker 0's)."""
        if self.size == 1:
            return
        everyone = self._gather_text(json.dumps(settings, sort_keys=True, default=str))
        first = json.loads(everyone[0])
        for rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                other = json.loads(theirs)
                keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
                raise ValueError(f"worker {rank} runs with " + ", ".join(f"{k}={other.get(k)!r}" for k in keys)
                                 + "; worker 0 with " + ", ".join(f"{k}={first.get(k)!r}" for k in keys)
                                 + ": every worker must be given the same options and data")

    def _gather_text(self, text: str) -> list[str]:
        return [text]

    def average_parameters(self, net: Any, shadows: str = "own") -> None:
        """The original's start: every trainable parameter becomes the workers' mean (all-reduce sum /
        N); the shadows stay this worker's own init (``"own"``) or restart from the mean (``"averaged"``)."""

    def average_gradients(self, optimizer: Any) -> None:
        """From now on, the optimiser's updates use the workers' mean gradient (all-reduce sum / N)."""

    def sum(self, value: float) -> float:
        """``value`` summed over the workers (the step's loss of the global batch)."""
        return value

    def close(self) -> None:
        pass


@dataclass
class TorchWorld(World):
    """A worker of a ``torch.distributed`` process group (gloo or NCCL)."""

    hooks: list[Any] = field(default_factory=list, repr=False)

    def _gather_text(self, text: str) -> list[str]:
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.size
        with self._collective("comparing the workers' settings"):
            dist.all_gather_object(everyone, text)
        return everyone

    def _average(self, tensors: list[Any], what: str) -> None:
        """Each tensor becomes the mean over the workers (all-reduce sum / size), in one flat all-reduce."""
        import torch
        import torch.distributed as dist

        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        with self._collective(what):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.size)
        torch._foreach_copy_(tensors, [f.view_as(t) for f, t in zip(flat.split([t.numel() for t in tensors]), tensors)])

    def average_parameters(self, net: Any, shadows: str = "own") -> None:
        import torch

        from torch_impl.ema import reset_averages

        with torch.no_grad():
            self._average([p.data for p in net.parameters()], "averaging the initialised parameters")
            if shadows == "averaged":
                reset_averages(net)

    def average_gradients(self, optimizer: Any) -> None:
        """A step pre-hook on torch's optimiser (``optimizer``: the torch backend's ``(OriginalAdam,
        schedule)``) averages the gradients before each update."""
        adam = optimizer[0]

        def hook(opt: Any, args: Any, kwargs: Any) -> None:
            grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
            self._average(grads, "averaging the gradients")

        self.hooks.append(adam.register_step_pre_hook(hook))

    def sum(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.to(f"cuda:{self.local_rank}")
        with self._collective("summing the loss"):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def close(self) -> None:
        import torch.distributed as dist

        for handle in self.hooks:
            handle.remove()
        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class TfWorld(World):
    """A worker of a ``tf.distribute.MultiWorkerMirroredStrategy`` (one replica per worker, ``TF_CONFIG``).

    Built under the strategy's scope, every variable is a ``MirroredVariable`` whose initial value the
    strategy copies from worker 0; the twin's variables aggregate ``none``, so an assignment outside
    ``strategy.run`` (the weights' import, the data-dependent init) and the Polyak update inside it stay
    this worker's own. Keras 3's TensorFlow optimiser all-reduces the gradients (sum) itself when applied
    in a replica context; its ``loss_scale_factor`` divides them by N first, so the update is the mean."""

    strategy: Any = field(default=None, repr=False)

    def scope(self) -> contextlib.AbstractContextManager:
        return self.strategy.scope()

    def _run(self, what: str, fn: Any, *args: Any) -> Any:
        with self._collective(what):
            return self.strategy.run(fn, args=args)

    def step(self, fn: Any, *args: Any) -> Any:
        return self._run("a training step (its gradients' all-reduce)", fn, *args)

    def _gather_text(self, text: str) -> list[str]:
        import tensorflow as tf

        def gather() -> Any:
            ctx = tf.distribute.get_replica_context()
            length = tf.reduce_max(ctx.all_gather(tf.constant([len(text.encode())], tf.int64), axis=0))
            codes = tf.constant(np.frombuffer(text.encode(), np.uint8).astype(np.int32))
            padded = tf.pad(codes, [[0, length - tf.size(codes, tf.int64)]], constant_values=-1)
            return ctx.all_gather(padded[None], axis=0)

        rows = self._run("comparing the workers' settings", gather).numpy()
        return [bytes(r[r >= 0].astype(np.uint8)).decode() for r in rows]

    def average_parameters(self, net: Any, shadows: str = "own") -> None:
        import tensorflow as tf

        from tf_impl.ema import reset_averages

        variables = net.trainable_variables

        def total() -> Any:
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, [v.value for v in variables])

        sums = self._run("averaging the initialised parameters", total)
        for v, s in zip(variables, sums):
            v.assign(s / self.size)
        if shadows == "averaged":
            reset_averages(net)

    def average_gradients(self, optimizer: Any) -> None:
        optimizer.loss_scale_factor = float(self.size)

    def sum(self, value: float) -> float:
        import tensorflow as tf

        def total() -> Any:
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(value, tf.float64))

        return float(self._run("summing the loss", total))


def _tf_world(timeout: float) -> World:
    """The worker ``TF_CONFIG`` describes (a cluster of ``worker`` tasks), on MultiWorkerMirroredStrategy."""
    try:
        spec = json.loads(os.environ["TF_CONFIG"])
        workers, task = spec["cluster"]["worker"], spec["task"]
        rank, size = int(task["index"]), len(workers)
        if task["type"] != "worker" or set(spec["cluster"]) != {"worker"} or not 0 <= rank < size:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError("expected TF_CONFIG as {\"cluster\": {\"worker\": [\"HOST:PORT\", ...]}, \"task\": {\"type\": \"worker\", "
                         f"\"index\": i}}; received {os.environ['TF_CONFIG'][:200]!r}") from None
    import tensorflow as tf

    world = TfWorld(rank, size, 0, timeout, (tf.errors.OpError,))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    with world._collective("joining the other workers"):
        world.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return world


def join(backend: str, device: str, timeout: float = DEFAULT_TIMEOUT) -> World:
    """Join the other workers where the environment says there are some: torchrun's (``WORLD_SIZE``,
    ...) for torch, gloo on the CPU and NCCL on CUDA; ``TF_CONFIG`` for TensorFlow. A :class:`World`
    of one otherwise."""
    if backend == "tf" and "TF_CONFIG" in os.environ:
        return _tf_world(timeout)
    rank, size, local = env_world()
    if size == 1:
        return World()
    if backend != "torch":
        raise ValueError(f"several workers (WORLD_SIZE={size}) with --backend tf meet through TF_CONFIG, not torchrun's "
                         "environment (docs/training.md, 'Several workers')")
    import datetime

    import torch
    import torch.distributed as dist

    world = TorchWorld(rank, size, local, timeout, (RuntimeError,))  # DistBackendError and gloo's errors are RuntimeErrors
    if os.environ.get("MASTER_ADDR") in LOOPBACK and "GLOO_SOCKET_IFNAME" not in os.environ and os.path.isdir("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo would otherwise pick the address the host name resolves to
    kind = "nccl" if device.startswith("cuda") else "gloo"
    if kind == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        with world._collective("joining the other workers"):
            dist.init_process_group(kind, init_method=os.environ.get(INIT_ENV, "env://"), rank=rank, world_size=size,
                                    timeout=datetime.timedelta(seconds=timeout))
    return world
