"""The two backends behind one interface, imported lazily so that either works without the other.

Each module offers ``build``, ``export_weights``, ``import_weights`` and ``run_case`` (see
``parity.backends.torch_backend`` and ``parity.backends.tf_backend``). Arrays crossing this
interface are NumPy, in the original NHWC layout, and weights carry their TF1 names.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = ("tf", "torch")


def get_backend(name: str) -> ModuleType:
    """The backend module for ``'tf'`` or ``'torch'``; a clear error if its framework is missing."""
    if name not in BACKENDS:
        raise ValueError(f"Expected backend 'tf' or 'torch'. Received: backend={name!r}")
    module = {"tf": "parity.backends.tf_backend", "torch": "parity.backends.torch_backend"}[name]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if name == "tf":
            raise ImportError(f"the TensorFlow backend needs tensorflow and keras ({exc}): pip install -e '.[tf]'. "
                              "Without TensorFlow, `verify` checks torch against a recorded reference") from exc
        raise ImportError(f"the PyTorch backend needs torch ({exc}): pip install -e '.[torch]'. "
                          "Without PyTorch, `verify --backend tf` checks TensorFlow against a recorded reference") from exc
