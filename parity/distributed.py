"""Data-parallel training with the semantics of PixelSNAIL's MPI trainer, on ``torch.distributed``.

``train`` joins a process group when the environment torchrun sets up is there (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on the CPU, NCCL on CUDA (one GPU
per local rank). What the workers do, as the original's ``train.py`` does over MPI
(docs/training.md, "Several workers"):

* worker r draws its starting weights, dropout keep-masks and init batch from ``seed + r``
  (:class:`WorkerBatches`: with the shared order, the r-th ``init_batch_size`` images of the first
  ``N * init_batch_size``) and runs its own data-dependent init; then every trainable parameter is
  averaged across the workers (all-reduce sum, divided by the worker count);
* the shadows are each worker's own and start at its own, un-averaged init (``shadows="own"``, the
  original's); ``shadows="averaged"`` restarts them from the averaged parameters instead;
* each worker's gradient is that of its own summed loss; before Adam's update the gradients are
  averaged (all-reduce sum / worker count) by a step pre-hook on the optimiser, so every worker
  takes the same update and keeps the same Adam state;
* worker 0 alone writes the checkpoint, ``last.safetensors``, ``init.safetensors`` (the averaged
  weights, with worker 0's own shadows) and the log, whose ``loss`` is the sum over the workers.

Explicit all-reduce, not ``DistributedDataParallel``: DDP broadcasts rank 0's parameters *and
buffers* at construction; the twin's shadows are buffers (``<param>_ema``), so DDP would replace
every worker's own shadows with worker 0's and its parameter broadcast would stand in for the
averaging of the inits. Its gradient averaging (sum / world size) is the original's, but the
forward it wraps is only part of the twin's step (the Polyak update and the keep-masks live outside
it). One flat all-reduce per step over all gradients costs what DDP's buckets cost at this size.

A collective that fails (a worker killed, a machine gone, nothing within ``timeout`` seconds) raises
:class:`WorkerLost`, a one-line error; the run goes on from its last checkpoint with ``--resume``.
This module imports torch only inside the functions that need it.
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
    """This process's place among the workers; with ``size == 1`` every method leaves the run as it was."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout: float = DEFAULT_TIMEOUT
    hooks: list[Any] = field(default_factory=list, repr=False)

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
        except RuntimeError as exc:  # torch.distributed.DistBackendError and gloo's errors are RuntimeErrors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise WorkerLost(f"worker {self.rank} of {self.size}: {what} failed ({first}); another worker stopped or did not "
                             f"answer within {self.timeout:g} s; go on from the last checkpoint with --resume") from None

    def agree(self, settings: dict[str, Any]) -> None:
        """Refuse to start unless every worker runs with the same ``settings`` (worker 0's)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        mine = json.dumps(settings, sort_keys=True, default=str)
        everyone: list[Any] = [None] * self.size
        with self._collective("comparing the workers' settings"):
            dist.all_gather_object(everyone, mine)
        first = json.loads(everyone[0])
        for rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                other = json.loads(theirs)
                keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
                raise ValueError(f"worker {rank} runs with " + ", ".join(f"{k}={other.get(k)!r}" for k in keys)
                                 + "; worker 0 with " + ", ".join(f"{k}={first.get(k)!r}" for k in keys)
                                 + ": every worker must be given the same options and data")

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
        """The original's start: every trainable parameter becomes the workers' mean; the shadows stay
        this worker's own init (``"own"``) or restart from the mean (``"averaged"``)."""
        if self.size == 1:
            return
        import torch

        from torch_impl.ema import reset_averages

        with torch.no_grad():
            self._average([p.data for p in net.parameters()], "averaging the initialised parameters")
            if shadows == "averaged":
                reset_averages(net)

    def average_gradients(self, optimizer: Any) -> None:
        """Average the gradients across the workers before each of the optimiser's updates (a step
        pre-hook on torch's optimiser; ``optimizer`` is the torch backend's ``(OriginalAdam, schedule)``)."""
        if self.size == 1:
            return
        adam = optimizer[0]

        def hook(opt: Any, args: Any, kwargs: Any) -> None:
            grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
            self._average(grads, "averaging the gradients")

        self.hooks.append(adam.register_step_pre_hook(hook))

    def sum(self, value: float) -> float:
        """``value`` summed over the workers (the step's loss of the global batch)."""
        if self.size == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.to(f"cuda:{self.local_rank}")
        with self._collective("summing the loss"):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            for handle in self.hooks:
                handle.remove()
            if dist.is_initialized():
                dist.destroy_process_group()


def join(backend: str, device: str, timeout: float = DEFAULT_TIMEOUT) -> World:
    """Join torchrun's process group (gloo on the CPU, NCCL on CUDA) where its environment is set;
    a :class:`World` of one otherwise."""
    rank, size, local = env_world()
    world = World(rank, size, local, timeout)
    if size == 1:
        return world
    if backend != "torch":
        raise ValueError(f"several workers (WORLD_SIZE={size}) train with --backend torch; TensorFlow's multi-worker "
                         "training is not built (docs/training.md, 'Several workers')")
    import datetime

    import torch
    import torch.distributed as dist

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
