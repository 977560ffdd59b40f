"""One test interface over both twins: NHWC NumPy in, NHWC NumPy out, weights in the TF layout.

Tensors cross through the backends' own adapter (``to_tensor``, ``to_numpy`` of
``parity.backends.interface.Backend``) and kernels through ``gated_spec``'s one V permutation, so the
tests exercise them too."""

from __future__ import annotations

from typing import Any

import numpy as np

from gated_spec import v_from_torch, v_to_torch


class Adapter:
    """NHWC NumPy <-> one twin's tensors, by the backend's adapter."""

    name: str

    def __init__(self) -> None:
        from parity.backends import get_backend

        self.backend = get_backend(self.name)
        self.impl = self.backend.IMPL

    def tensor(self, a: np.ndarray | None, dtype: str | None = None, grad: bool = False) -> Any:
        if a is None:
            return None
        a = np.asarray(a)
        return self.backend.to_tensor(a, dtype or str(a.dtype), "cpu", grad=grad)

    def numpy(self, t: Any) -> np.ndarray:
        return self.backend.to_numpy(t)

    def forward(self, layer: Any, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.numpy(layer(self.tensor(x), **kwargs))

    def initialize(self, layer: Any, x: np.ndarray) -> np.ndarray:
        return self.numpy(layer.initialize(self.tensor(x)))


class TorchTwin(Adapter):
    name = "torch"

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.torch = torch

    def dtype(self, name: str) -> Any:
        return getattr(self.torch, name)

    def make(self, cls: str, *args: Any, dtype: str = "float64", **kwargs: Any) -> Any:
        return getattr(self.impl, cls)(*args, dtype=self.dtype(dtype), **kwargs)

    def set_weights(self, layer: Any, w: dict[str, np.ndarray]) -> None:
        with self.torch.no_grad():
            for k, v in w.items():
                v = v_to_torch(np.asarray(v)) if k == "V" else np.asarray(v)
                getattr(layer, k).copy_(self.torch.as_tensor(np.ascontiguousarray(v)))

    def get(self, layer: Any, name: str) -> np.ndarray:
        v = getattr(layer, name).detach().cpu().numpy()
        return v_from_torch(v) if name.startswith("V") else v


class TFTwin(Adapter):
    name = "tf"

    def __init__(self) -> None:
        import tensorflow as tf

        super().__init__()
        self.tf = tf

    def make(self, cls: str, *args: Any, dtype: str = "float64", **kwargs: Any) -> Any:
        layer = getattr(self.impl, cls)(*args, dtype=dtype, **kwargs)
        layer.build()
        return layer

    def set_weights(self, layer: Any, w: dict[str, np.ndarray]) -> None:
        for k, v in w.items():
            getattr(layer, k).assign(np.asarray(v))

    def get(self, layer: Any, name: str) -> np.ndarray:
        return getattr(layer, name).numpy()


_CACHE: dict[str, Any] = {}


def get_twin(name: str) -> Any:
    if name not in _CACHE:
        _CACHE[name] = {"torch": TorchTwin, "tf": TFTwin}[name]()
    return _CACHE[name]
