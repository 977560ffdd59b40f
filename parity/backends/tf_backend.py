"""The TensorFlow side of the parity harness: weights in and out of ``tf_impl``, and one case's tensors.

Imports nothing from PyTorch. Arrays are NHWC and in the TF layout already; the Keras path of each
tensor comes from the weight table (``parity.weights``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_impl  # noqa: E402
from parity.weights import EMA_SUFFIX, check_tensors, normalize_config, weight_table  # noqa: E402

NAME = "tf"


@contextlib.contextmanager
def parity_mode(device: str, tf32: bool = False) -> Iterator[dict[str, Any]]:
    """TF32 off (unless ``tf32``, to show what it costs), no XLA (pitfalls 29, 31); yields the settings."""
    if _tf_device(device) != "/CPU:0" and not tf.config.list_physical_devices("GPU"):
        raise ValueError(f"expected a GPU for device={device!r}; TensorFlow {tf.__version__} sees none here")
    saved = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    try:
        yield {"tensorflow": tf.__version__, "device": device, "tf32": tf32, "jit_compile": False}
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(saved)


def _variables(block: tf_impl.GatedResnet) -> dict[str, Any]:
    prefix = block.path + "/"
    return {v.path[len(prefix):]: v for v in block.weights}


def build(config: Mapping[str, Any], dtype: str = "float32", device: str = "cpu") -> tf_impl.GatedResnet:
    with tf.device(_tf_device(device)):
        block = tf_impl.GatedResnet(**normalize_config(config), dtype=dtype)
        block.build()
    return block


def _tf_device(device: str) -> str:
    return "/GPU:0" if device.startswith("cuda") or device.startswith("gpu") else "/CPU:0"


def _config(block: tf_impl.GatedResnet) -> dict[str, Any]:
    return {k: v for k, v in block.get_config().items() if k in normalize_config({"num_filters": 1})}


def export_weights(block: tf_impl.GatedResnet) -> dict[str, np.ndarray]:
    """The block's tensors under their TF1 names (shadows included when it has them)."""
    variables = _variables(block)
    return {row.tf1_name: variables[row.keras_path].numpy() for row in weight_table(_config(block))}


def import_weights(block: tf_impl.GatedResnet, tensors: Mapping[str, np.ndarray], initialized: bool = True) -> None:
    """Load canonical tensors; all-or-nothing. Missing shadows (for a block with ``polyak_decay``)
    restart as copies of the raw weights, as creating the average would."""
    table = weight_table(_config(block))
    check_tensors(table, tensors, allow_missing_shadows=True, target_dtype=block.variable_dtype)
    variables = _variables(block)
    values = {}
    for row in table:
        source = row.tf1_name
        if source not in tensors and source.endswith(EMA_SUFFIX):
            source = source[: -len(EMA_SUFFIX)]
        values[row.keras_path] = np.asarray(tensors[source], dtype=variables[row.keras_path].dtype)
    for path, value in values.items():
        variables[path].assign(value)
    for layer in block.wn_layers:
        layer.initialized.assign(bool(initialized))


def _set_live(block: tf_impl.GatedResnet, tensors: Mapping[str, np.ndarray]) -> None:
    variables = _variables(block)
    for row in weight_table(_config(block), shadows=False):
        var = variables[row.keras_path]
        var.assign(np.asarray(tensors[row.tf1_name], dtype=var.dtype))


def _tensor(a: np.ndarray | None, dtype: str) -> tf.Tensor | None:
    return None if a is None else tf.constant(a, dtype=dtype)


def run_case(case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """Every compared tensor of one case, NHWC and TF layout, keyed ``<part>/<name>``."""
    with tf.device(_tf_device(device)):
        return _run_case(case, dtype, device)


def _run_case(case: Any, dtype: str, device: str) -> dict[str, np.ndarray]:
    from parity.case import init_outputs, shadow_outputs

    arr = case.arrays
    weights = case.weights()
    raw_rows = weight_table(case.config, shadows=False)
    out: dict[str, np.ndarray] = {}

    block = build(case.config, dtype, device)
    import_weights(block, weights, initialized=True)
    x, a, h = (_tensor(arr.get(k), dtype) for k in ("x", "a", "h"))
    variables = _variables(block)

    # Forward stages and gradients.
    inputs = {k: t for k, t in (("x", x), ("a", a), ("h", h)) if t is not None}
    params = [variables[r.keras_path] for r in raw_rows]
    with tf.GradientTape() as tape:
        tape.watch(list(inputs.values()))
        stages = block.stages(x, a, h, training=False)
        loss = tf.reduce_sum(stages["out"] * _tensor(arr["cotangent"], dtype))
    grads = tape.gradient(loss, list(inputs.values()) + params)
    out.update({f"forward/{k}": v.numpy() for k, v in stages.items()})
    for key, g in zip(list(inputs) + [r.tf1_name for r in raw_rows], grads):
        out[f"grad/{key}"] = tf.convert_to_tensor(g).numpy()

    out["ema_forward/out"] = block(x, a, h, use_ema=True).numpy()
    if "dropout_mask" in arr:
        out["dropout/out"] = block(x, a, h, training=True, dropout_mask=_tensor(arr["dropout_mask"], dtype)).numpy()

    fresh = build(case.config, dtype, device)
    import_weights(fresh, {r.tf1_name: weights[r.tf1_name] for r in raw_rows}, initialized=False)
    init_out = fresh.initialize(x, a, h, dropout_mask=_tensor(arr.get("dropout_mask"), dtype)).numpy()
    out.update(init_outputs(export_weights(fresh), case.config))
    out["init/out"] = init_out  # after g, b: in the order the init computes them

    _set_live(block, weights)
    tf_impl.reset_averages(block)
    for live, num_updates in case.ema_schedule():
        _set_live(block, live)
        tf_impl.update_averages(block, num_updates=num_updates)
    out.update(shadow_outputs(export_weights(block), case.config))
    out["ema/out"] = block(x, a, h, use_ema=True).numpy()
    return out


def describe(device: str) -> str:
    return f"tensorflow {tf.__version__} (keras {keras.__version__}) on {'GPU' if 'GPU' in _tf_device(device) else 'CPU'}"


def apply(block: tf_impl.GatedResnet, inputs: Mapping[str, np.ndarray], use_ema: bool = False, init: bool = False) -> np.ndarray:
    """Run the block (inference) or its data-dependent init on NHWC inputs. The forward runs as a
    ``tf.function`` graph: on the CPU that reproduces the original TF1 graph bit for bit (eager
    execution does not, by up to an ulp or two: the graph fuses ops; ``tests/test_tf1.py``)."""
    x, a, h = (_tensor(inputs.get(k), block.variable_dtype) for k in ("x", "a", "h"))
    if init:
        return block.initialize(x, a, h).numpy()
    return tf.function(lambda x, a, h: block(x, a, h, use_ema=use_ema), autograph=False)(x, a, h).numpy()


def run_layer_case(case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """One weight-normalised conv layer (``parity.case.LayerCase``): forward, gradients, init."""
    from parity.case import layer_cotangent

    cls = getattr(tf_impl, case.class_name)
    w = case.weights()
    with tf.device(_tf_device(device)):
        layer = cls(case.in_channels, case.num_filters, stride=case.stride, dtype=dtype)
        layer.build()
        for name in ("V", "g", "b"):
            getattr(layer, name).assign(w[name].astype(dtype))
        layer.initialized.assign(True)
        x = tf.constant(case.arrays["x"], dtype=dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.constant(layer_cotangent(case, tuple(y.shape)), dtype=dtype))
        grads = tape.gradient(loss, [x, layer.V, layer.g, layer.b])
        fresh = cls(case.in_channels, case.num_filters, stride=case.stride, dtype=dtype)
        fresh.build()
        fresh.V.assign(w["V"].astype(dtype))
        init_out = fresh.initialize(x)
    out = {"forward/out": y.numpy()}
    out.update({f"grad/{k}": tf.convert_to_tensor(g).numpy() for k, g in zip(("x", "V", "g", "b"), grads)})
    out.update({"init/g": fresh.g.numpy(), "init/b": fresh.b.numpy(), "init/out": init_out.numpy()})
    return out
