"""Polyak averaging with ``tf.train.ExponentialMovingAverage`` semantics, for Keras 3 layers.

The original keeps a shadow for every trainable variable (``V``, ``g``, ``b``, ``hw``):

* each shadow starts as a *copy* of its variable when the average is created (here: when the layer
  is built with ``polyak_decay``, and again at the end of the data-dependent init);
* every update averages, the first one included:
  ``shadow -= (shadow - var) * (1 - decay)``, with ``decay = min(decay, (1 + n) / (10 + n))`` when a
  step count ``n`` is given; ``1 - decay`` is computed in float32 and then cast to the variable's
  dtype, as ``assign_moving_average`` does (pitfalls 25, 26).

Keras' optimizer EMA (``use_ema=True``) differs: its averages start at zero and copy after step one.

Shadows are non-trainable weights named ``<var>_ema`` in the layer that owns the variable, so a
``.keras`` file keeps them, and a forward with ``use_ema=True`` reads them without touching the live
weights. Twin: ``torch_impl.ema``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from gated_spec import SHADOW_SUFFIX, one_minus_decay

def averaged_pairs(layer: keras.layers.Layer) -> list[tuple[keras.layers.Layer, keras.Variable, keras.Variable]]:
    """(owner, variable, shadow) for every averaged variable under ``layer``, owners in depth-first order."""
    pairs = []
    for owner in layer._flatten_layers(include_self=True, recursive=True):
        own = getattr(owner, "_own_averages", None)
        if own is not None:
            pairs += [(owner, var, shadow) for var, shadow in own()]
    return pairs


def update_averages(layer: keras.layers.Layer, num_updates: int | None = None) -> None:
    """One ``ExponentialMovingAverage.apply`` step over every averaged variable under ``layer``.

    ``shadow -= (shadow - var) * one_minus_decay(decay, num_updates)``. Run it once per training step;
    the original's order is before the optimiser's update (``tf_impl.train.train_step``).
    """
    for owner, var, shadow in averaged_pairs(layer):
        factor = tf.constant(one_minus_decay(owner.polyak_decay, num_updates), dtype=shadow.dtype)
        shadow.assign_sub((shadow.value - var.value) * factor)


def reset_averages(layer: keras.layers.Layer) -> None:
    """Restart every shadow under ``layer`` as a copy of its variable (as creating the average does)."""
    for _, var, shadow in averaged_pairs(layer):
        shadow.assign(var.value)
