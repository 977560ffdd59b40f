"""Block- and layer-level entries (``docs/translation_pitfalls.md``): one naive override per pitfall of
the gated residual block and its weight-normalised conv layers, and :data:`PITFALLS`, their entries."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np

from parity.gallery.base import LOAD, Pitfall, _block_case, _hooks, _layer_case, _patched


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
        from parity.table import WeightRow

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
    from parity.table import WeightRow

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

