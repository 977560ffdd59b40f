"""Each backend runs in a worker process of its own, so that TensorFlow and PyTorch never share one.

Why: the frameworks' native libraries can crash each other. PyPI's default Linux torch wheel brings
``triton``, and loading triton's LLVM into a process that already holds TensorFlow's aborts it
(``python -c "import tensorflow, triton"``: a segfault with torch 2.13 + triton 3.7, ``LLVM ERROR:
inconsistency in registered CommandLine options`` with torch 2.15 + triton 3.9). torch loads triton
lazily, e.g. in ``torch.use_deterministic_algorithms`` or ``torch.compile``, so no import order makes
a shared process safe. A worker holds one framework and nothing of the other.

A worker refuses to import the other framework (``OTHERS``: an ``ImportError`` that says so), on
every install: a worker function that reaches the other framework, even through a module that
imports it at the top, is a clear error on the ``+cpu`` wheel too, not a segfault only where triton
is installed.

A second gain: the caller's process is left as it was. The parity settings (TF32 off, deterministic
algorithms, TensorFlow's log level) are set in the workers, and the frameworks' RNGs and flags of
the caller are never touched.

``call(backend, "module:function", *args)`` runs a function of this package in ``backend``'s worker
and returns its result, or raises the exception it raised (arguments, results and exceptions travel
by pickle over the worker's stdin and stdout: NumPy arrays, cases, plain data). One worker per
backend is started on first use (``python -m parity.isolation BACKEND``: a fresh interpreter that
imports nothing of the caller's script, so a script needs no ``if __name__ == "__main__"`` guard) and
kept for later calls; ``shutdown()`` stops them (also at exit). What a worker writes to stderr
reaches the caller's stderr, except TensorFlow's start-up notices that say nothing about the run
(``START_UP_NOISE``: the oneDNN notice, "Could not find cuda drivers", "failed call to cuInit" on a
machine without a GPU, the CPU-instructions notice); ``PARITY_TF_LOGS=1`` keeps them.
``PARITY_IN_PROCESS=1`` runs everything in the calling process instead: only for debugging, and
only safe where the two frameworks can share a process (e.g. the ``+cpu`` torch wheel, no triton).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.abc
import importlib.machinery
import os
import pickle
import subprocess
import sys
import threading
from typing import IO, Any

from parity.backends import BACKENDS

IN_PROCESS_ENV = "PARITY_IN_PROCESS"
LOGS_ENV = "PARITY_TF_LOGS"
START_UP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
)
OTHERS = {  # what a worker of each backend must never load: the other framework, its twin, triton
    "tf": ("torch", "triton", "torch_impl", "torchvision"),
    "torch": ("tensorflow", "keras", "tf_keras", "tf_impl"),
}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the parity package lives

_workers: dict[str, subprocess.Popen] = {}
_in_worker: str | None = None  # the backend this process serves, in a worker


class WorkerDied(RuntimeError):
    """A backend's worker process ended while it ran a call (a crash in native code, or killed)."""


def _invoke(target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


def in_process() -> bool:
    """Whether calls run here: inside a worker already, or with ``PARITY_IN_PROCESS=1``."""
    return _in_worker is not None or os.environ.get(IN_PROCESS_ENV, "") == "1"


def _start(backend: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    keep_all = os.environ.get(LOGS_ENV, "") == "1"
    worker = subprocess.Popen([sys.executable, "-m", "parity.isolation", backend], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=None if keep_all else subprocess.PIPE, env=env)
    if not keep_all:
        threading.Thread(target=_forward_stderr, args=(worker.stderr,), daemon=True).start()
    return worker


def _forward_stderr(stream: IO[bytes]) -> None:
    """Copy a worker's stderr to ours, line by line, without the start-up notices."""
    for line in iter(stream.readline, b""):
        if not any(noise.encode() in line for noise in START_UP_NOISE):
            sys.stderr.write(line.decode(errors="replace"))
            sys.stderr.flush()


def call(backend: str, target: str, *args: Any, **kwargs: Any) -> Any:
    """``target(*args, **kwargs)`` (``'module:function'``) in ``backend``'s worker process."""
    if backend not in BACKENDS:
        raise ValueError(f"Expected backend 'tf' or 'torch'. Received: backend={backend!r}")
    if in_process():
        return _invoke(target, args, kwargs)
    worker = _workers.get(backend)
    if worker is None or worker.poll() is not None:
        worker = _workers[backend] = _start(backend)
    assert worker.stdin is not None and worker.stdout is not None
    try:
        pickle.dump((target, args, kwargs), worker.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        worker.stdin.flush()
        ok, value = pickle.load(worker.stdout)
    except (EOFError, BrokenPipeError, pickle.UnpicklingError) as exc:
        _workers.pop(backend, None)
        code = worker.wait()
        raise WorkerDied(f"the {backend} worker process died (exit code {code}) while running {target}: a crash in "
                           f"the framework's native code (its message is above); {IN_PROCESS_ENV}=1 runs it here") from exc
    if not ok:
        raise value
    return value


def shutdown() -> None:
    """Stop the worker processes (the next call starts fresh ones)."""
    while _workers:
        worker = _workers.popitem()[1]
        if worker.stdin is not None:
            worker.stdin.close()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


atexit.register(shutdown)


class _Refuse(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Refuses to load the other framework in a worker (see ``OTHERS``). Probes still see it: the
    spec is the real one (``importlib.util.find_spec`` answers as usual, which torch._dynamo relies on
    to list its skipped directories); only loading it raises."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in OTHERS[self.backend]:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                spec.loader = self
                return spec
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        raise ModuleNotFoundError(f"Expected the {self.backend} worker to load {self.backend} only. Received: an import "
                                  f"of {spec.name!r} (the frameworks' native libraries can crash each other in one "
                                  f"process; run it in its own backend's worker)", name=spec.name)

    def exec_module(self, module: Any) -> None:  # never reached: create_module raises
        raise AssertionError(module)


def _reply(out: IO[bytes], ok: bool, value: Any) -> None:
    try:
        data = pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an exception or result that does not pickle: send what it said
        data = pickle.dumps((False, RuntimeError(f"{type(value).__name__}: {value} (not picklable: {exc})")))
    out.write(data)
    out.flush()


def serve(backend: str) -> None:
    """The worker's loop: read a call from stdin, answer on stdout, until stdin closes. Whatever the
    frameworks print to stdout goes to stderr, so it cannot corrupt the answers."""
    global _in_worker
    _in_worker = backend
    sys.meta_path.insert(0, _Refuse(backend))
    if backend == "tf":
        # Keras wraps an error raised in a layer's call in a report of the call's arguments (its
        # first line "Exception encountered when calling ..."); the caller gets the error itself
        import keras

        keras.config.disable_traceback_filtering()
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        try:
            target, args, kwargs = pickle.load(inp)
        except EOFError:
            return
        try:
            result = _invoke(target, args, kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            _reply(out, False, exc)
        else:
            _reply(out, True, result)


if __name__ == "__main__":
    # serve from the module under its own name, not from ``__main__``: its ``_in_worker`` is the one
    # ``in_process()`` reads, and the refusing loader pickles by that name
    from parity import isolation as _isolation

    _isolation.serve(sys.argv[1])
