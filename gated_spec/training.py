"""How the original trains, framework-free (docs/training.md): the learning-rate schedule,
``nn.adam_updates``' constants, bias correction and state names, and the order of the Polyak update.

Both twins' optimisers (``tf_impl.optim``, ``torch_impl.optim``) take their numbers from here, so a
float32 run rounds each constant as the original graph does: ``mom1`` and ``eps`` become float32
constants, ``1 - mom1`` is computed in double by Python and then rounded, and the bias correction
``1 - mom1 ** t`` is a float32 ``pow`` on float32 operands.
"""

from __future__ import annotations

import math

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
# Adam's state, by the names the original code gives it: per parameter "<name>_adam_mg" (second
# moment) and "<name>_adam_v" (first moment, absent with mom1 = 0), and the counter "adam_t".
ADAM_SLOTS = ("mg", "v")
ADAM_COUNTER = "adam_t"


def slot_name(name: str, slot: str) -> str:
    """``<name>_adam_<slot>``: a parameter's Adam slot as the original names it."""
    return f"{name}_adam_{slot}"


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
    """``1 - mom ** t`` in ``dtype`` (the original's ``1. - tf.pow(mom, t)``, ``t`` a float counter from
    1): ``pow`` correctly rounded to ``dtype`` (libm's double ``pow`` on the exactly representable
    operands, rounded once, as TensorFlow's scalar ``pow`` gives it; NumPy's ``power`` may use a
    vector library that is not correctly rounded, e.g. SVML on AVX-512), then the subtraction in ``dtype``."""
    d = np.dtype(dtype).type
    return float(d(1.0) - d(math.pow(float(d(mom)), float(t))))
