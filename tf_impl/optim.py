"""The original's optimiser and schedule as Keras 3's own: ``OriginalAdam`` (a ``keras.optimizers.Optimizer``)
and ``OriginalDecay`` (a ``LearningRateSchedule``). Twin: ``torch_impl.optim``.

``nn.adam_updates`` of the original, unlike ``keras.optimizers.Adam``, puts the epsilon *inside* the
square root, on the bias-corrected second moment:

    v = mom1 v + (1 - mom1) g;  mg = mom2 mg + (1 - mom2) g^2
    p -= lr * (v / (1 - mom1^t)) / sqrt(mg / (1 - mom2^t) + eps)

``t`` counts from 1 (Keras' ``iterations`` + 1); with ``mom1 = 0`` there is no first moment. Each
operation is the original graph's, in the variable's dtype, with the constants rounded as it rounds
them (``gated_spec.training``). Slots: ``mg`` and ``v`` per variable, the original's names.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from gated_spec.training import DEFAULT_EPS, DEFAULT_LR, DEFAULT_LR_DECAY, DEFAULT_MOM1, DEFAULT_MOM2, adam_constants


@keras.saving.register_keras_serializable(package="tf_impl")
class OriginalDecay(keras.optimizers.schedules.LearningRateSchedule):
    """train.py's schedule: step s (1-based, Keras' ``iterations`` + 1) runs at ``lr * lr_decay ** s``,
    computed in float64 (``gated_spec.training.learning_rate``) and rounded to each variable's dtype."""

    def __init__(self, lr: float = DEFAULT_LR, lr_decay: float = DEFAULT_LR_DECAY) -> None:
        if not (isinstance(lr_decay, (int, float)) and lr_decay > 0):
            raise ValueError(f"Expected lr_decay > 0. Received: lr_decay={lr_decay!r}")
        self.lr, self.lr_decay = float(lr), float(lr_decay)

    def __call__(self, step: Any) -> tf.Tensor:
        s = tf.cast(step, tf.float64) + 1.0
        return tf.constant(self.lr, tf.float64) * tf.pow(tf.constant(self.lr_decay, tf.float64), s)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "lr_decay": self.lr_decay}


@keras.saving.register_keras_serializable(package="tf_impl")
class OriginalAdam(keras.optimizers.Optimizer):
    """``nn.adam_updates`` as a Keras optimiser (``apply``, ``apply_gradients``, ``variables``)."""

    def __init__(self, learning_rate: Any = DEFAULT_LR, mom1: float = DEFAULT_MOM1, mom2: float = DEFAULT_MOM2,
                 eps: float = DEFAULT_EPS, name: str = "original_adam", **kwargs: Any) -> None:
        for key, value in (("mom1", mom1), ("mom2", mom2)):
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ValueError(f"Expected {key} in [0, 1). Received: {key}={value!r}")
        if not (isinstance(eps, (int, float)) and eps >= 0.0):
            raise ValueError(f"Expected eps >= 0. Received: eps={eps!r}")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.mom1, self.mom2, self.eps = float(mom1), float(mom2), float(eps)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._mg = [self.add_variable_from_reference(v, "mg") for v in var_list]
        self._v = [self.add_variable_from_reference(v, "v") for v in var_list] if self.mom1 > 0 else []

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        dtype = tf.as_dtype(variable.dtype)
        c1, c1m, c2, c2m, eps = (tf.constant(c, dtype) for c in adam_constants(self.mom1, self.mom2, self.eps, dtype.name))
        one = tf.constant(1.0, dtype)
        lr = tf.cast(learning_rate, dtype)
        t = tf.cast(self.iterations + 1, dtype)
        g = tf.convert_to_tensor(gradient)
        index = self._get_variable_index(variable)
        if self.mom1 > 0:
            v = self._v[index]
            v_t = c1 * v + c1m * g
            v_hat = v_t / (one - tf.pow(c1, t))
            self.assign(v, v_t)
        else:
            v_hat = g
        mg = self._mg[index]
        mg_t = c2 * mg + c2m * tf.square(g)
        mg_hat = mg_t / (one - tf.pow(c2, t))
        g_t = v_hat / tf.sqrt(mg_hat + eps)
        self.assign(variable, variable - lr * g_t)
        self.assign(mg, mg_t)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mom1": self.mom1, "mom2": self.mom2, "eps": self.eps}
