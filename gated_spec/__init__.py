"""The facts of the original block that both twins and the parity tools share, written once.

Framework-free (NumPy only), installed with the base package: ``tf_impl`` and ``torch_impl`` import
it and nothing of each other, ``parity`` imports it to build cases, tables and files. What it holds,
and where each fact comes from (``docs/spec.md`` describes the original block):

* the conv kinds of ``gated_resnet`` and the layer kinds of ``nn.py`` with their default filter sizes;
* the nonlinearities and how many channels each makes of one;
* the data-dependent init's epsilons, the second conv's ``init_scale`` and ``l2_normalize``'s clamp;
* Polyak averaging: the original scripts' decay, ``1 - decay`` rounded as TensorFlow rounds it, the
  shadow names (torch buffer suffix, TF1 checkpoint suffix);
* the forward stages the twins report, in computation order;
* the permutation that takes each kind of ``V`` from the TF layout to torch's;
* argument checks with one wording (:mod:`gated_spec.checks`).

Adding a nonlinearity or a conv kind: one row here, then one function per twin. Across the project,
"pitfall n" cites ``docs/translation_pitfalls.md`` and "docs/spec.md" the original's behaviour.
"""

from __future__ import annotations

import numpy as np

# -- layers and conv kinds (docs/spec.md "Shifted (causal) convolutions") -----------------------------
# The ``conv`` argument of gated_resnet: kind -> default filter size (None: nin, a per-pixel dense).
CONV_KINDS: dict[str, tuple[int, int] | None] = {
    "conv2d": (3, 3),
    "down_shifted_conv2d": (2, 3),
    "down_right_shifted_conv2d": (2, 2),
    "nin": None,
}
# Every weight-normalised conv layer of nn.py: kind -> (class name in both twins, default filter, transposed).
LAYER_KINDS: dict[str, tuple[str, tuple[int, int], bool]] = {
    "conv2d": ("WeightNormConv2D", (3, 3), False),
    "deconv2d": ("WeightNormConv2DTranspose", (3, 3), True),
    "down_shifted_conv2d": ("DownShiftedConv2D", (2, 3), False),
    "down_right_shifted_conv2d": ("DownRightShiftedConv2D", (2, 2), False),
    "down_shifted_deconv2d": ("DownShiftedConv2DTranspose", (2, 3), True),
    "down_right_shifted_deconv2d": ("DownRightShiftedConv2DTranspose", (2, 2), True),
}

# -- nonlinearities (docs/spec.md "Element-wise helpers") ----------------------------------------
# name -> output channels per input channel (concat_elu concatenates [x, -x]).
CHANNEL_MULTIPLIER: dict[str, int] = {"concat_elu": 2, "elu": 1, "relu": 1}
NONLINEARITIES: tuple[str, ...] = tuple(CHANNEL_MULTIPLIER)
DEFAULT_NONLINEARITY = "concat_elu"

# -- weight norm and the data-dependent init (docs/spec.md "Data-dependent initialisation") ---------
CONV_INIT_EPS = 1e-8  # added to the variance in conv2d / deconv2d's init (pitfall 18)
DENSE_INIT_EPS = 1e-10  # and in dense / nin's
DEFAULT_INIT_SCALE = 1.0
SECOND_CONV_INIT_SCALE = 0.1  # the block's second conv (pitfall 19)
L2_NORMALIZE_EPS = 1e-12  # l2_normalize clamps the squared norm here (pitfall 24)

# -- Polyak averaging (docs/spec.md "Polyak averaging") --------------------------------------------
DEFAULT_POLYAK_DECAY = 0.9995  # the original training scripts'
SHADOW_SUFFIX = "_ema"  # torch buffer / Keras variable of a shadow: <param>_ema
TF1_SHADOW_SUFFIX = "/ExponentialMovingAverage"  # a shadow in a TF1 checkpoint and the canonical file


def one_minus_decay(decay: float, num_updates: int | None = None) -> float:
    """``1 - decay`` exactly as TensorFlow's ``ExponentialMovingAverage`` computes it: float32
    throughout, the ``num_updates`` cap ``min(decay, (1 + n) / (10 + n))`` included (pitfalls 26, 28).

    The result is a float32 value returned as a Python float (exact), which a float32 or float64
    tensor op then uses without further rounding: ``5.0002337e-4`` for 0.9995, not ``5e-4``.
    """
    d = np.float32(decay)
    if num_updates is not None:
        n = np.float32(num_updates)
        d = np.minimum(d, (np.float32(1.0) + n) / (np.float32(10.0) + n))
    return float(np.float32(1.0) - d)


# -- what the twins report -----------------------------------------------------------------------
# The block's forward stages, in the order they are computed (c1_skip only with ``a``).
STAGES: tuple[str, ...] = ("c1_conv", "c1_skip", "c1", "c2_conv", "c2", "value", "gate_logits", "out")

# -- layouts -------------------------------------------------------------------------------------
# V from the TF layout to torch's, by rank: conv [kh, kw, in, out] -> (out, in, kh, kw), and the
# transposed conv's [kh, kw, out, in] -> (in, out, kh, kw) by the same permutation; dense [in, out] -> (out, in).
# The one place the permutation is written: everything that moves a V between the layouts calls
# the functions below (or a weight table row, which does).
TORCH_PERM: dict[int, tuple[int, ...]] = {4: (3, 2, 0, 1), 2: (1, 0)}
CONV_PERM = TORCH_PERM[4]
DENSE_PERM = TORCH_PERM[2]


def v_to_torch(v: np.ndarray) -> np.ndarray:
    """A conv, transposed-conv or dense ``V`` from the TF layout to torch's (by its rank)."""
    return np.ascontiguousarray(np.transpose(v, TORCH_PERM[np.ndim(v)]))


def v_from_torch(v: np.ndarray) -> np.ndarray:
    """A ``V`` from torch's layout back to the TF layout (by its rank)."""
    return np.ascontiguousarray(np.transpose(v, np.argsort(TORCH_PERM[np.ndim(v)])))


def v_tf_shape(torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The TF-layout shape of a ``V`` of torch shape ``torch_shape`` (ranks 2 and 4; others as they are)."""
    if len(torch_shape) not in TORCH_PERM:
        return tuple(torch_shape)
    return tuple(torch_shape[i] for i in np.argsort(TORCH_PERM[len(torch_shape)]))
