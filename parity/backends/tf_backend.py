"""The TensorFlow side of the parity harness: weights in and out of ``tf_impl``, and one case's tensors.

Imports nothing from PyTorch. Arrays are NHWC and in the TF layout already; the Keras path of each
tensor comes from the weight table (``parity.table``). Implements ``parity.backends.interface.Backend``.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Any, Iterator, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from gated_spec.training import ADAM_COUNTER, ADAM_SLOTS, slot_name  # noqa: E402
import tf_impl  # noqa: E402
from parity.configs import CONFIG_KEYS  # noqa: E402
from parity.kinds import kind_of, kind_of_net, table_for, with_kind  # noqa: E402
from parity.table import EMA_SUFFIX, check_tensors  # noqa: E402

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


def _variables(net: Any) -> dict[str, Any]:
    prefix = net.path + "/"
    return {v.path[len(prefix):]: v for v in net.weights}


def _tf_device(device: str) -> str:
    return "/GPU:0" if device.startswith("cuda") or device.startswith("gpu") else "/CPU:0"


def build(config: Mapping[str, Any], dtype: str = "float32", device: str = "cpu") -> Any:
    kind = kind_of(config)
    with tf.device(_tf_device(device)):
        net = getattr(tf_impl, kind.twin_class)(**kind.args(config), dtype=dtype)
        net.build()
    return net


def config_of(net: Any) -> dict[str, Any]:
    kind = kind_of_net(net)
    if kind.network:
        return with_kind(kind.name, net.config)
    return {k: v for k, v in net.get_config().items() if k in CONFIG_KEYS}


def export_weights(net: Any) -> dict[str, np.ndarray]:
    """The net's tensors under their TF1 names (shadows included when it has them)."""
    variables = _variables(net)
    return {row.tf1_name: variables[row.keras_path].numpy() for row in table_for(config_of(net))}


def import_weights(net: Any, tensors: Mapping[str, np.ndarray], initialized: bool = True) -> None:
    """Load canonical tensors; all-or-nothing. Missing shadows (for a net with ``polyak_decay``)
    restart as copies of the raw weights, as creating the average would."""
    config = config_of(net)
    table = table_for(config)
    check_tensors(table, tensors, allow_missing_shadows=True, target_dtype=net.variable_dtype, what=kind_of(config).what)
    variables = _variables(net)
    values = {}
    for row in table:
        source = row.tf1_name if row.tf1_name in tensors else row.tf1_name[: -len(EMA_SUFFIX)]
        values[row.keras_path] = np.asarray(tensors[source], dtype=variables[row.keras_path].dtype)
    for path, value in values.items():
        variables[path].assign(value)
    for layer in net.wn_layers:
        layer.initialized.assign(bool(initialized))


def set_live(net: Any, tensors: Mapping[str, np.ndarray]) -> None:
    """Assign the raw weights (TF1 names, TF layout); shadows untouched."""
    variables = _variables(net)
    for row in table_for(config_of(net), shadows=False):
        var = variables[row.keras_path]
        var.assign(np.asarray(tensors[row.tf1_name], dtype=var.dtype))


def to_tf(a: np.ndarray | None, dtype: str) -> tf.Tensor | None:
    """An array as a constant tensor of ``dtype`` (NHWC, as it comes); ``None`` stays ``None``."""
    return None if a is None else tf.constant(a, dtype=dtype)


def to_tensor(a: np.ndarray | None, dtype: str, device: str = "cpu", grad: bool = False) -> tf.Tensor | None:
    """:func:`to_tf` (the interface's adapter; a ``GradientTape`` watches what it needs, and
    :func:`on_device` places)."""
    return to_tf(a, dtype)


def to_numpy(t: Any) -> np.ndarray:
    """A tensor as NumPy (NHWC already)."""
    return np.asarray(t)


def on_device(device: str) -> contextlib.AbstractContextManager:
    return tf.device(_tf_device(device))


def inputs(arrays: Mapping[str, np.ndarray], names: Sequence[str], dtype: str, device: str,
           grad: bool = False) -> dict[str, tf.Tensor | None]:
    """``names`` as tensors of ``dtype`` (NHWC, as they come), ``None`` where absent."""
    return {k: to_tf(arrays.get(k), dtype) for k in names}


def describe(device: str) -> str:
    return f"tensorflow {tf.__version__} (keras {keras.__version__}) on {'GPU' if 'GPU' in _tf_device(device) else 'CPU'}"


def apply(net: Any, inputs: Mapping[str, np.ndarray], use_ema: bool = False, init: bool = False) -> dict[str, np.ndarray]:
    """The net (inference) or its data-dependent init on NHWC inputs: ``out``, and for a network its
    summed ``loss`` (float64 scalar). The forward runs as a ``tf.function`` graph: on the CPU that
    reproduces the original TF1 graph bit for bit (eager execution does not, by up to an ulp or two:
    the graph fuses ops; ``tests/formats/test_tf1.py``)."""
    kind = kind_of(config_of(net))
    given = [to_tf(inputs.get(k), net.variable_dtype) for k in kind.inputs]
    if init:
        out = net.initialize(*given)
    else:
        out = _graph_forward(net, use_ema)(*given)
    if not kind.network:
        return {"out": out.numpy()}
    from tf_impl.mixture import discretized_mix_logistic_loss

    return {"out": out.numpy(), "loss": np.float64(discretized_mix_logistic_loss(given[0], out).numpy())}


_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _graph_forward(net: Any, use_ema: bool) -> Any:
    """The net's forward as a ``tf.function``, one per net and ``use_ema``, kept while the net lives
    (a new function per call would retrace every time)."""
    graphs = _GRAPHS.setdefault(net, {})
    if use_ema not in graphs:
        held = weakref.ref(net)  # the function must not keep its own key alive
        graphs[use_ema] = tf.function(lambda *t: held()(*t, use_ema=use_ema), autograph=False)
    return graphs[use_ema]


def sample(net: Any, noise: Mapping[str, np.ndarray], h: np.ndarray | None = None, use_ema: bool = False,
           progress: bool = False, naive: bool = False) -> np.ndarray:
    """Images (B, H, W, 3) drawn with the given ``u_mix`` and ``u_value``: by the cached sampler where the
    net has one (``tf_impl.fast_sample``, PixelCNN++ and PixelSNAIL), by the naive one with ``naive``."""
    from tf_impl.fast_sample import sample as cached
    from tf_impl.mixture import sample as naive_draw

    draw = cached if not naive and isinstance(net, (tf_impl.PixelCNNpp, tf_impl.PixelSNAIL)) else naive_draw

    dt = net.variable_dtype
    B, H, W, _ = np.shape(noise["u_mix"])
    return draw(net, B, H, W, to_tf(h, dt), u_mix=to_tf(noise["u_mix"], dt), u_value=to_tf(noise["u_value"], dt),
                use_ema=use_ema, progress=progress).numpy()


# -- a block's parity steps ----------------------------------------------------------------------
def block_stages_and_gradients(block: tf_impl.GatedResnet, given: Mapping[str, tf.Tensor | None], cotangent: np.ndarray,
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


def block_forward(block: tf_impl.GatedResnet, given: Mapping[str, tf.Tensor | None], use_ema: bool = False,
            dropout_mask: np.ndarray | None = None) -> np.ndarray:
    """Inference, or with ``dropout_mask`` a training-mode forward on that keep-mask."""
    mask = to_tf(dropout_mask, block.variable_dtype)
    return block(given["x"], given["a"], given["h"], training=mask is not None, use_ema=use_ema,
                 dropout_mask=mask).numpy()


def block_initialize(block: tf_impl.GatedResnet, given: Mapping[str, tf.Tensor | None], dropout_mask: np.ndarray | None) -> np.ndarray:
    return block.initialize(given["x"], given["a"], given["h"], dropout_mask=to_tf(dropout_mask, block.variable_dtype)).numpy()


# -- a network's parity steps (tf_impl.model.PixelCNNpp) -----------------------------------------------
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


# -- one weight-normalised layer -------------------------------------------------------------------
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


# -- training (tf_impl.optim, tf_impl.train) ----------------------------------------------------------


def model_optimizer(model: Any, lr: float, lr_decay: float, mom1: float, mom2: float, eps: float) -> Any:
    """``OriginalAdam`` with train.py's schedule (``OriginalDecay``), built over the trainable variables."""
    from tf_impl.optim import OriginalAdam, OriginalDecay

    optimizer = OriginalAdam(OriginalDecay(lr, lr_decay), mom1=mom1, mom2=mom2, eps=eps)
    optimizer.build(model.trainable_variables)
    return optimizer


def model_train_step(model: Any, optimizer: Any, x: np.ndarray, h: np.ndarray | None, masks: Any, ema: str) -> float:
    """One original train step on NHWC ``x`` with the given keep-masks; the step's summed loss."""
    from tf_impl.train import train_step

    dt = model.variable_dtype
    return float(train_step(model, optimizer, to_tf(x, dt), to_tf(h, dt), dropout_masks=_masks(model, masks), ema=ema))


def _slot_variables(model: Any, optimizer: Any) -> dict[str, Any]:
    """``<tf1 name>_adam_<slot>`` -> the optimiser's slot variable, for every raw weight."""
    variables = _variables(model)
    out = {}
    for row in table_for(config_of(model), shadows=False):
        index = optimizer._get_variable_index(variables[row.keras_path])
        for slot, store in zip(ADAM_SLOTS, (optimizer._mg, optimizer._v)):
            if store:
                out[slot_name(row.tf1_name, slot)] = store[index]
    return out


def model_optimizer_state(model: Any, optimizer: Any) -> dict[str, np.ndarray]:
    """Adam's state under the original's names: ``<name>_adam_mg``, ``<name>_adam_v``, and ``adam_t``
    (the counter: steps taken + 1)."""
    out = {k: v.numpy() for k, v in _slot_variables(model, optimizer).items()}
    out[ADAM_COUNTER] = np.array([int(optimizer.iterations.numpy()) + 1], np.float64)
    return out


def model_set_optimizer_state(model: Any, optimizer: Any, tensors: Mapping[str, np.ndarray]) -> None:
    """Adam's state and the schedule's position from :func:`model_optimizer_state`'s tensors."""
    for name, var in _slot_variables(model, optimizer).items():
        var.assign(np.asarray(tensors[name], dtype=var.dtype))
    optimizer.iterations.assign(int(np.asarray(tensors[ADAM_COUNTER]).reshape(-1)[0]) - 1)
