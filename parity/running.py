"""Running weight files: apply a block or a network from a file to inputs, draw samples from a
network file, load a file into a live block or network of either twin.

``apply_file`` and ``sample_file`` keep the calling process free of both frameworks, as the parity
check does (:mod:`parity.isolation`): the file is read where its format can be read (Keras files and
TF1 checkpoints in TensorFlow's worker, the safetensors formats here, with NumPy), the twin of the
file's kind (:mod:`parity.kinds`) is built in the chosen backend's worker in the file's dtype and run
there in parity mode (TF32 off), and an output file is written where its format can be written.
Arrays in and out are NHWC NumPy. ``load_into`` works on a net the caller already holds.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from parity import isolation
from parity.backends import backend_of, build_loaded, get_backend
from parity.formats import detect_format, format_for_writing, read_any, write_any
from parity.formats.base import Loaded
from parity.kinds import check_input_shapes, kind_of
from parity.table import EMA_SUFFIX, dtype_of


def _check_ema(weights: str, tensors: Mapping[str, np.ndarray]) -> None:
    if not any(k.endswith(EMA_SUFFIX) for k in tensors):
        raise ValueError(f"--ema: {weights} holds no averaged weights (no {EMA_SUFFIX} tensors); run without --ema")


def _check_float(name: str, value: Any) -> None:
    """Arrays in from files are float32 or float64: int, bool, string, complex or object arrays are
    refused, never cast."""
    dtype = np.asarray(value).dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"expected `{name}` of dtype float32 or float64 (no silent casts); received dtype {dtype}")


def _check_overflow(weights: str, tensors: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> None:
    """Finite weights and inputs that give NaN or Inf are an overflow (e.g. ``g = 3e38``): refused
    rather than written with exit 0 (where the NaNs land depends on each backend's order of
    operations, so the twins do not agree on it). NaN or Inf given in the inputs propagate as given."""
    if not all(np.isfinite(v).all() for v in (*tensors.values(), *inputs.values())):
        return
    bad = {k: int(np.size(v) - np.isfinite(v).sum()) for k, v in outputs.items()}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        largest = max(float(np.max(np.abs(v))) if np.size(v) else 0.0 for v in tensors.values())
        raise ValueError(f"{weights}: finite weights and inputs gave NaN/Inf ({', '.join(f'{n} in {k}' for k, n in bad.items())}): "
                         f"the computation overflows {dtype_of(tensors)} (largest weight magnitude {largest:.3g}); nothing written")


NEEDS_TF = ("keras", "tf1")  # formats only TensorFlow reads and writes


def _read(path: str) -> Loaded:
    """``read_any`` where the format can be read: TensorFlow's worker for Keras files and TF1 checkpoints."""
    if detect_format(path) in NEEDS_TF:
        return isolation.call("tf", "parity.formats:read_any", path)
    return read_any(path)


def _write(path: str, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> None:
    """``write_any`` where the format can be written (TensorFlow's worker for Keras and TF1)."""
    if format_for_writing(path).name in NEEDS_TF:
        isolation.call("tf", "parity.formats:write_any", path, dict(tensors), dict(config), True)
    else:
        write_any(path, tensors, config, True)


def apply_file(weights: str, inputs: Mapping[str, np.ndarray], backend: str = "torch", use_ema: bool = False,
               init: bool = False, save_weights: str | None = None, device: str = "cpu") -> dict[str, np.ndarray]:
    """Apply the block or network in ``weights`` to NHWC ``inputs`` (the kind's inputs: ``x`` and
    optionally ``a``, ``h`` for a block, ``h`` for a network); returns ``{'out': ...}``, and for a
    network its summed ``loss`` too. With ``init``, the data-dependent init runs on this batch (and
    ``save_weights`` writes the initialised weights)."""
    if "x" not in inputs:
        raise ValueError(f"expected inputs to contain 'x'; received {sorted(inputs)}")
    loaded = _read(weights)
    names = kind_of(loaded.config).inputs
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise ValueError(f"expected inputs named {', '.join(names)}; received also {unknown}")
    for k, v in inputs.items():
        _check_float(k, v)
    check_input_shapes(loaded.config, inputs)
    if np.shape(inputs["x"])[0] == 0:  # torch wrote an empty output and loss -0, tf raised
        raise ValueError(f"expected `x` with at least one image; received shape {np.shape(inputs['x'])}")
    tensors, config, initialized = loaded.tensors, loaded.config, loaded.initialized
    if use_ema:
        _check_ema(weights, tensors)
    if init and initialized:
        raise ValueError(f"{weights}: the weights are already initialised; --init runs the data-dependent init once")
    if save_weights and not init:
        raise ValueError("--save-weights goes with --init")
    if save_weights:
        format_for_writing(save_weights)  # a name no format writes is refused before any work
    outputs, exported = isolation.call(backend, "parity.running:apply_here", backend, loaded, dict(inputs), use_ema, init,
                                       bool(save_weights), device)
    _check_overflow(weights, tensors, inputs, outputs)
    if save_weights:
        _write(save_weights, exported, config)
    return outputs


def apply_here(backend: str, loaded: Loaded, inputs: Mapping[str, np.ndarray], use_ema: bool, init: bool,
               export: bool, device: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """:func:`apply_file`'s run, in the backend's process: the outputs, and the weights after it with ``export``."""
    module = get_backend(backend)
    with module.parity_mode(device):  # TF32 off, as in the parity check; a missing CUDA device is named here
        built = build_loaded(module, loaded.tensors, loaded.config, loaded.initialized, device)
        outputs = module.apply(built, inputs, use_ema=use_ema, init=init)
        return outputs, module.export_weights(built) if export else None


def sample_file(weights: str, noise: Mapping[str, np.ndarray], backend: str = "torch", use_ema: bool = False,
                h: np.ndarray | None = None, device: str = "cpu", progress: bool = False,
                naive: bool = False) -> dict[str, np.ndarray]:
    """Draw images from the network in ``weights`` with the noise ``u_mix`` [B, H, W, M] and ``u_value``
    [B, H, W, 3] (position (i, j) used at step (i, j)); returns ``{'x': [B, H, W, 3]}``. The cached
    sampler draws them where the network has one; ``naive``: the naive sampler (the reference)."""
    from gated_spec.model import IMAGE_CHANNELS, check_image_size

    loaded = _read(weights)
    if not kind_of(loaded.config).network:
        raise ValueError(f"{weights}: holds one block; sampling needs a model file (convert ... --model pixelcnn_pp)")
    M = loaded.config["nr_logistic_mix"]
    missing = sorted({"u_mix", "u_value"} - set(noise))
    if missing:
        raise ValueError(f"expected the noise file to hold u_mix [B, H, W, {M}] and u_value [B, H, W, 3]; missing {missing}")
    for name in ("u_mix", "u_value"):
        _check_float(name, noise[name])
    if h is not None:
        _check_float("h", h)
    u_mix, u_value = np.asarray(noise["u_mix"]), np.asarray(noise["u_value"])
    if u_mix.ndim != 4 or u_mix.shape[-1] != M or u_value.shape != (*u_mix.shape[:3], IMAGE_CHANNELS):
        raise ValueError(f"expected u_mix [B, H, W, {M}] and u_value [B, H, W, 3] with the same B, H, W; received "
                         f"{u_mix.shape} and {u_value.shape}")
    check_image_size("sample", u_mix.shape[1], u_mix.shape[2])
    if u_mix.shape[0] == 0:
        raise ValueError(f"expected noise for at least one image; received u_mix of shape {u_mix.shape}")
    dtype = dtype_of(loaded.tensors)
    noise = {"u_mix": u_mix.astype(dtype), "u_value": u_value.astype(dtype)}
    for name, u in noise.items():  # after the cast to the model's dtype: 1 - 1e-10 becomes 1.0 in float32
        if not (np.all(u > 0) and np.all(u < 1)):
            raise ValueError(f"expected {name} strictly inside (0, 1) in the model's {dtype} (the original draws from "
                             f"[1e-5, 1 - 1e-5)); received values in [{u.min()}, {u.max()}]")
    if use_ema:
        _check_ema(weights, loaded.tensors)
    h = None if h is None else np.asarray(h, dtype)
    x = isolation.call(backend, "parity.running:sample_here", backend, loaded, noise, h, use_ema, progress, device, naive)
    _check_overflow(weights, loaded.tensors, {**noise, **({} if h is None else {"h": h})}, {"x": x})
    return {"x": x}


def sample_here(backend: str, loaded: Loaded, noise: Mapping[str, np.ndarray], h: np.ndarray | None, use_ema: bool,
                progress: bool, device: str, naive: bool = False) -> np.ndarray:
    """:func:`sample_file`'s draw, in the backend's process."""
    module = get_backend(backend)
    with module.parity_mode(device):
        model = build_loaded(module, loaded.tensors, loaded.config, loaded.initialized, device)
        return module.sample(model, noise, h, use_ema, progress, naive)


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
