"""Running weight files: apply a block or a network from a file to inputs, draw samples from a
network file, load a file into a live block or network of either twin.

Each reads the file with :func:`parity.formats.read_any`, builds the twin of the file's kind
(:mod:`parity.kinds`) in the file's dtype through the backend interface, and runs it in parity mode
(TF32 off, as in the parity check). Arrays in and out are NHWC NumPy.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from parity.backends import backend_of, build_loaded, get_backend
from parity.formats import read_any, write_any
from parity.kinds import kind_of
from parity.table import EMA_SUFFIX, dtype_of


def _check_ema(weights: str, tensors: Mapping[str, np.ndarray]) -> None:
    if not any(k.endswith(EMA_SUFFIX) for k in tensors):
        raise ValueError(f"--ema: {weights} holds no averaged weights (no {EMA_SUFFIX} tensors); run without --ema")


def apply_file(weights: str, inputs: Mapping[str, np.ndarray], backend: str = "torch", use_ema: bool = False,
               init: bool = False, save_weights: str | None = None, device: str = "cpu") -> dict[str, np.ndarray]:
    """Apply the block or network in ``weights`` to NHWC ``inputs`` (the kind's inputs: ``x`` and
    optionally ``a``, ``h`` for a block, ``h`` for a network); returns ``{'out': ...}``, and for a
    network its summed ``loss`` too. With ``init``, the data-dependent init runs on this batch (and
    ``save_weights`` writes the initialised weights)."""
    if "x" not in inputs:
        raise ValueError(f"expected inputs to contain 'x'; received {sorted(inputs)}")
    loaded = read_any(weights)
    names = kind_of(loaded.config).inputs
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise ValueError(f"expected inputs named {', '.join(names)}; received also {unknown}")
    for k, v in inputs.items():
        if np.asarray(v).dtype not in (np.float32, np.float64):
            raise ValueError(f"expected `{k}` of dtype float32 or float64 (no silent casts); received dtype {np.asarray(v).dtype}")
    tensors, config, initialized = loaded.tensors, loaded.config, loaded.initialized
    if use_ema:
        _check_ema(weights, tensors)
    if init and initialized:
        raise ValueError(f"{weights}: the weights are already initialised; --init runs the data-dependent init once")
    if save_weights and not init:
        raise ValueError("--save-weights goes with --init")
    module = get_backend(backend)
    with module.parity_mode(device):  # TF32 off, as in the parity check; a missing CUDA device is named here
        built = build_loaded(module, tensors, config, initialized, device)
        outputs = module.apply(built, inputs, use_ema=use_ema, init=init)
        if save_weights:
            write_any(save_weights, module.export_weights(built), config, True)
    return outputs


def sample_file(weights: str, noise: Mapping[str, np.ndarray], backend: str = "torch", use_ema: bool = False,
                h: np.ndarray | None = None, device: str = "cpu", progress: bool = False) -> dict[str, np.ndarray]:
    """Draw images from the network in ``weights`` with the noise ``u_mix`` [B, H, W, M] and ``u_value``
    [B, H, W, 3] (position (i, j) used at step (i, j)); returns ``{'x': [B, H, W, 3]}``."""
    from gated_spec.model import IMAGE_CHANNELS, check_image_size

    loaded = read_any(weights)
    if not kind_of(loaded.config).network:
        raise ValueError(f"{weights}: holds one block; sampling needs a model file (convert ... --model pixelcnn_pp)")
    M = loaded.config["nr_logistic_mix"]
    missing = sorted({"u_mix", "u_value"} - set(noise))
    if missing:
        raise ValueError(f"expected the noise file to hold u_mix [B, H, W, {M}] and u_value [B, H, W, 3]; missing {missing}")
    u_mix, u_value = np.asarray(noise["u_mix"]), np.asarray(noise["u_value"])
    if u_mix.ndim != 4 or u_mix.shape[-1] != M or u_value.shape != (*u_mix.shape[:3], IMAGE_CHANNELS):
        raise ValueError(f"expected u_mix [B, H, W, {M}] and u_value [B, H, W, 3] with the same B, H, W; received "
                         f"{u_mix.shape} and {u_value.shape}")
    check_image_size("sample", u_mix.shape[1], u_mix.shape[2])
    for name, u in (("u_mix", u_mix), ("u_value", u_value)):
        if not (np.all(u > 0) and np.all(u < 1)):
            raise ValueError(f"expected {name} strictly inside (0, 1) (the original draws from [1e-5, 1 - 1e-5)); "
                             f"received values in [{u.min()}, {u.max()}]")
    if use_ema:
        _check_ema(weights, loaded.tensors)
    module = get_backend(backend)
    dtype = dtype_of(loaded.tensors)
    with module.parity_mode(device):
        model = build_loaded(module, loaded.tensors, loaded.config, loaded.initialized, device)
        noise = {"u_mix": u_mix.astype(dtype), "u_value": u_value.astype(dtype)}
        return {"x": module.sample(model, noise, None if h is None else np.asarray(h, dtype), use_ema, progress)}


def load_into(net: Any, path: str, overrides: Mapping[str, Any] | None = None, scope: str = "model",
              counters: str | None = None) -> None:
    """Load any supported weight file (canonical, torch, Keras, TF1 checkpoint) into an existing
    ``tf_impl`` or ``torch_impl`` block or network; all or nothing.

    The file's config must match the target's (``dropout_p`` aside, which no file stores, and the
    shadows' decay); shadows missing from the file restart as copies of the raw weights. On any
    error the target is left exactly as it was.
    """
    module = get_backend(backend_of(net))
    own = module.config_of(net)
    kind = kind_of(own)
    loaded = read_any(path, {**(overrides or {}), **({"model": own["model"]} if kind.network else {})}, scope=scope,
                      counters=counters)
    config = loaded.config
    if kind_of(config) is not kind:
        raise ValueError(f"{path}: holds a {kind_of(config).what}; the target is a {kind.what}")
    differ = [k for k in own if k not in ("dropout_p", "polyak_decay") and own[k] != config[k]]
    if differ:
        raise ValueError(f"{path}: holds a {kind.what} with " + ", ".join(f"{k}={config[k]!r}" for k in differ)
                         + f"; the target {kind.what} has " + ", ".join(f"{k}={own[k]!r}" for k in differ))
    module.import_weights(net, loaded.tensors, loaded.initialized)
