"""One test interface over both twins: NHWC NumPy in, NHWC NumPy out, weights in the TF layout.

Conversions are the harness backends' own (``parity.backends``), so the tests exercise them too."""

from __future__ import annotations

from typing import Any

import numpy as np

from gated_spec import TORCH_PERM  # TF layout -> torch layout of V, by rank


class TorchTwin:
    name = "torch"

    def __init__(self) -> None:
        import torch

        import torch_impl
        from parity.backends import torch_backend

        self.torch, self.impl, self.backend = torch, torch_impl, torch_backend

    def dtype(self, name: str) -> Any:
        return getattr(self.torch, name)

    def make(self, cls: str, *args: Any, dtype: str = "float64", **kwargs: Any) -> Any:
        return getattr(self.impl, cls)(*args, dtype=self.dtype(dtype), **kwargs)

    def tensor(self, a: np.ndarray | None, dtype: str | None = None, grad: bool = False) -> Any:
        if a is None:
            return None
        a = np.asarray(a)
        return self.backend.to_torch(a, self.dtype(dtype or str(a.dtype)), "cpu", grad=grad)

    def numpy(self, t: Any) -> np.ndarray:
        return self.backend.to_numpy(t)

    def set_weights(self, layer: Any, w: dict[str, np.ndarray]) -> None:
        with self.torch.no_grad():
            for k, v in w.items():
                v = np.asarray(v)
                if k == "V":
                    v = np.transpose(v, TORCH_PERM[v.ndim])
                getattr(layer, k).copy_(self.torch.as_tensor(np.ascontiguousarray(v)))

    def get(self, layer: Any, name: str) -> np.ndarray:
        v = getattr(layer, name).detach().cpu().numpy()
        if name.startswith("V"):
            v = np.transpose(v, np.argsort(TORCH_PERM[v.ndim]))
        return v

    def forward(self, layer: Any, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.numpy(layer(self.tensor(x), **kwargs))

    def initialize(self, layer: Any, x: np.ndarray) -> np.ndarray:
        return self.numpy(layer.initialize(self.tensor(x)))


class TFTwin:
    name = "tf"

    def __init__(self) -> None:
        import tensorflow as tf

        import tf_impl
        from parity.backends import tf_backend

        self.tf, self.impl, self.backend = tf, tf_impl, tf_backend

    def make(self, cls: str, *args: Any, dtype: str = "float64", **kwargs: Any) -> Any:
        layer = getattr(self.impl, cls)(*args, dtype=dtype, **kwargs)
        layer.build()
        return layer

    def tensor(self, a: np.ndarray | None, dtype: str | None = None, grad: bool = False) -> Any:
        a = None if a is None else np.asarray(a)
        return None if a is None else self.backend.to_tf(a, dtype or str(a.dtype))

    def numpy(self, t: Any) -> np.ndarray:
        return np.asarray(t)

    def set_weights(self, layer: Any, w: dict[str, np.ndarray]) -> None:
        for k, v in w.items():
            getattr(layer, k).assign(np.asarray(v))

    def get(self, layer: Any, name: str) -> np.ndarray:
        return getattr(layer, name).numpy()

    def forward(self, layer: Any, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return np.asarray(layer(self.tensor(x), **kwargs))

    def initialize(self, layer: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(layer.initialize(self.tensor(x)))


_CACHE: dict[str, Any] = {}


def get_twin(name: str) -> Any:
    if name not in _CACHE:
        _CACHE[name] = {"torch": TorchTwin, "tf": TFTwin}[name]()
    return _CACHE[name]
