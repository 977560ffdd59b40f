"""One training step of the original (``train.py``): the summed loss, its gradients, Adam, and the
Polyak update in the original's order. Twin: ``torch_impl.train``."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from gated_spec.training import DEFAULT_EMA_ORDER, EMA_ORDERS
from tf_impl.ema import update_averages
from tf_impl.mixture import discretized_mix_logistic_loss


def train_step(model: keras.layers.Layer, optimizer: keras.optimizers.Optimizer, x: Any, h: Any = None, *,
               dropout_masks: Sequence[Any] | None = None, ema: str = DEFAULT_EMA_ORDER) -> tf.Tensor:
    """One step on the batch ``x`` (NHWC in [-1, 1]): the forward with ``training=True`` (dropout
    drawn by TensorFlow's RNG, or on ``dropout_masks``), the summed loss in nats, its gradients w.r.t.
    the trainable variables, ``optimizer.apply``, and the Polyak update of every shadow from the
    variables before the update (``ema="pre"``, the original's order) or after it (``"post"``).
    Returns the step's loss (the forward before the update)."""
    if ema not in EMA_ORDERS:
        raise ValueError(f"Expected ema to be one of {list(EMA_ORDERS)}. Received: ema={ema!r}")
    params = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = discretized_mix_logistic_loss(x, model(x, h, training=True, dropout_masks=dropout_masks))
    grads = tape.gradient(loss, params)
    if ema == "pre":
        update_averages(model)
    optimizer.apply(grads, params)
    if ema == "post":
        update_averages(model)
    return loss
