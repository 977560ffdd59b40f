"""The translation pitfall gallery: naive PyTorch translations, each caught by the harness at its stage.

Each entry of ``docs/translation_pitfalls.md`` that applies to this block has a *naive* variant: a small
override of the real translation (one method, one attribute, one converter function) that makes
exactly that mistake, installed only while the entry runs. The harness runs the TensorFlow reference
and the torch side on the entry's case; the real translation must pass, the naive one must fail, and
the first failing tensor, in computation order, must be the stage where the mistake shows first
(``load`` when the naive weights cannot even be loaded). ``gated-resnet-parity pitfalls`` prints the
gallery with the measured error against the bound; ``docs/pitfalls.md`` is written from the same
entries (``--markdown``), and a test checks that it matches them.

The seed article's translation is one more entry: its ``GatedResNet`` re-created from its description
(plain ELU, ``a`` added raw, a lazily created ``[K, F]`` ``hw`` broadcast over the width, no weight norm,
no data-dependent init, no EMA), run stage by stage with the reference's effective kernels where they fit.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from gated_spec.model import CDF_DELTA_MIN, EDGE, IMAGE_CHANNELS, LOG_BINS_HALF, OUTPUT_PER_MIXTURE, output_channels
from parity.case import Case, LayerCase, ModelCase
from parity.tolerance import Comparison

LOAD = "load"


@dataclass(frozen=True)
class Pitfall:
    key: str  # the number in docs/translation_pitfalls.md, or "seed"
    title: str
    naive: str  # what the naive translation does
    expect: str  # the tensor (or "load") the harness must flag first
    case: Callable[[], Case | LayerCase]
    install: Callable[[], contextlib.AbstractContextManager]  # the naive override, while it is active


@dataclass
class Result:
    pitfall: Pitfall
    flagged: str  # the first failing tensor, or "load"
    comparison: Comparison | None  # the first failing comparison (None for "load")
    detail: str  # the load error, or a short summary
    real_passed: bool
    stages: list[Comparison] = field(default_factory=list)  # seed entry: every forward stage

    @property
    def caught(self) -> bool:
        return self.real_passed and self.flagged == self.pitfall.expect


# -- small tools ---------------------------------------------------------------------------------
def _hooks(overrides: dict[str, Any]) -> contextlib.AbstractContextManager:
    """Replace named steps of the torch twin (``torch_impl.hooks.HOOKS``) while the entry runs."""
    from torch_impl.hooks import replaced

    return replaced(overrides)


@contextlib.contextmanager
def _patched(*patches: tuple[Any, str, Any]) -> Iterator[None]:
    """Replace public functions of the harness itself (the weight layout, the input conversion) for
    the duration; always restored. Private names are refused: the twins' replaceable steps go
    through :func:`_hooks`."""
    saved = []
    for target, name, _ in patches:
        if name.startswith("_") or not hasattr(target, name):
            raise AttributeError(f"the pitfall gallery replaces {getattr(target, '__name__', target)}.{name}: expected a public "
                                 "attribute of the harness that exists (a twin's step goes through torch_impl.hooks)")
    try:
        for target, name, value in patches:
            saved.append((target, name, getattr(target, name)))
            setattr(target, name, value)
        yield
    finally:
        for target, name, value in reversed(saved):
            setattr(target, name, value)


def _block_case(name: str, **kw: Any) -> Callable[[], Case]:
    config = {"num_filters": 4, "conv": "down_shifted_conv2d", "nonlinearity": "concat_elu"}
    sizes = {k: kw.pop(k) for k in ("batch", "height", "width") if k in kw}
    config.update(kw)
    return lambda: Case(f"pitfall-{name}", config, **sizes)


def _layer_case(name: str, kind: str, **kw: Any) -> Callable[[], LayerCase]:
    return lambda: LayerCase(f"pitfall-{name}", kind, **kw)


# -- the naive overrides, one per pitfall --------------------------------------------------------
def _nchw_by_reshape() -> contextlib.AbstractContextManager:
    import torch

    from parity.backends import torch_backend

    def naive(a: Any, dtype: Any, device: str, grad: bool = False) -> Any:
        if a is None:
            return None
        t = torch.as_tensor(a, dtype=dtype, device=device)
        if t.dim() == 4:
            B, H, W, C = t.shape
            t = t.reshape(B, C, H, W)  # reshape, not permute(0, 3, 1, 2)
        return t.requires_grad_(grad)

    return _patched((torch_backend, "to_torch", naive))


def _kernel_by_reshape(ndim: int) -> Callable[[], contextlib.AbstractContextManager]:
    def install() -> contextlib.AbstractContextManager:
        from parity.weights import WeightRow

        to_t, from_t = WeightRow.to_torch_layout, WeightRow.from_torch_layout

        def to_torch(self: WeightRow, value: np.ndarray) -> np.ndarray:
            if self.torch_perm is not None and len(self.shape) == ndim:
                return np.ascontiguousarray(value).reshape(self.torch_shape)  # reshape, not transpose
            return to_t(self, value)

        def from_torch(self: WeightRow, value: np.ndarray) -> np.ndarray:
            if self.torch_perm is not None and len(self.shape) == ndim:
                return np.ascontiguousarray(value).reshape(self.shape)
            return from_t(self, value)

        return _patched((WeightRow, "to_torch_layout", to_torch), (WeightRow, "from_torch_layout", from_torch))

    return install


def _deconv_kernel_as_conv() -> contextlib.AbstractContextManager:
    from parity.weights import WeightRow

    to_t = WeightRow.to_torch_layout

    def to_torch(self: WeightRow, value: np.ndarray) -> np.ndarray:
        if self.torch_perm is not None and len(self.shape) == 4:  # as if [kh, kw, in, out]: (out, in, kh, kw)
            return np.ascontiguousarray(np.transpose(value, (2, 3, 0, 1)))
        return to_t(self, value)

    return _patched((WeightRow, "to_torch_layout", to_torch))


def _deconv_norm_per_input_channel() -> contextlib.AbstractContextManager:
    return _hooks({"deconv._norm_axes": (1, 2, 3)})  # weight_norm(dim=0): per input channel


def _concat_elu_order() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl.ops as ops

    def naive(x: Any) -> Any:
        return ops.elu(torch.cat([-x, x], dim=1))

    return _hooks({"nonlinearity.concat_elu": naive})


def _h_over_width() -> contextlib.AbstractContextManager:
    def naive(self: Any, h: Any, hw: Any) -> Any:
        return (h @ hw).view(h.shape[0], 1, 1, 2 * self.num_filters)  # NHWC view on an NCHW tensor

    return _hooks({"GatedResnet._condition": naive})


def _same_padding() -> contextlib.AbstractContextManager:
    import torch.nn.functional as F

    def naive(self: Any, x: Any) -> Any:
        kh, kw = self.filter_size  # padding='same' for an even kernel: the extra row at the *bottom*
        return F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, 0, kh - 1))

    return _hooks({"down_shifted._pre": naive})


def _no_output_padding() -> contextlib.AbstractContextManager:
    import torch.nn.functional as F

    def naive(self: Any, x: Any, W: Any) -> Any:
        return F.conv_transpose2d(x, W, None, self.stride)  # (in - 1) * s + k: no output_padding = s - 1

    return _hooks({"deconv._op": naive})


def _swap_split() -> contextlib.AbstractContextManager:
    def naive(self: Any, c2: Any) -> Any:
        return c2[:, self.num_filters:], c2[:, : self.num_filters]

    return _hooks({"GatedResnet._split": naive})


def _a_raw() -> contextlib.AbstractContextManager:
    return _hooks({"GatedResnet._skip": lambda self, a, layer_call: a})


def _skip_nonlinearity_with_a() -> contextlib.AbstractContextManager:
    import torch_impl.ops as ops

    def naive(self: Any, c1: Any) -> Any:
        return c1 if self.a_channels else ops.get_nonlinearity(self.nonlinearity)(c1)

    return _hooks({"GatedResnet._activate_c1": naive})


def _elu_for_concat_elu() -> contextlib.AbstractContextManager:
    import torch_impl.block as tb
    import torch_impl.ops as ops

    return _hooks({"nonlinearity.concat_elu": ops.elu, "block.CHANNEL_MULTIPLIER": {**tb.CHANNEL_MULTIPLIER, "concat_elu": 1}})


def _dropout2d() -> contextlib.AbstractContextManager:
    def naive(self: Any, c1: Any, mask: Any, active: bool) -> Any:
        if self.dropout_p == 0.0 or mask is None:
            return c1
        keep = mask[:, :, :1, :1].to(c1.dtype)  # nn.Dropout2d: one draw per (sample, channel)
        return c1 * keep / (1.0 - self.dropout_p)

    return _hooks({"GatedResnet._dropout": naive})


def _unbiased_variance() -> contextlib.AbstractContextManager:
    import torch

    def naive(t: Any, dims: tuple[int, ...]) -> tuple[Any, Any]:
        return torch.mean(t, dim=dims, keepdim=True), torch.var(t, dim=dims, keepdim=True)  # unbiased

    return _hooks({"layer._moments": staticmethod(naive)})


def _batchnorm_eps() -> contextlib.AbstractContextManager:
    return _hooks({"conv._init_eps": 1e-5})


def _no_init_scale() -> contextlib.AbstractContextManager:
    return _hooks({"block.SECOND_CONV_INIT_SCALE": 1.0})  # init_scale=0.1 forgotten on the second conv


def _init_returns_t() -> contextlib.AbstractContextManager:
    return _hooks({"layer._init_output": staticmethod(lambda s, t, m: t)})


def _init_on_raw_v() -> contextlib.AbstractContextManager:
    return _hooks({"layer._init_direction": lambda self: self.V})


def _ema_first_update_copies() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl.ema as te

    real_update, real_reset = te.update_averages, te.reset_averages
    fresh: set[int] = set()

    def reset(module: Any) -> None:
        real_reset(module)
        fresh.add(id(module))

    def update(module: Any, num_updates: int | None = None) -> None:
        if id(module) in fresh:  # AveragedModel: the first update_parameters copies
            fresh.discard(id(module))
            with torch.no_grad():
                for _, var, shadow in te.averaged_pairs(module):
                    shadow.copy_(var)
            return
        real_update(module, num_updates)

    return _hooks({"update_averages": update, "reset_averages": reset})


def _decay_in_double() -> contextlib.AbstractContextManager:
    def naive(decay: float, num_updates: int | None = None) -> float:
        d = decay if num_updates is None else min(decay, (1 + num_updates) / (10 + num_updates))
        return 1.0 - d  # Python double, not TF's float32

    return _hooks({"ema.one_minus_decay": naive})


def _average_effective_kernel() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl
    import torch_impl.layers as tl

    real_update, real_reset, real_forward = torch_impl.update_averages, torch_impl.reset_averages, tl.WeightNormConv2D.forward

    def convs(module: Any) -> list[Any]:
        return [m for m in module.modules() if isinstance(m, tl.WeightNormConv2D)]

    def reset(module: Any) -> None:
        real_reset(module)
        with torch.no_grad():
            for m in convs(module):
                m._W_ema = m.kernel().detach().clone()

    def update(module: Any, num_updates: int | None = None) -> None:
        real_update(module, num_updates)
        with torch.no_grad():
            for m in convs(module):  # the average of g * V / |V|, not g, V averaged then combined
                m._W_ema -= (m._W_ema - m.kernel()) * torch_impl.one_minus_decay(m.polyak_decay, num_updates)

    def forward(self: Any, x: Any, use_ema: bool = False) -> Any:
        if use_ema and hasattr(self, "_W_ema"):
            return self._activate(self._post(self._op(self._pre(x), self._W_ema, self.b_ema), x))
        return real_forward(self, x, use_ema)

    return _hooks({"update_averages": update, "reset_averages": reset, "conv.forward": forward})


def _tf32_emulated() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl.layers as tl

    real_op = tl.WeightNormConv2D._op

    def tf32(t: Any) -> Any:
        if t.dtype != torch.float32:
            return t
        bits = t.view(torch.int32)  # keep 10 of float32's 23 mantissa bits, rounding to nearest
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)

    def naive(self: Any, x: Any, W: Any, b: Any = None) -> Any:
        return real_op(self, tf32(x), tf32(W), b)

    return _hooks({"conv._op": naive})


# -- model-level naive translations (docs/model_spec.md) --------------------------------------------------
def _model_case(name: str, log_scale_shift: float = 0.0, **config: Any) -> Callable[[], Any]:
    return lambda: ModelCase(f"pitfall-{name}", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "dropout_p": 0.5, **config},
                             height=8, width=8, log_scale_shift=log_scale_shift)


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


PITFALLS: list[Pitfall] = [
    Pitfall("1", "NHWC vs NCHW", "turns NHWC inputs into NCHW with reshape(B, C, H, W) instead of permute(0, 3, 1, 2)",
            "forward/c1_conv", _block_case("1"), _nchw_by_reshape),
    Pitfall("2", "conv kernel layout", "moves V [kh, kw, in, out] to torch with reshape(out, in, kh, kw) instead of "
            "transpose (3, 2, 0, 1) (2x3 kernel, in != out, so the shapes fit and the values do not)",
            "forward/c1_conv", _block_case("2"), _kernel_by_reshape(4)),
    Pitfall("3", "transposed-conv kernel layout", "reads the deconv V [kh, kw, out, in] as if it were a conv's "
            "[kh, kw, in, out]: transpose (2, 3, 0, 1); with in != out the weights cannot load",
            LOAD, _layer_case("3", "down_shifted_deconv2d"), _deconv_kernel_as_conv),
    Pitfall("4", "weight norm of a transposed conv", "normalises per *input* channel, as torch's weight_norm(dim=0) "
            "on a ConvTranspose2d does, instead of per output channel",
            "forward/out", _layer_case("4", "deconv2d"), _deconv_norm_per_input_channel),
    Pitfall("5", "dense / nin V layout", "moves nin's V [in, out] to torch's (out, in) with reshape instead of a "
            "transpose (in != units)", "forward/c1_conv", _block_case("5", conv="nin"), _kernel_by_reshape(2)),
    Pitfall("6", "concat_elu order", "concatenates [-x, x] instead of [x, -x] (the next kernel's input channels "
            "no longer line up)", "forward/c1_conv", _block_case("6"), _concat_elu_order),
    Pitfall("7", "h broadcast over the width", "adds (h @ hw).view(B, 1, 1, 2F) to an NCHW tensor: it broadcasts "
            "over the width axis (runs only because W == 2F here)",
            "forward/c2", _block_case("7", h_channels=3, width=8), _h_over_width),
    Pitfall("8", "'same' padding for a causal conv", "pads the down-shifted conv like padding='same' (extra row at "
            "the bottom) instead of kh - 1 rows on top", "forward/c1_conv", _block_case("8"), _same_padding),
    Pitfall("9", "VALID transposed conv size", "calls conv_transpose2d without output_padding = s - 1: "
            "(in - 1) * s + k rows instead of in * s + k - 1", "forward/out",
            _layer_case("9", "down_right_shifted_deconv2d"), _no_output_padding),
    Pitfall("11", "value / gate split", "takes the gate from the first half of c2 and the value from the second",
            "forward/value", _block_case("11"), _swap_split),
    Pitfall("12", "a added raw", "adds the auxiliary input a itself instead of nin(nonlinearity(a))",
            "forward/c1_skip", _block_case("12", a_channels=4), _a_raw),
    Pitfall("13", "nonlinearity skipped with a", "skips the nonlinearity between the convs when a is given",
            "forward/c1", _block_case("13", a_channels=3, nonlinearity="elu"), _skip_nonlinearity_with_a),
    Pitfall("14", "ELU for concat_elu", "uses plain ELU and sizes the convs for it: the original's 2F-input "
            "kernels cannot load", LOAD, _block_case("14"), _elu_for_concat_elu),
    Pitfall("15", "Dropout2d", "drops whole channels (nn.Dropout2d) instead of elements",
            "dropout/out", _block_case("15", dropout_p=0.5), _dropout2d),
    Pitfall("17", "unbiased init variance", "uses torch.var (unbiased) for the init moments; B*H*W = 8",
            "init/conv2d_0/g", _block_case("17", batch=2, height=2, width=2), _unbiased_variance),
    Pitfall("18", "init epsilon", "adds BatchNorm's 1e-5 to the conv's init variance instead of 1e-8",
            "init/conv2d_0/g", _block_case("18"), _batchnorm_eps),
    Pitfall("19", "init_scale of the second conv", "initialises the second conv with init_scale 1 instead of 0.1",
            "init/conv2d_1/g", _block_case("19"), _no_init_scale),
    Pitfall("20", "what the init pass returns", "returns the unnormalised t instead of s * (t - m), so the next "
            "layer initialises on the wrong input", "init/conv2d_1/g", _block_case("20"), _init_returns_t),
    Pitfall("21", "init measures raw V", "measures op(x, V) instead of op(x, l2_normalize(V)) (as TF Addons does)",
            "init/conv2d_0/g", _block_case("21"), _init_on_raw_v),
    Pitfall("25", "first EMA update copies", "copies the weights on the first update (AveragedModel) instead of "
            "averaging", "ema/conv2d_0/V", _block_case("25"), _ema_first_update_copies),
    Pitfall("26", "1 - decay in double", "computes 1 - decay in double (5e-4) instead of TF's float32 "
            "(5.0002337e-4)", "ema/conv2d_0/V", _block_case("26"), _decay_in_double),
    Pitfall("27", "averaging the effective kernel", "averages the effective kernel W = g * V / norm(V) and runs the EMA forward with it, "
            "instead of averaging V, g, b", "ema/out", _block_case("27", conv="conv2d"), _average_effective_kernel),
    Pitfall("29", "TF32", "rounds the conv operands to TF32 (10-bit mantissa), as a GPU with TF32 on does "
            "(emulated, so it runs on CPU)", "forward/c1_conv", _block_case("29"), _tf32_emulated),
]


# -- the seed article's block ---------------------------------------------------------------------
ARTICLE_CONFIG = {"num_filters": 4, "a_channels": 4, "h_channels": 3, "conv": "down_shifted_conv2d", "nonlinearity": "concat_elu"}


def _article_case() -> Case:
    return Case("pitfall-seed", dict(ARTICLE_CONFIG), width=4)  # W == F: the only width where its h runs


def _article_run(case: Case, dtype: str) -> dict[str, np.ndarray]:
    """The seed article's GatedResNet, re-created from its description, on the case's inputs.

    Plain ELU (so its convs take F input channels: it gets the x-half of the reference's effective
    kernel), ``a`` added raw, ``hw`` created lazily in ``forward`` as ``[K, F]`` (its own random values:
    the reference's ``[K, 2F]`` does not fit) and added as ``.view(B, 1, 1, F)``, plain convs (no weight
    norm: the effective kernel ``g * V / |V|`` and ``b``), no init, no EMA.
    """
    import torch
    import torch.nn.functional as F

    from parity.backends.torch_backend import to_numpy, to_torch

    dt = getattr(torch, dtype)
    w = case.weights()
    F_ = case.config["num_filters"]

    def kernel(name: str) -> tuple[Any, Any]:
        V, g = w[f"{name}/V"].astype(np.float64), w[f"{name}/g"].astype(np.float64)
        W = g * V / np.sqrt((V * V).sum(axis=(0, 1, 2)))
        W = W[:, :, : W.shape[2] // 2]  # ELU: only the x half of concat_elu's inputs
        return torch.as_tensor(np.transpose(W, (3, 2, 0, 1)), dtype=dt), torch.as_tensor(w[f"{name}/b"], dtype=dt)

    (W1, b1), (W2, b2) = kernel("conv2d_0"), kernel("conv2d_1")
    x, a, h = (to_torch(case.arrays[k], dt, "cpu", grad=True) for k in ("x", "a", "h"))
    hw = torch.empty(h.shape[1], F_, dtype=dt).normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))

    def conv(t: Any, W: Any, b: Any) -> Any:
        return F.conv2d(F.pad(t, (1, 1, 1, 0)), W, b)

    stages = {"c1_conv": conv(F.elu(x), W1, b1), "c1_skip": a}
    c1 = F.elu(stages["c1_conv"] + a)
    stages["c1"] = c1
    stages["c2_conv"] = conv(c1, W2, b2)
    stages["c2"] = stages["c2_conv"] + (h @ hw).view(h.shape[0], 1, 1, F_)
    stages["value"], stages["gate_logits"] = stages["c2"][:, :F_], stages["c2"][:, F_:]
    stages["out"] = x + stages["value"] * torch.sigmoid(stages["gate_logits"])
    out = {f"forward/{k}": to_numpy(v) for k, v in stages.items()}
    cot = to_torch(case.arrays["cotangent"], dt, "cpu")
    grads = torch.autograd.grad((stages["out"] * cot).sum(), [x, a, h])
    out.update({f"grad/{k}": to_numpy(g) for k, g in zip("xah", grads)})
    return out


# The seed article's GatedResNet translation (the article this project started from), as one more entry;
# its gallery key stays "seed", as the CLI and docs/pitfalls.md spell it.
ARTICLE = Pitfall(
    "seed", "the seed article's translation",
    "plain ELU, a added raw, a lazily created [K, F] hw broadcast over the width, no weight norm, no "
    "data-dependent init, no EMA (re-created from its description)",
    "forward/c1_conv", _article_case, contextlib.nullcontext,
)


# -- running -------------------------------------------------------------------------------------
def run_naive(key: str, case: Case | LayerCase | ModelCase) -> dict[str, Any]:
    """The naive translation of entry ``key`` on ``case``, in this process (the torch worker runs it):
    ``{"results": {dtype: {tensor: array}}}``, or ``{"load": message}`` when its weights cannot load."""
    from parity.harness import DTYPES, run_backend_here
    from parity.weights import WeightError
    from torch_impl import StateDictError

    if key == ARTICLE.key:
        return {"results": {dt: _article_run(case, dt) for dt in DTYPES}}
    pitfall = next(p for p in gallery() if p.key == key)
    with pitfall.install():
        try:
            return {"results": run_backend_here("torch", case)}
        except (WeightError, StateDictError) as exc:
            return {"load": str(exc).splitlines()[1].strip(" -")}


# Entries on the same case (name aside) share one TF reference and one run of the real translation,
# within a process: both depend only on the case.
_REFERENCES: dict[str, dict[str, dict[str, np.ndarray]]] = {}
_REAL: dict[str, dict[str, dict[str, np.ndarray]]] = {}


def run_pitfall(pitfall: Pitfall, reference: dict[str, dict[str, np.ndarray]] | None = None) -> Result:
    """Run the real translation and the naive one against the TF reference on the entry's case
    (each backend in its worker process)."""
    from parity import isolation
    from parity.harness import compare_runs, run_backend
    from parity.tolerance import MCA_SAMPLES

    case = pitfall.case()
    key = json.dumps({**case.to_dict(), "name": None}, sort_keys=True)  # the arrays follow from these fields
    if reference is None:
        if key not in _REFERENCES:
            _REFERENCES[key] = run_backend("tf", case, mca_samples=MCA_SAMPLES)
        reference = _REFERENCES[key]
    if key not in _REAL:
        _REAL[key] = run_backend("torch", case)
    real = compare_runs(case.name, reference, _REAL[key])
    naive = isolation.call("torch", "parity.pitfalls:run_naive", pitfall.key, case)
    if "load" in naive:
        return Result(pitfall, LOAD, None, naive["load"], real.passed)
    report = compare_runs(case.name, reference, naive["results"])
    first = report.first_failure
    if pitfall.key == ARTICLE.key:
        stages = [c for c in report.comparisons if c.dtype == "float32" and c.tensor.startswith("forward/")]
        missing = [c.tensor for c in report.comparisons if c.source == "missing" and c.dtype == "float32"]
        groups = {"weight gradients": sum(t.startswith("grad/") for t in missing),
                  "init tensors": sum(t.startswith("init/") for t in missing),
                  "EMA tensors": sum(t.startswith("ema") for t in missing)}
        detail = "missing " + ", ".join(f"{n} {what}" for what, n in groups.items() if n) + " (no weight norm, init or EMA)"
        return Result(pitfall, first.tensor if first else "none", first, detail, real.passed, stages)
    if first is None:
        return Result(pitfall, "none", None, "the naive variant passed", real.passed)
    failed = sum(not c.passed for c in report.comparisons)
    return Result(pitfall, first.tensor, first, f"{failed} of {len(report.comparisons)} tensors fail", real.passed)


def gallery() -> list[Pitfall]:
    return [*PITFALLS, *MODEL_PITFALLS, ARTICLE]


def _measured(r: Result) -> str:
    c = r.comparison
    if c is None:
        return r.detail
    if c.max_abs == float("inf") or "positions differ" in c.note:  # NaN/Inf where the reference has none: no distance
        return f"{c.note} ({c.dtype}; {r.detail})"
    return f"{c.max_abs:.2e} vs bound {c.bound:.2e} ({c.dtype}; {r.detail})"


def _stage(c: Comparison) -> str:
    if c.source == "shape":
        return c.note
    return f"max abs {c.max_abs:.2e}  bound {c.bound:.2e}  ratio {c.ratio:.3g}"


def format_gallery(results: list[Result]) -> str:
    lines = [f"{'#':<5} {'pitfall':<34} {'expected':<18} {'flagged':<18} {'real':<5} result  measured"]
    for r in results:
        p = r.pitfall
        lines.append(f"{p.key:<5} {p.title:<34} {p.expect:<18} {r.flagged:<18} {'pass' if r.real_passed else 'FAIL':<5} "
                     f"{'caught' if r.caught else 'MISSED':<7} {_measured(r)}")
        lines.append(f"{'':<5} naive: {p.naive}")
        for c in r.stages:
            lines.append(f"{'':<5}   {c.tensor:<22} " + _stage(c))
    n = sum(r.caught for r in results)
    lines.append(f"{n} of {len(results)} naive translations caught at the expected stage; the real translation passes every case.")
    return "\n".join(lines)


def markdown_row(p: Pitfall) -> str:
    """The static part of an entry's docs row (checked against docs/pitfalls.md by the tests)."""
    return f"| {p.key} | {p.title} | {p.naive} | `{p.expect}` |"


def format_markdown(results: list[Result]) -> str:
    out = [
        "# The pitfall gallery",
        "",
        "Written by `gated-resnet-parity pitfalls --markdown` from `parity/pitfalls.py`; `tests/test_pitfalls.py`",
        "checks that every row's first four columns match the entries and that each naive translation is caught",
        "at the stage named here. Each naive variant is a small override of the real translation (see the",
        "source); the harness runs it against TensorFlow on the entry's case, in float32 and float64. The",
        "last column is one run's measurement (max abs error of the first failing tensor against its bound).",
        "",
        "| # | pitfall | the naive translation | flagged first | measured |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        out.append(f"{markdown_row(r.pitfall)} {_measured(r)} |")
    seed = next((r for r in results if r.pitfall.key == "seed"), None)
    if seed is not None:
        out += ["", "## The seed article's translation, stage by stage (float32)", "",
                "Its convs get the reference's effective kernels `g * V / |V|` (the `x` half of their inputs, since",
                "ELU does not double the channels) and biases; its `hw` is its own (`[K, F]` cannot hold `[K, 2F]`).",
                "", "| stage | measured |", "|---|---|"]
        out += [f"| `{c.tensor}` | {_stage(c)} |" for c in seed.stages]
        out += ["", f"The harness also reports it {seed.detail}."]
    out += ["", "## TF32 on a GPU", "",
            "Entry 29 emulates TF32 on the CPU. On a GPU the real thing is one flag away:",
            "`gated-resnet-parity verify --device cuda --tf32`. Measured 2026-11-26 on one NVIDIA H200",
            "(torch 2.11.0+cu130) against the built-in CPU record: 173 of 560 comparisons fail, the first at",
            "`forward/c1_skip` (the `nin` matmul, 8.96e-04 against a bound of 1.96e-06) or `forward/c2`; with TF32",
            "off all 560 pass."]
    return "\n".join(out) + "\n"
