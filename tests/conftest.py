"""Shared fixtures. torch is imported before TensorFlow (as Keras' own test suite does), and TF32 is
off for correctness tests. A backend whose framework is missing is skipped, never failed."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

HAVE = {name: importlib.util.find_spec(mod) is not None for name, mod in (("torch", "torch"), ("tf", "tensorflow"))}

if HAVE["torch"]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
if HAVE["tf"]:
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)

BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(not HAVE[name], reason=f"{name} not installed")) for name in ("tf", "torch")
]
BOTH = pytest.mark.skipif(not (HAVE["tf"] and HAVE["torch"]), reason="needs both TensorFlow and PyTorch")
CUDA = pytest.mark.skipif(not (HAVE["torch"] and torch.cuda.is_available()), reason="needs a CUDA GPU")


@pytest.fixture(params=BACKEND_PARAMS)
def twin(request):
    from tests.twins import get_twin

    return get_twin(request.param)
