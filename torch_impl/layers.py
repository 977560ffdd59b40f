"""Weight-normalised layers of the original ``nn.py`` (Salimans & Kingma 2016), in PyTorch, NCHW.

Every layer owns ``V`` (direction, ~ Normal(0, 0.05)), ``g`` (scale, one per output unit, flat) and
``b`` (bias, flat), under the original's names, so that a weight moves between the twins by a
transpose of ``V`` and nothing else:

============================  ======================  ===========================  ==============
layer                         original ``V``          torch ``V``                  normalised over
============================  ======================  ===========================  ==============
``WeightNormDense`` / ``Nin`` ``[in, out]``           ``(out, in)`` (as Linear)    input axis
``WeightNormConv2D``          ``[kh, kw, in, out]``   ``(out, in, kh, kw)``        all but ``out``
``WeightNormConv2DTranspose`` ``[kh, kw, out, in]``   ``(in, out, kh, kw)``        all but ``out``
============================  ======================  ===========================  ==============

Dense keeps torch's ``(out, in)`` layout so that ``F.linear`` takes ``V`` as it is, like any
``nn.Linear`` weight; the transposed conv is normalised per *output* channel (dims 0, 2, 3), which
``torch.nn.utils.weight_norm(dim=0)`` gets wrong (pitfall 4).

Each layer also holds a boolean buffer ``initialized`` (saved in ``state_dict``) and, when built with
``polyak_decay``, the Polyak-averaged shadows ``V_ema``, ``g_ema``, ``b_ema`` as buffers.
Twin: ``tf_impl.layers``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gated_spec import CONV_INIT_EPS, DENSE_INIT_EPS, LAYER_KINDS, SHADOW_SUFFIX
from gated_spec.checks import already_initialized, check_batch, check_channels, check_dtype, check_pad, check_positive, check_rank, pair
from torch_impl._state import ValidatedLoad
from torch_impl.ops import LAYOUT, get_nonlinearity, l2_normalize



def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``'SAME'`` padding (before, after) along one axis: the odd one goes after (pitfall 8)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _WeightNormLayer(ValidatedLoad, nn.Module):
    """Holds ``V``, ``g``, ``b``, the ``initialized`` flag and the optional shadows.

    Subclasses define ``_op(x, W)`` (the linear operation with the kernel ``W``), ``_norm_axes`` (the
    axes of ``V`` its norm sums over), ``_scale_shape`` and may define ``_pre``/``_post`` around the operation.
    """

    _init_eps: float = CONV_INIT_EPS
    _norm_axes: tuple[int, ...] = ()
    _rank: int = 4  # of the input
    _channel_axis: int = 1  # of the input
    _t_axis: int = 1  # channel axis of the raw operation's output

    def __init__(
        self,
        in_channels: int,
        num_filters: int,
        v_shape: tuple[int, ...],
        init_scale: float,
        nonlinearity: str | None,
        polyak_decay: float | None,
        device: Any,
        dtype: Any,
    ) -> None:
        super().__init__()
        check_positive("in_channels", in_channels)
        check_positive("num_filters", num_filters)
        if polyak_decay is not None and not 0.0 <= polyak_decay <= 1.0:
            raise ValueError(f"Expected polyak_decay in [0, 1] or None. Received: polyak_decay={polyak_decay!r}")
        self.in_channels = in_channels
        self.num_filters = num_filters
        self.init_scale = float(init_scale)
        self.nonlinearity = nonlinearity
        self._nonlinearity = get_nonlinearity(nonlinearity)
        self.polyak_decay = polyak_decay
        factory = {"device": device, "dtype": dtype}
        self.V = nn.Parameter(torch.empty(v_shape, **factory).normal_(0.0, 0.05))
        self.g = nn.Parameter(torch.ones(num_filters, **factory))
        self.b = nn.Parameter(torch.zeros(num_filters, **factory))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool, device=device))
        if polyak_decay is not None:
            for name in ("V", "g", "b"):
                self.register_buffer(name + SHADOW_SUFFIX, getattr(self, name).detach().clone())

    # -- weights -----------------------------------------------------------------------------
    def _weights(self, use_ema: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not use_ema:
            return self.V, self.g, self.b
        if self.polyak_decay is None:
            raise ValueError(
                f"{type(self).__name__}: use_ema=True needs averaged weights; this layer was built with polyak_decay=None"
            )
        return self.V_ema, self.g_ema, self.b_ema

    def raw_weights(self, use_ema: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(V, g, b)`` as the forward reads them (the shadows with ``use_ema``)."""
        return self._weights(use_ema)

    def _scale(self, g: torch.Tensor) -> torch.Tensor:
        return g.view(self._scale_shape)

    def kernel(self, use_ema: bool = False) -> torch.Tensor:
        """The effective kernel ``g * l2_normalize(V)`` (from the shadows with ``use_ema``)."""
        V, g, _ = self._weights(use_ema)
        return self._scale(g) * l2_normalize(V, self._norm_axes)

    def _own_averages(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.polyak_decay is None:
            return []
        return [(getattr(self, n), getattr(self, n + SHADOW_SUFFIX)) for n in ("V", "g", "b")]

    @property
    def is_initialized(self) -> bool:
        """Whether the data-dependent init has run (the saved ``initialized`` buffer)."""
        return bool(self.initialized)

    # -- forward -----------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        owner = type(self).__name__
        check_rank(owner, "x", x, LAYOUT, self._rank)
        check_channels(owner, "x", x, self.in_channels, self._channel_axis, LAYOUT)
        check_dtype(owner, "x", str(x.dtype).replace("torch.", ""), str(self.V.dtype).replace("torch.", ""))

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _post(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return y

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        return y if self._nonlinearity is None else self._nonlinearity(y)

    def forward(self, x: torch.Tensor, use_ema: bool = False) -> torch.Tensor:
        self._check(x)
        V, g, b = self._weights(use_ema)
        y = self._op(self._pre(x), self._scale(g) * l2_normalize(V, self._norm_axes))
        y = y + b.view(self._scale_shape)
        return self._activate(self._post(y, x))

    # -- data-dependent init -----------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> torch.Tensor:
        """The original's ``init=True`` pass: normalise this layer's output on the batch ``x``.

        ``t = op(x, l2_normalize(V))``; ``m, v`` = mean and *biased* variance of ``t`` over every axis
        but the channels; ``s = init_scale / sqrt(v + eps)``; sets ``g := s``, ``b := -m * s`` and
        returns ``s * (t - m)`` (then the nonlinearity and, for the shifted transposed convs, the
        crop). Runs once: a second call raises. Shadows, if any, restart as copies.
        """
        if self.is_initialized:
            raise already_initialized(type(self).__name__)
        self._check(x)
        check_batch(type(self).__name__, x)
        t = self._op(self._pre(x), self._init_direction())
        axis = self._t_axis % t.dim()
        m, v = self._moments(t, tuple(d for d in range(t.dim()) if d != axis))
        s = self.init_scale / torch.sqrt(v + self._init_eps)
        self.g.copy_(s.reshape(-1))
        self.b.copy_((-m * s).reshape(-1))
        self.initialized.fill_(True)
        for var, shadow in self._own_averages():
            shadow.copy_(var)
        return self._activate(self._post(self._init_output(s, t, m), x))

    # The steps of the init pass, one method each (the pitfall gallery overrides them).
    def _init_direction(self) -> torch.Tensor:
        """The kernel the init measures: the unit-norm direction ``l2_normalize(V)`` (pitfall 21)."""
        return l2_normalize(self.V, self._norm_axes)

    @staticmethod
    def _moments(t: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and *biased* variance, as ``tf.nn.moments`` (pitfall 17)."""
        m = torch.mean(t, dim=dims, keepdim=True)
        return m, torch.mean(torch.square(t - m), dim=dims, keepdim=True)

    @staticmethod
    def _init_output(s: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """What the init pass returns: the normalised ``s * (t - m)`` (pitfall 20)."""
        return s * (t - m)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.num_filters}, init_scale={self.init_scale}, nonlinearity={self.nonlinearity}"


class WeightNormDense(_WeightNormLayer):
    """The original ``dense``: ``(x @ V) * (g / sqrt(sum(V**2, in))) + b``, scale after the matmul.

    Shapes: x (B, in) -> (B, units). ``V`` is stored ``(units, in)`` like ``nn.Linear.weight``
    (the original's ``[in, units]`` transposed). Init eps is 1e-10. Twin: ``tf_impl.layers.WeightNormDense``.
    """

    _init_eps = DENSE_INIT_EPS
    _norm_axes = (1,)
    _scale_shape = (-1,)
    _rank = 2
    _t_axis = -1

    def __init__(
        self,
        in_channels: int,
        units: int,
        init_scale: float = 1.0,
        nonlinearity: str | None = None,
        polyak_decay: float | None = None,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        check_positive("units", units)
        super().__init__(in_channels, units, (units, in_channels), init_scale, nonlinearity, polyak_decay, device, dtype)

    @property
    def units(self) -> int:
        return self.num_filters

    def _op(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:  # the init pass's matmul
        return F.linear(x, W)

    def forward(self, x: torch.Tensor, use_ema: bool = False) -> torch.Tensor:
        self._check(x)
        V, g, b = self._weights(use_ema)
        y = F.linear(self._pre(x), V) * (g / torch.sqrt(torch.sum(V * V, dim=1))) + b
        return self._activate(self._post(y, x))


class Nin(WeightNormDense):
    """The original ``nin``: a ``dense`` on every pixel (reshape to (B*H*W, C), dense, reshape back).

    Shapes: x (B, C, H, W) -> (B, units, H, W). The channels move last for the matmul and back, so
    the init moments run over B, H and W as in the original. Twin: ``tf_impl.layers.Nin``.
    """

    _rank = 4

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1).reshape(-1, self.in_channels)  # (B*H*W, C), as the original

    def _post(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        return y.reshape(B, H, W, self.units).movedim(-1, 1)  # (B, units, H, W)


class _Convolution(_WeightNormLayer):
    """Shared constructor of the conv and transposed conv: ``filter_size``, ``stride``, ``pad``."""

    def __init__(
        self,
        in_channels: int,
        num_filters: int,
        filter_size: int | Sequence[int] = LAYER_KINDS["conv2d"][1],
        stride: int | Sequence[int] = (1, 1),
        pad: str = "SAME",
        init_scale: float = 1.0,
        nonlinearity: str | None = None,
        polyak_decay: float | None = None,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        self.filter_size = pair(filter_size, "filter_size")
        self.stride = pair(stride, "stride")
        self.pad = check_pad(pad)
        v_shape = self._v_shape(in_channels, num_filters, *self.filter_size)
        super().__init__(in_channels, num_filters, v_shape, init_scale, nonlinearity, polyak_decay, device, dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, filter_size={self.filter_size}, stride={self.stride}, pad={self.pad!r}"


class WeightNormConv2D(_Convolution):
    """The original ``conv2d``: ``conv2d(x, g * l2_normalize(V, [0, 1, 2]), stride, pad) + b``.

    Shapes: x (B, in, H, W) -> (B, num_filters, H', W'). ``'SAME'`` pads as TensorFlow does, the
    extra row/column at the bottom/right (pitfall 8); the conv itself is torch's ``F.conv2d``
    (oneDNN on the CPU, cuDNN on CUDA), bias fused. Twin: ``tf_impl.layers.WeightNormConv2D``.
    """

    _norm_axes = (1, 2, 3)
    _scale_shape = (-1, 1, 1, 1)  # g and b per output channel, dim 0 of V

    def _v_shape(self, in_channels: int, num_filters: int, kh: int, kw: int) -> tuple[int, ...]:
        return (num_filters, in_channels, kh, kw)

    def forward(self, x: torch.Tensor, use_ema: bool = False) -> torch.Tensor:
        self._check(x)
        V, g, b = self._weights(use_ema)
        W = self._scale(g) * l2_normalize(V, self._norm_axes)
        y = self._op(self._pre(x), W, b)
        return self._activate(self._post(y, x))

    def _op(self, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if self.pad == "SAME":
            (top, bottom), (left, right) = (
                same_padding(x.shape[2], self.filter_size[0], self.stride[0]),
                same_padding(x.shape[3], self.filter_size[1], self.stride[1]),
            )
            if top == bottom and left == right:
                return F.conv2d(x, W, b, self.stride, padding=(top, left))
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, W, b, self.stride)


class WeightNormConv2DTranspose(_Convolution):
    """The original ``deconv2d``: ``conv2d_transpose(x, g * l2_normalize(V, [0, 1, 3]), target) + b``.

    Shapes: x (B, in, H, W) -> (B, num_filters, H*sh, W*sw) for ``'SAME'``, and
    (B, num_filters, H*sh + kh - 1, W*sw + kw - 1) for ``'VALID'``: the original asks TensorFlow for that
    target, ``sh - 1`` rows more than torch's ``ConvTranspose2d`` gives (pitfall 9); they are zeros
    plus the bias. ``V`` is ``(in, num_filters, kh, kw)`` and normalised per *output* channel
    (dims 0, 2, 3; pitfall 4). Twin: ``tf_impl.layers.WeightNormConv2DTranspose``.
    """

    _norm_axes = (0, 2, 3)
    _scale_shape = (1, -1, 1, 1)  # g and b per output channel, dim 1 of V

    def _v_shape(self, in_channels: int, num_filters: int, kh: int, kw: int) -> tuple[int, ...]:
        return (in_channels, num_filters, kh, kw)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The original's target shape (docs/spec.md, ``deconv2d``)."""
        (kh, kw), (sh, sw) = self.filter_size, self.stride
        if self.pad == "SAME":
            return h * sh, w * sw
        return h * sh + kh - 1, w * sw + kw - 1

    def _op(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        # TF's conv2d_transpose(output_shape=T) is the gradient of a conv over an input of size T:
        # output[i] = full[i + before], zero beyond the full result.
        full = F.conv_transpose2d(x, W, None, self.stride)
        pads = []
        for axis, (k, s, target) in zip(
            (3, 2), zip(self.filter_size[::-1], self.stride[::-1], self.output_size(x.shape[2], x.shape[3])[::-1])
        ):
            before = same_padding(target, k, s)[0] if self.pad == "SAME" else 0
            pads += [-before, target + before - full.shape[axis]]
        if any(pads):
            full = F.pad(full, pads)
        return full


class _Shifted:
    """Shared constructor of the four shifted kinds: no ``pad`` argument (they pad or crop explicitly)."""

    _default_filter: tuple[int, int] = LAYER_KINDS["down_shifted_conv2d"][1]

    def __init__(
        self,
        in_channels: int,
        num_filters: int,
        filter_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] = (1, 1),
        init_scale: float = 1.0,
        nonlinearity: str | None = None,
        polyak_decay: float | None = None,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            in_channels,
            num_filters,
            self._default_filter if filter_size is None else filter_size,
            stride,
            "VALID",
            init_scale,
            nonlinearity,
            polyak_decay,
            device=device,
            dtype=dtype,
        )


class DownShiftedConv2D(_Shifted, WeightNormConv2D):
    """The original ``down_shifted_conv2d``: pad ``kh - 1`` rows on top and ``(kw - 1) // 2`` columns on
    each side with zeros, then a ``'VALID'`` conv: each output sees only rows at or above its own.

    Shapes: x (B, in, H, W) -> (B, num_filters, H / sh, W / sw). Twin: ``tf_impl.layers.DownShiftedConv2D``.
    """

    _default_filter = LAYER_KINDS["down_shifted_conv2d"][1]

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.filter_size
        return F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0))


class DownRightShiftedConv2D(_Shifted, WeightNormConv2D):
    """The original ``down_right_shifted_conv2d``: pad ``kh - 1`` rows on top and ``kw - 1`` columns on the
    left, then a ``'VALID'`` conv: each output sees only pixels above it or to its left (itself included).

    Shapes: x (B, in, H, W) -> (B, num_filters, H / sh, W / sw). Twin: ``tf_impl.layers.DownRightShiftedConv2D``.
    """

    _default_filter = LAYER_KINDS["down_right_shifted_conv2d"][1]

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.filter_size
        return F.pad(x, (kw - 1, 0, kh - 1, 0))


class DownShiftedConv2DTranspose(_Shifted, WeightNormConv2DTranspose):
    """The original ``down_shifted_deconv2d``: a ``'VALID'`` ``deconv2d``, then keep rows ``[0, H' - kh + 1)``
    and columns ``[(kw - 1) // 2, W' - (kw - 1) // 2)``. The init moments are taken before the crop.

    Shapes: x (B, in, H, W) -> (B, num_filters, H*sh, W*sw). Twin: ``tf_impl.layers.DownShiftedConv2DTranspose``.
    """

    _default_filter = LAYER_KINDS["down_shifted_deconv2d"][1]

    def _post(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.filter_size
        side = (kw - 1) // 2
        return y[:, :, : y.shape[2] - kh + 1, side : y.shape[3] - side]


class DownRightShiftedConv2DTranspose(_Shifted, WeightNormConv2DTranspose):
    """The original ``down_right_shifted_deconv2d``: a ``'VALID'`` ``deconv2d``, then keep rows
    ``[0, H' - kh + 1)`` and columns ``[0, W' - kw + 1)``. The init moments are taken before the crop.

    Shapes: x (B, in, H, W) -> (B, num_filters, H*sh, W*sw). Twin: ``tf_impl.layers.DownRightShiftedConv2DTranspose``.
    """

    _default_filter = LAYER_KINDS["down_right_shifted_deconv2d"][1]

    def _post(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.filter_size
        return y[:, :, : y.shape[2] - kh + 1, : y.shape[3] - kw + 1]


# The layer class of each conv kind of ``GatedResnet`` (the kinds, by the original's function
# names, and their filters are ``gated_spec.CONV_KINDS``).
CONV_LAYERS: dict[str, type[_WeightNormLayer]] = {
    "conv2d": WeightNormConv2D,
    "down_shifted_conv2d": DownShiftedConv2D,
    "down_right_shifted_conv2d": DownRightShiftedConv2D,
    "nin": Nin,
}
