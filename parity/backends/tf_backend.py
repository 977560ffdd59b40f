"""The TensorFlow side of the parity harness: weights in and out of ``tf_impl``, and one case's tensors.

Imports nothing from PyTorch. Arrays are NHWC and in the TF layout already; the Keras path of each
tensor comes from the weight table (``parity.weights``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator, Mapping

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_impl  # noqa: E402
from parity import protocol  # noqa: E402
from parity.weights import EMA_SUFFIX, check_tensors, model_weight_table, normalize_config, weight_table  # noqa: E402

IMPL = tf_impl  # the twin this backend drives (parity.protocol calls its Polyak updates)
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


def set_live(block: tf_impl.GatedResnet, tensors: Mapping[str, np.ndarray]) -> None:
    variables = _variables(block)
    for row in weight_table(_config(block), shadows=False):
        var = variables[row.keras_path]
        var.assign(np.asarray(tensors[row.tf1_name], dtype=var.dtype))


def to_tf(a: np.ndarray | None, dtype: str) -> tf.Tensor | None:
    """An array as a constant tensor of ``dtype`` (NHWC, as it comes); ``None`` stays ``None``."""
    return None if a is None else tf.constant(a, dtype=dtype)


def on_device(device: str) -> contextlib.AbstractContextManager:
    return tf.device(_tf_device(device))


def inputs(arrays: Mapping[str, np.ndarray], dtype: str, device: str) -> dict[str, tf.Tensor | None]:
    """``x``, ``a``, ``h`` as tensors of ``dtype`` (NHWC, as they come), ``None`` where absent."""
    return {k: to_tf(arrays.get(k), dtype) for k in ("x", "a", "h")}


def stages_and_gradients(block: tf_impl.GatedResnet, given: Mapping[str, tf.Tensor | None], cotangent: np.ndarray,
                         rows: list) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The forward stages, and the gradients of ``sum(out * cotangent)`` w.r.t. the inputs and ``rows``' weights."""
    variables = _variables(block)
    present = {k: t for k, t in given.items() if t is not None}
    params = [variables[r.keras_path] for r in rows]
    with tf.GradientTape() as tape:
        tape.watch(list(present.values()))
        stages = block.stages(given["x"], given["a"], given["h"], training=False)
        loss = tf.reduce_sum(stages["out"] * tf.constant(cotangent, dtype=block.variable_dtype))
    grads = tape.gradient(loss, list(present.values()) + params)
    names = list(present) + [r.tf1_name for r in rows]
    return ({k: v.numpy() for k, v in stages.items()},
            {k: tf.convert_to_tensor(g).numpy() for k, g in zip(names, grads)})


def forward(block: tf_impl.GatedResnet, given: Mapping[str, tf.Tensor | None], use_ema: bool = False,
            dropout_mask: np.ndarray | None = None) -> np.ndarray:
    """Inference, or with ``dropout_mask`` a training-mode forward on that keep-mask."""
    mask = to_tf(dropout_mask, block.variable_dtype)
    return block(given["x"], given["a"], given["h"], training=mask is not None, use_ema=use_ema,
                 dropout_mask=mask).numpy()


def initialize(block: tf_impl.GatedResnet, given: Mapping[str, tf.Tensor | None], dropout_mask: np.ndarray | None) -> np.ndarray:
    return block.initialize(given["x"], given["a"], given["h"], dropout_mask=to_tf(dropout_mask, block.variable_dtype)).numpy()



def run_case(case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """Every compared tensor of one case, NHWC and TF layout, keyed ``<part>/<name>`` (``parity.protocol``)."""
    return protocol.run_case(sys.modules[__name__], case, dtype, device)


def describe(device: str) -> str:
    return f"tensorflow {tf.__version__} (keras {keras.__version__}) on {'GPU' if 'GPU' in _tf_device(device) else 'CPU'}"


def apply(block: tf_impl.GatedResnet, inputs: Mapping[str, np.ndarray], use_ema: bool = False, init: bool = False) -> np.ndarray:
    """Run the block (inference) or its data-dependent init on NHWC inputs. The forward runs as a
    ``tf.function`` graph: on the CPU that reproduces the original TF1 graph bit for bit (eager
    execution does not, by up to an ulp or two: the graph fuses ops; ``tests/test_tf1.py``)."""
    x, a, h = (to_tf(inputs.get(k), block.variable_dtype) for k in ("x", "a", "h"))
    if init:
        return block.initialize(x, a, h).numpy()
    return tf.function(lambda x, a, h: block(x, a, h, use_ema=use_ema), autograph=False)(x, a, h).numpy()


def build_layer(case: Any, dtype: str, device: str, weights: Mapping[str, np.ndarray], initialized: bool) -> Any:
    """The case's layer with ``weights`` (``V``, and ``g``, ``b`` where given) assigned."""
    layer = getattr(tf_impl, case.class_name)(case.in_channels, case.num_filters, stride=case.stride, dtype=dtype)
    layer.build()
    for name, value in weights.items():
        getattr(layer, name).assign(value.astype(dtype))
    layer.initialized.assign(initialized)
    return layer


def layer_forward_and_gradients(layer: Any, x: np.ndarray, cotangent_for: Any, rows: list) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The layer's output, and the gradients of ``sum(y * cotangent)`` w.r.t. ``x``, ``V``, ``g``, ``b``
    (already in the TF layout: ``rows`` are not needed here)."""
    xt = tf.constant(x, dtype=layer.variable_dtype)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * tf.constant(cotangent_for(tuple(y.shape)), dtype=layer.variable_dtype))
    grads = tape.gradient(loss, [xt, layer.V, layer.g, layer.b])
    return y.numpy(), {k: tf.convert_to_tensor(g).numpy() for k, g in zip(("x", "V", "g", "b"), grads)}


def layer_initialize(layer: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g, b, output) of the layer's init pass on ``x``."""
    out = layer.initialize(tf.constant(x, dtype=layer.variable_dtype))
    return layer.g.numpy(), layer.b.numpy(), out.numpy()


def run_layer_case(case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """One weight-normalised conv layer (``parity.case.LayerCase``): forward, gradients, init (``parity.protocol``)."""
    return protocol.run_layer_case(sys.modules[__name__], case, dtype, device)


# -- whole models (tf_impl.model.PixelCNNpp) -------------------------------------------------------
def build_model(config: Mapping[str, Any], dtype: str = "float32", device: str = "cpu") -> Any:
    from tf_impl.model import PixelCNNpp

    with tf.device(_tf_device(device)):
        model = PixelCNNpp(**config, dtype=dtype)
        model.build()
    return model


def export_model_weights(model: Any) -> dict[str, np.ndarray]:
    """The model's tensors under their TF1 names (model scope)."""
    variables = _variables(model)
    return {row.tf1_name: variables[row.keras_path].numpy() for row in model_weight_table(model.config)}


def import_model_weights(model: Any, tensors: Mapping[str, np.ndarray], initialized: bool = True) -> None:
    """Load canonical tensors into a model; all or nothing (missing shadows restart as copies)."""
    table = model_weight_table(model.config)
    check_tensors(table, tensors, allow_missing_shadows=True, target_dtype=model.variable_dtype)
    variables = _variables(model)
    values = {}
    for row in table:
        source = row.tf1_name if row.tf1_name in tensors else row.tf1_name[: -len(EMA_SUFFIX)]
        values[row.keras_path] = np.asarray(tensors[source], dtype=variables[row.keras_path].dtype)
    for path, value in values.items():
        variables[path].assign(value)
    for layer in model.wn_layers:
        layer.initialized.assign(bool(initialized))


def apply_model(model: Any, inputs: Mapping[str, np.ndarray], use_ema: bool = False, init: bool = False) -> dict[str, np.ndarray]:
    """The network (as a ``tf.function``) or its init pass on NHWC ``x`` (and ``h``): ``out`` and the
    summed ``loss`` (float64 scalar)."""
    from tf_impl.mixture import discretized_mix_logistic_loss

    x, h = to_tf(inputs["x"], model.variable_dtype), to_tf(inputs.get("h"), model.variable_dtype)
    if init:
        out = model.initialize(x, h)
    else:
        out = tf.function(lambda x, h: model(x, h, use_ema=use_ema), autograph=False)(x, h)
    return {"out": out.numpy(), "loss": np.float64(discretized_mix_logistic_loss(x, out).numpy())}


def sample_model(model: Any, noise: Mapping[str, np.ndarray], h: np.ndarray | None = None, use_ema: bool = False,
                 progress: bool = False) -> np.ndarray:
    """Images (B, H, W, 3) drawn with the given ``u_mix`` and ``u_value``."""
    from tf_impl.mixture import sample

    dt = model.variable_dtype
    B, H, W, _ = np.shape(noise["u_mix"])
    return sample(model, B, H, W, to_tf(h, dt), u_mix=to_tf(noise["u_mix"], dt), u_value=to_tf(noise["u_value"], dt),
                  use_ema=use_ema, progress=progress).numpy()


def set_model_live(model: Any, tensors: Mapping[str, np.ndarray]) -> None:
    variables = _variables(model)
    for row in model_weight_table(model.config, shadows=False):
        var = variables[row.keras_path]
        var.assign(np.asarray(tensors[row.tf1_name], dtype=var.dtype))


def model_inputs(arrays: Mapping[str, np.ndarray], dtype: str, device: str) -> dict[str, tf.Tensor | None]:
    return {k: to_tf(arrays.get(k), dtype) for k in ("x", "h")}


def _masks(model: Any, masks: Any) -> list[tf.Tensor] | None:
    return None if masks is None else [to_tf(m, model.variable_dtype) for m in masks]


def model_loss_and_gradients(model: Any, given: Mapping[str, Any], rows: list) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The network output, the summed loss, and its gradients w.r.t. ``rows``' weights."""
    from tf_impl.mixture import discretized_mix_logistic_loss

    variables = _variables(model)
    params = [variables[r.keras_path] for r in rows]
    with tf.GradientTape() as tape:
        out = model(given["x"], given["h"])
        loss = discretized_mix_logistic_loss(given["x"], out)
    grads = tape.gradient(loss, params)
    return out.numpy(), loss.numpy(), {r.tf1_name: tf.convert_to_tensor(g).numpy() for r, g in zip(rows, grads)}


def model_bits_per_dim(loss: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """``tf_impl.mixture.bits_per_dim`` of the summed loss over images of NHWC shape ``x_shape``."""
    from tf_impl import mixture

    B, H, W, _ = x_shape
    return mixture.bits_per_dim(tf.constant(loss), B, H, W).numpy()


def model_forward(model: Any, given: Mapping[str, Any], use_ema: bool = False, masks: Any = None) -> np.ndarray:
    return model(given["x"], given["h"], use_ema=use_ema, dropout_masks=_masks(model, masks)).numpy()


def model_initialize(model: Any, given: Mapping[str, Any], masks: Any = None) -> np.ndarray:
    return model.initialize(given["x"], given["h"], dropout_masks=_masks(model, masks)).numpy()


def run_model_case(case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """Every compared tensor of one whole-model case (``parity.protocol.run_model_case``)."""
    return protocol.run_model_case(sys.modules[__name__], case, dtype, device)
