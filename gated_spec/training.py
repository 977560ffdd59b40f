"""How the original trains, framework-free (docs/model_spec.md "Training"): the learning-rate schedule,
``nn.adam_updates``' constants and bias correction, and the order of the Polyak update.

Both twins' optimisers (``tf_impl.optim``, ``torch_impl.optim``) take their numbers from here, so a
float32 run rounds each constant as the original graph does: ``mom1`` and ``eps`` become float32
constants, ``1 - mom1`` is computed in double by Python and then rounded, and the bias correction
``1 - mom1 ** t`` is a float32 ``pow`` on float32 operands.
"""

from __future__ import annotations

import numpy as np

# nn.adam_updates as train.py calls it (PixelCNN++; PixelSNAIL's train.py passes eps=1e-6).
DEFAULT_LR = 1e-3
DEFAULT_LR_DECAY = 0.999995  # PixelCNN++ (PixelSNAIL: 0.999998)
DEFAULT_MOM1 = 0.95
DEFAULT_MOM2 = 0.9995
DEFAULT_EPS = 1e-8
# The Polyak shadows take the parameters from before Adam's update ("pre": measured on the original
# graph, whose tf.group leaves the order open) or after it ("post", as Keras' and torch's EMAs do).
EMA_ORDERS = ("pre", "post")
DEFAULT_EMA_ORDER = "pre"


def learning_rate(lr: float, lr_decay: float, step: int) -> float:
    """The learning rate of step ``step`` (1-based): train.py multiplies by ``lr_decay`` before every
    step, so step s uses ``lr * lr_decay ** s`` (computed here in double by ``pow``; train.py's running
    product differs by a few double ulps, which the float32 placeholder it feeds rounds away)."""
    return lr * lr_decay**step


def adam_constants(mom1: float, mom2: float, eps: float, dtype: str) -> tuple[float, float, float, float, float]:
    """``(mom1, 1 - mom1, mom2, 1 - mom2, eps)`` as a graph of ``dtype`` holds them: each rounded to
    ``dtype`` (``1 - mom`` computed in double first, as Python does before TensorFlow sees it)."""
    t = np.dtype(dtype).type
    return tuple(float(t(c)) for c in (mom1, 1.0 - mom1, mom2, 1.0 - mom2, eps))  # type: ignore[return-value]


def bias_correction(mom: float, t: int, dtype: str) -> float:
    """``1 - mom ** t`` in ``dtype`` throughout (the original's ``1. - tf.pow(mom, t)``, ``t`` a float counter from 1)."""
    d = np.dtype(dtype).type
    return float(d(1.0) - np.power(d(mom), d(t)))
