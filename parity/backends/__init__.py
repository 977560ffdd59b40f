"""The two backends behind one interface (:class:`parity.backends.interface.Backend`), imported lazily
so that either works without the other.

``get_backend("tf")`` and ``get_backend("torch")`` return the modules ``parity.backends.tf_backend``
and ``parity.backends.torch_backend``; each drives one twin. Arrays crossing the interface are NumPy,
in the original NHWC layout, and weights carry their TF1 names. The parity tools call them inside
each backend's worker process (:mod:`parity.isolation`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Mapping, cast

import numpy as np

if TYPE_CHECKING:
    from parity.backends.interface import Backend

BACKENDS = ("tf", "torch")
TWINS = {"tf": "tf_impl", "torch": "torch_impl"}  # the twin package each backend drives


def get_backend(name: str) -> Backend:
    """The backend module for ``'tf'`` or ``'torch'``; a clear error if its framework is missing."""
    if name not in BACKENDS:
        raise ValueError(f"Expected backend 'tf' or 'torch'. Received: backend={name!r}")
    module = {"tf": "parity.backends.tf_backend", "torch": "parity.backends.torch_backend"}[name]
    try:
        return cast("Backend", importlib.import_module(module))
    except ImportError as exc:
        if name == "tf":
            raise ImportError(f"the TensorFlow backend needs tensorflow and keras ({exc}): pip install -e '.[tf]'. "
                              "Without TensorFlow, `verify` checks torch against a recorded reference") from exc
        raise ImportError(f"the PyTorch backend needs torch ({exc}): pip install -e '.[torch]'. "
                          "Without PyTorch, `verify --backend tf` checks TensorFlow against a recorded reference") from exc


def backend_of(net: Any) -> str:
    """The backend whose twin built ``net`` (a ``tf_impl`` or ``torch_impl`` block or network)."""
    for cls in type(net).__mro__:  # a subclass defined elsewhere counts as the twin it extends
        root = cls.__module__.split(".")[0]
        for name, twin in TWINS.items():
            if root == twin:
                return name
    raise ValueError(f"expected a tf_impl or torch_impl block or network; received a {type(net).__module__}.{type(net).__name__}")


def build_loaded(backend: Backend, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool,
                 device: str = "cpu") -> Any:
    """A backend's net of the config's kind, in the tensors' dtype, holding ``tensors``."""
    from parity.table import dtype_of

    net = backend.build(config, dtype_of(tensors), device)
    backend.import_weights(net, tensors, initialized)
    return net
