"""Model-level entries M1..M10 (``docs/model_spec.md``): naive translations of the whole PixelCNN++
network (its streams, loss and sampler), each on a tiny model, and :data:`MODEL_PITFALLS`."""

from __future__ import annotations

import contextlib
from typing import Any

from gated_spec.model import CDF_DELTA_MIN, EDGE, IMAGE_CHANNELS, LOG_BINS_HALF, OUTPUT_PER_MIXTURE, output_channels
from parity.gallery.base import Pitfall, _hooks, _model_case


def _no_ones_channel() -> contextlib.AbstractContextManager:
    import torch

    return _hooks({"model.with_ones": lambda x: torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)})


def _skip_concat_order() -> contextlib.AbstractContextManager:
    import torch

    return _hooks({"model.down_pass_a": lambda u, skip: torch.cat([skip, u], dim=1)})


def _no_edge_cases() -> contextlib.AbstractContextManager:
    return _hooks({"mixture.EDGE": 2.0})  # |x| never beyond it: the +-1 bins use the interior formula


def _init_without_dropout() -> contextlib.AbstractContextManager:
    import torch_impl.model as tm

    real = tm.PixelCNNpp.initialize

    def naive(self: Any, x: Any, h: Any = None, *, dropout: bool = True, dropout_masks: Any = None) -> Any:
        return real(self, x, h, dropout=False)  # the init pass run as if at test time

    return _hooks({"model.PixelCNNpp.initialize": naive})


def _sampler_without_coupling() -> contextlib.AbstractContextManager:
    import torch_impl.mixture as mx

    real = mx.sample_from_discretized_mix_logistic

    def naive(l: Any, u_mix: Any = None, u_value: Any = None, generator: Any = None) -> Any:
        M = l.shape[1] // OUTPUT_PER_MIXTURE
        uncoupled = l.clone()
        for ch in range(IMAGE_CHANNELS):  # every coefficient's logit to 0: tanh(0) = 0, each channel drawn alone
            uncoupled[:, output_channels(M, "coeffs", ch)] = 0.0
        return real(uncoupled, u_mix, u_value, generator)

    return _hooks({"mixture.sample_from_discretized_mix_logistic": naive})


def _no_right_shift() -> contextlib.AbstractContextManager:
    return _hooks({"model.right_shift": lambda x: x})


def _blocks_nonlinearity_at_output() -> contextlib.AbstractContextManager:
    import torch

    return _hooks({"model.output_elu": torch.relu})  # the case's blocks use relu


def _mask_multiplied_loss() -> contextlib.AbstractContextManager:
    import torch

    def naive(xs: Any, cdf_delta: Any, log_cdf_plus: Any, log_one_minus_cdf_min: Any, log_pdf_mid: Any) -> Any:
        lower, upper, mass = ((c).to(xs.dtype) for c in (xs < -EDGE, xs > EDGE, cdf_delta > CDF_DELTA_MIN))
        inner = mass * torch.log(cdf_delta) + (1 - mass) * (log_pdf_mid - LOG_BINS_HALF)  # "the mask drops log(0)"
        return lower * log_cdf_plus + (1 - lower) * (upper * log_one_minus_cdf_min + (1 - upper) * inner)

    return _hooks({"mixture.select_log_probs": naive})


def _bits_per_dim_per_pixel() -> contextlib.AbstractContextManager:
    import math

    def naive(loss: Any, batch: int, height: int, width: int) -> Any:
        return loss / (math.log(2.0) * batch * height * width)  # per pixel, not per sub-pixel

    return _hooks({"mixture.bits_per_dim": naive})


def _torch_softplus() -> contextlib.AbstractContextManager:
    import torch.nn.functional as F

    return _hooks({"mixture.softplus": F.softplus})


MODEL_PITFALLS: list[Pitfall] = [
    Pitfall("M1", "the ones channel", "feeds x without the ones channel (zeros in its place)", "forward/out",
            _model_case("M1"), _no_ones_channel),
    Pitfall("M2", "skip concat order", "gives the down pass's ul blocks concat([ul_skip, u]) instead of concat([u, ul_skip])",
            "forward/out", _model_case("M2"), _skip_concat_order),
    Pitfall("M3", "the loss's edge cases", "treats x = -1 and x = +1 as interior bins (no cdf tails)", "loss/sum",
            _model_case("M3"), _no_edge_cases),
    Pitfall("M4", "the init pass without dropout", "initialises with dropout off, though the original's init pass drops",
            "init/conv2d_4/g", _model_case("M4"), _init_without_dropout),
    Pitfall("M5", "sampler without channel coupling", "draws G and B without the coefficients on the sampled R (and G)",
            "sample/x", _model_case("M5"), _sampler_without_coupling),
    Pitfall("M6", "the blocks' nonlinearity at the output", "applies the blocks' nonlinearity (relu here) to ul before "
            "nin_out instead of elu (with concat_elu blocks the same slip sizes nin_out for 2F inputs and the original's "
            "weights cannot load, as entry 14)", "forward/out", _model_case("M6", nonlinearity="relu"),
            _blocks_nonlinearity_at_output),
    Pitfall("M7", "the loss with mask-multiplies", "selects the loss's branches by multiplying with 0/1 masks and drops "
            "the clamp inside log(cdf_delta), so log(0) = -inf where cdf_delta underflows turns the sum into 0 * -inf "
            "= NaN; the case's log scales are moved by -6, as a trained network's are sharp", "loss/sum",
            _model_case("M7", log_scale_shift=-6.0), _mask_multiplied_loss),
    Pitfall("M8", "bits/dim over pixels", "divides the summed loss by log(2) B H W, leaving out the 3 sub-pixels",
            "loss/bits_per_dim", _model_case("M8"), _bits_per_dim_per_pixel),
    Pitfall("M9", "torch's softplus", "uses F.softplus in the loss: x itself above 20 (TensorFlow: above 13.94 in "
            "float32, 34.04 in float64) and gradient 1 there (TensorFlow: sigmoid(x)); seen in float64 where the "
            "mixture is sharp (log scales moved by -6)", "grad/conv2d_0/V", _model_case("M9", log_scale_shift=-6.0),
            _torch_softplus),
    Pitfall("M10", "the first right shift", "adds the ul stream's 2x1 conv unshifted (no right_shift): each pixel "
            "then sees itself, and the network is no longer causal", "forward/out", _model_case("M10"), _no_right_shift),
]

