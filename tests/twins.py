"""One test interface over both twins: NHWC NumPy in, NHWC NumPy out, weights in the TF layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from gated_spec import TORCH_PERM  # TF layout -> torch layout of V, by rank


class TorchTwin:
    name = "torch"

    def __init__(self) -> None:
        import torch

        import torch_impl

        self.torch, self.impl = torch, torch_impl

    def dtype(self, name: str) -> Any:
        return getattr(self.torch, name)

    def make(self, cls: str, *args: Any, dtype: str = "float64", **kwargs: Any) -> Any:
        return getattr(self.impl, cls)(*args, dtype=self.dtype(dtype), **kwargs)

    def tensor(self, a: np.ndarray | None, dtype: str | None = None, grad: bool = False) -> Any:
        if a is None:
            return None
        t = self.torch.as_tensor(np.asarray(a), dtype=self.dtype(dtype or str(np.asarray(a).dtype)))
        if t.dim() == 4:
            t = t.permute(0, 3, 1, 2).contiguous()
        return t.requires_grad_(grad)

    def numpy(self, t: Any) -> np.ndarray:
        t = t.detach()
        return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).cpu().numpy()

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

        self.tf, self.impl = tf, tf_impl

    def make(self, cls: str, *args: Any, dtype: str = "float64", **kwargs: Any) -> Any:
        layer = getattr(self.impl, cls)(*args, dtype=dtype, **kwargs)
        layer.build()
        return layer

    def tensor(self, a: np.ndarray | None, dtype: str | None = None, grad: bool = False) -> Any:
        if a is None:
            return None
        return self.tf.constant(np.asarray(a), dtype=dtype or str(np.asarray(a).dtype))

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
