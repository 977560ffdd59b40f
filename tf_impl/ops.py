"""Element-wise helpers of the original ``nn.py``, in NHWC (the original layout).

``concat_elu`` concatenates ``[x, -x]`` on the last (channel) axis before the ELU, so the channel
count doubles. The shifts move rows or columns and fill with zeros, keeping the shape.
TensorFlow's ``elu`` computes ``exp(x) - 1`` for negative inputs, as the original did.
Twin: ``torch_impl.ops``.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from gated_spec import CHANNEL_MULTIPLIER, L2_NORMALIZE_EPS
from gated_spec.checks import check_choice, check_rank

LAYOUT = "NHWC"
CHANNEL_AXIS = -1


def concat_elu(x: tf.Tensor) -> tf.Tensor:
    """``elu(concat([x, -x], channels))``; doubles the channel count. Twin: ``torch_impl.ops.concat_elu``."""
    return tf.nn.elu(tf.concat([x, -x], axis=CHANNEL_AXIS))


def elu(x: tf.Tensor) -> tf.Tensor:
    """Plain ELU (alpha 1). Twin: ``torch_impl.ops.elu``."""
    return tf.nn.elu(x)


def softplus(x: tf.Tensor) -> tf.Tensor:
    """``tf.nn.softplus``: ``x`` above ``-(log(eps) + 2)``, ``exp(x)`` below ``log(eps) + 2``,
    ``log1p(exp(x))`` between; gradient ``grad / (1 + exp(-x))``. Twin: ``torch_impl.ops.softplus``."""
    return tf.nn.softplus(x)


def sigmoid(x: tf.Tensor) -> tf.Tensor:
    """``tf.sigmoid``: in float64 ``e / (1 + e)`` with ``e = exp(x)`` (1 where ``e`` overflows); gradient
    ``grad * (y * (1 - y))``. Twin: ``torch_impl.ops.sigmoid``."""
    return tf.sigmoid(x)


def relu(x: tf.Tensor) -> tf.Tensor:
    """Plain ReLU. Twin: ``torch_impl.ops.relu``."""
    return tf.nn.relu(x)


NONLINEARITIES: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "concat_elu": concat_elu,
    "elu": elu,
    "relu": relu,
}


def get_nonlinearity(name: str | None) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """The nonlinearity called ``name`` (``None`` for none); raises ``ValueError`` on unknown names."""
    check_choice("nonlinearity", name, list(NONLINEARITIES), allow_none=True)
    return None if name is None else NONLINEARITIES[name]


def down_shift(x: tf.Tensor, step: int = 1) -> tf.Tensor:
    """Rows move down by ``step``; the top ``step`` rows become zeros. (B, H, W, C) -> same.

    Twin: ``torch_impl.ops.down_shift``.
    """
    check_rank("down_shift", "x", x, LAYOUT)
    x = tf.convert_to_tensor(x)
    step = min(step, x.shape[1])
    return tf.pad(x[:, : x.shape[1] - step, :, :], [[0, 0], [step, 0], [0, 0], [0, 0]])


def right_shift(x: tf.Tensor, step: int = 1) -> tf.Tensor:
    """Columns move right by ``step``; the left ``step`` columns become zeros. Twin: ``torch_impl.ops.right_shift``."""
    check_rank("right_shift", "x", x, LAYOUT)
    x = tf.convert_to_tensor(x)
    step = min(step, x.shape[2])
    return tf.pad(x[:, :, : x.shape[2] - step, :], [[0, 0], [0, 0], [step, 0], [0, 0]])


def left_shift(x: tf.Tensor, step: int = 1) -> tf.Tensor:
    """Columns move left by ``step``; the right ``step`` columns become zeros. Twin: ``torch_impl.ops.left_shift``."""
    check_rank("left_shift", "x", x, LAYOUT)
    x = tf.convert_to_tensor(x)
    step = min(step, x.shape[2])
    return tf.pad(x[:, :, step:, :], [[0, 0], [0, 0], [0, step], [0, 0]])


def l2_normalize(v: tf.Tensor, axes: tuple[int, ...]) -> tf.Tensor:
    """``tf.nn.l2_normalize``: ``v * rsqrt(max(sum(v**2, axes), 1e-12))``. Twin: ``torch_impl.ops.l2_normalize``."""
    return tf.nn.l2_normalize(v, axis=list(axes), epsilon=L2_NORMALIZE_EPS)
