"""TensorFlow 2 / Keras 3 port of the PixelCNN++ / PixelSNAIL gated residual block (NHWC). Twin: ``torch_impl``.

Needs TensorFlow and Keras 3 (TensorFlow backend); not PyTorch.
"""

from tf_impl.block import STAGES, GatedResnet
from tf_impl.ema import one_minus_decay, reset_averages, update_averages
from tf_impl.layers import (
    CONV_LAYERS,
    DownRightShiftedConv2D,
    DownRightShiftedConv2DTranspose,
    DownShiftedConv2D,
    DownShiftedConv2DTranspose,
    Nin,
    WeightNormConv2D,
    WeightNormConv2DTranspose,
    WeightNormDense,
)
from tf_impl.mixture import bits_per_dim, discretized_mix_logistic_loss, sample, sample_from_discretized_mix_logistic
from tf_impl.model import PixelCNNpp
from tf_impl.pixelsnail import PixelSNAIL, causal_attention
from tf_impl.ops import concat_elu, down_shift, elu, l2_normalize, left_shift, relu, right_shift

__all__ = [
    "CONV_LAYERS",
    "STAGES",
    "DownRightShiftedConv2D",
    "DownRightShiftedConv2DTranspose",
    "DownShiftedConv2D",
    "DownShiftedConv2DTranspose",
    "GatedResnet",
    "Nin",
    "PixelCNNpp",
    "PixelSNAIL",
    "causal_attention",
    "WeightNormConv2D",
    "WeightNormConv2DTranspose",
    "WeightNormDense",
    "bits_per_dim",
    "concat_elu",
    "discretized_mix_logistic_loss",
    "down_shift",
    "elu",
    "l2_normalize",
    "left_shift",
    "one_minus_decay",
    "relu",
    "reset_averages",
    "right_shift",
    "sample",
    "sample_from_discretized_mix_logistic",
    "update_averages",
]
