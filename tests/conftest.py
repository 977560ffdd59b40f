"""Shared fixtures. TF32 is off for correctness tests. A backend whose framework is missing is
skipped, never failed.

Some tests hold both frameworks in this one process (twins side by side, the compat.v1 graph
against torch). With PyPI's default torch wheel, triton's native library aborts the process when it
loads after TensorFlow's (``python -c "import tensorflow, triton"``), and torch loads it lazily
(``torch.use_deterministic_algorithms``, ``torch.compile``); importing torch first does not help.
Loaded first, it works. So triton, where installed, is imported here before anything else. The
harness itself does not depend on this: it runs each backend in its own worker process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401  (before TensorFlow, see above)

HAVE = {name: importlib.util.find_spec(mod) is not None for name, mod in (("torch", "torch"), ("tf", "tensorflow"))}

if HAVE["torch"]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
if HAVE["tf"]:
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: where ``parity`` and ``docs/`` live


def run_cli(*args: str, env_extra: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """``python -m parity ARGS`` in a fresh process from the repository, TensorFlow's logs quiet."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "parity", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600, check=check)


BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(not HAVE[name], reason=f"{name} not installed")) for name in ("tf", "torch")
]
BOTH = pytest.mark.skipif(not (HAVE["tf"] and HAVE["torch"]), reason="needs both TensorFlow and PyTorch")
CUDA = pytest.mark.skipif(not (HAVE["torch"] and torch.cuda.is_available()), reason="needs a CUDA GPU")


@pytest.fixture(params=BACKEND_PARAMS)
def twin(request):
    from tests.adapters import get_twin

    return get_twin(request.param)
