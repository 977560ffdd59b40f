"""PyTorch translation of the PixelCNN++ / PixelSNAIL gated residual block (NCHW). Twin: ``tf_impl``.

Importable with only torch and numpy installed.
"""

from torch_impl._state import StateDictError
from torch_impl.block import STAGES, GatedResnet
from torch_impl.ema import one_minus_decay, reset_averages, update_averages
from torch_impl.layers import (
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
from torch_impl.mixture import bits_per_dim, discretized_mix_logistic_loss, sample, sample_from_discretized_mix_logistic
from torch_impl.model import PixelCNNpp
from torch_impl.pixelsnail import PixelSNAIL, causal_attention
from torch_impl.ops import concat_elu, down_shift, elu, l2_normalize, left_shift, relu, right_shift

__all__ = [
    "CONV_LAYERS",
    "STAGES",
    "StateDictError",
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
