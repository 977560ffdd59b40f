"""``gated_resnet`` of the original ``nn.py`` (PixelCNN++ / PixelSNAIL), as a PyTorch module, NCHW.

With ``F`` the channel count of ``x`` and ``nl`` the nonlinearity::

    c1 = conv_input(nl(x))                # F channels
    c1 += nin_skip(nl(a))                 # if a is given (any channel count; pitfall 12)
    c1 = dropout(nl(c1))                  # nl applied whether or not a is given (pitfall 13)
    c2 = conv_output(c1)                  # 2F channels, init_scale 0.1
    c2 += (h @ hw).view(B, 2F, 1, 1)      # if h is given; hw is [K, 2F] (pitfall 7)
    value, gate = c2[:, :F], c2[:, F:]    # value first (pitfall 11)
    out = x + value * sigmoid(gate)

Submodules carry descriptive names (``conv_input``, ``nin_skip``, ``conv_output``); the original's
checkpoint names (``conv2d_0``, ``dense_0``, ...) depend on the conv kind and call order and are
mapped by ``parity.table``. ``hw`` is created here, at construction, so an optimiser built before
the first call sees it (pitfall 7). On the CPU an NCHW input runs channels-last inside (oneDNN's
native layout for the convolutions) and the output comes back NCHW; a channels-last input gives a
channels-last output. Twin: ``tf_impl.block.GatedResnet``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from gated_spec import CHANNEL_MULTIPLIER, SECOND_CONV_INIT_SCALE, SHADOW_SUFFIX, STAGES
from gated_spec.checks import (
    UNINITIALIZED_WARNING,
    check_batch,
    check_given,
    check_mask_dtype,
    already_initialized,
    check_channels,
    check_dtype,
    check_positive,
    check_rank,
    check_same_dims,
)
from torch_impl._state import ValidatedLoad
from torch_impl.layers import CONV_LAYERS, Nin
from torch_impl.ops import LAYOUT, get_nonlinearity



def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


class GatedResnet(ValidatedLoad, nn.Module):
    """The original ``gated_resnet(x, a, h, nonlinearity, conv, init, ema, dropout_p)``.

    Shapes: x (B, F, H, W); a (B, a_channels, H, W); h (B, h_channels) -> (B, F, H, W).

    Args:
        num_filters: ``F``, the channel count of ``x`` and of the output.
        a_channels: channel count of the auxiliary input ``a``; ``None`` for a block without it.
        h_channels: size ``K`` of the conditioning vector ``h``; ``None`` for a block without it.
        conv: ``'conv2d'``, ``'down_shifted_conv2d'``, ``'down_right_shifted_conv2d'`` or ``'nin'``.
        nonlinearity: ``'concat_elu'`` (the original's default), ``'elu'`` or ``'relu'``.
        dropout_p: drop probability. The original applies ``tf.nn.dropout`` on every pass and its
            scripts pass ``dropout_p=0`` at test time; here dropout runs in ``train()`` mode, and
            ``dropout_mask`` (a 0/1 keep mask shaped like ``c1``) applies a given mask in any mode.
        polyak_decay: keep Polyak-averaged shadows with this decay (the original trains with 0.9995);
            ``None`` for none.
    """

    def __init__(
        self,
        num_filters: int,
        a_channels: int | None = None,
        h_channels: int | None = None,
        conv: str = "conv2d",
        nonlinearity: str = "concat_elu",
        dropout_p: float = 0.0,
        polyak_decay: float | None = None,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        check_positive("num_filters", num_filters)
        if a_channels is not None:
            check_positive("a_channels", a_channels)
        if h_channels is not None:
            check_positive("h_channels", h_channels)
        if conv not in CONV_LAYERS:
            raise ValueError(f"Expected conv to be one of {sorted(CONV_LAYERS)}. Received: conv={conv!r}")
        if nonlinearity is None:
            raise ValueError("Expected nonlinearity to be one of ['concat_elu', 'elu', 'relu']. Received: nonlinearity=None")
        self._nonlinearity = get_nonlinearity(nonlinearity)
        if not 0.0 <= dropout_p < 1.0:
            raise ValueError(f"Expected dropout_p in [0, 1). Received: dropout_p={dropout_p!r}")
        self.num_filters = num_filters
        self.a_channels = a_channels
        self.h_channels = h_channels
        self.conv = conv
        self.nonlinearity = nonlinearity
        self.dropout_p = float(dropout_p)
        self.polyak_decay = polyak_decay
        self._init_checked = False  # whether a call has checked for initialize() (warns once if not run)
        factory = {"device": device, "dtype": dtype}
        mult = CHANNEL_MULTIPLIER[nonlinearity]
        conv_cls = CONV_LAYERS[conv]
        F_ = num_filters
        self.conv_input = conv_cls(mult * F_, F_, polyak_decay=polyak_decay, **factory)
        self.nin_skip = Nin(mult * a_channels, F_, polyak_decay=polyak_decay, **factory) if a_channels else None
        self.conv_output = conv_cls(mult * F_, 2 * F_, init_scale=SECOND_CONV_INIT_SCALE, polyak_decay=polyak_decay, **factory)
        if h_channels:
            self.hw = nn.Parameter(torch.empty(h_channels, 2 * F_, **factory).normal_(0.0, 0.05))  # [K, 2F]
            if polyak_decay is not None:
                self.register_buffer("hw" + SHADOW_SUFFIX, self.hw.detach().clone())
        else:
            self.hw = None

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (device and dtype aside), as ``tf_impl``'s ``get_config``."""
        return {
            "num_filters": self.num_filters,
            "a_channels": self.a_channels,
            "h_channels": self.h_channels,
            "conv": self.conv,
            "nonlinearity": self.nonlinearity,
            "dropout_p": self.dropout_p,
            "polyak_decay": self.polyak_decay,
        }

    @property
    def wn_layers(self) -> list[nn.Module]:
        """The weight-normalised layers in the original's call order."""
        return [m for m in (self.conv_input, self.nin_skip, self.conv_output) if m is not None]

    @property
    def initialized(self) -> bool:
        """Whether the data-dependent init has run (each layer's saved ``initialized`` buffer)."""
        return all(m.is_initialized for m in self.wn_layers)

    def _own_averages(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.hw is None or self.polyak_decay is None:
            return []
        return [(self.hw, self.hw_ema)]

    # -- checks ------------------------------------------------------------------------------
    def _check_inputs(
        self, x: torch.Tensor, a: torch.Tensor | None, h: torch.Tensor | None, dropout_mask: torch.Tensor | None
    ) -> None:
        owner = "GatedResnet"
        dtype = _dtype_name(self.conv_input.V)
        check_rank(owner, "x", x, LAYOUT)
        check_channels(owner, "x", x, self.num_filters, 1, LAYOUT)
        check_dtype(owner, "x", _dtype_name(x), dtype)
        check_given(owner, "a", a, "a_channels", self.a_channels)
        check_given(owner, "h", h, "h_channels", self.h_channels)
        if a is not None:
            check_rank(owner, "a", a, LAYOUT)
            check_same_dims(owner, "a", a, x, (0, 2, 3), "x", ("B", "H", "W"))
            check_channels(owner, "a", a, self.a_channels, 1, LAYOUT)
            check_dtype(owner, "a", _dtype_name(a), dtype)
        if h is not None:
            check_rank(owner, "h", h, LAYOUT, rank=2)
            check_same_dims(owner, "h", h, x, (0,), "x", ("B",))
            check_channels(owner, "h", h, self.h_channels, 1, LAYOUT)
            check_dtype(owner, "h", _dtype_name(h), dtype)
        if dropout_mask is not None:
            if self.dropout_p == 0.0:
                raise ValueError(f"{owner}: received `dropout_mask`, but this block was built with dropout_p=0")
            B, _, H, W = x.shape
            expected = (B, self.num_filters * CHANNEL_MULTIPLIER[self.nonlinearity], H, W)
            if not isinstance(dropout_mask, torch.Tensor):
                raise ValueError(f"{owner}: expected `dropout_mask` as a torch.Tensor; received {type(dropout_mask).__name__}")
            check_mask_dtype(owner, _dtype_name(dropout_mask), dtype)
            if tuple(dropout_mask.shape) != expected:
                raise ValueError(
                    f"{owner}: expected `dropout_mask` of shape {expected}, the shape of c1 ({LAYOUT}); "
                    f"received shape {tuple(dropout_mask.shape)}"
                )

    # -- the block ---------------------------------------------------------------------------
    def _dropout(self, c1: torch.Tensor, mask: torch.Tensor | None, active: bool) -> torch.Tensor:
        if self.dropout_p == 0.0 or (mask is None and not active):
            return c1
        if mask is None:
            mask = torch.rand_like(c1) >= self.dropout_p  # keep probability 1 - p
        return c1 * (1.0 / (1.0 - self.dropout_p)) * mask.to(c1.dtype)

    # The steps of docs/spec.md's gated_resnet, one method each; torch_impl.hooks names the ones a caller may replace.
    def _skip(self, a: torch.Tensor, layer_call: Any) -> torch.Tensor:
        """Step 2: ``nin(nonlinearity(a), F)``."""
        return layer_call(self.nin_skip, self._nonlinearity(a))

    def _activate_c1(self, c1: torch.Tensor) -> torch.Tensor:
        """Step 3: the nonlinearity between the convs, whether or not the block has ``a`` (pitfall 13)."""
        return self._nonlinearity(c1)

    def _condition(self, h: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
        """Step 6: ``h @ hw`` as ``(B, 2F, 1, 1)``, broadcast over H and W."""
        return (h @ hw).view(h.shape[0], 2 * self.num_filters, 1, 1)

    def _split(self, c2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 7: value = the first F channels, gate = the last F.

        ``torch.split`` rather than two slices: its backward is one ``cat``, where each slice's would
        fill a zero tensor of ``c2``'s size and add (same values, about 3 % of the CPU step).
        """
        value, gate = torch.split(c2, self.num_filters, dim=1)
        return value, gate

    def _run(
        self,
        x: torch.Tensor,
        a: torch.Tensor | None,
        h: torch.Tensor | None,
        dropout_mask: torch.Tensor | None,
        dropout_active: bool,
        layer_call: Any,
        hw: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        nl = self._nonlinearity
        stages: dict[str, torch.Tensor] = {}
        given = x
        if self._cpu_channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        c1 = layer_call(self.conv_input, nl(x))  # (B, F, H, W)
        stages["c1_conv"] = c1
        if a is not None:
            skip = self._skip(a, layer_call)
            stages["c1_skip"] = skip
            c1 = c1 + skip
        c1 = self._dropout(self._activate_c1(c1), dropout_mask, dropout_active)  # (B, mult*F, H, W)
        stages["c1"] = c1
        c2 = layer_call(self.conv_output, c1)  # (B, 2F, H, W)
        stages["c2_conv"] = c2
        if h is not None:
            c2 = c2 + self._condition(h, hw)
        stages["c2"] = c2
        value, gate = self._split(c2)
        stages["value"] = value
        stages["gate_logits"] = gate
        out = x + value * torch.sigmoid(gate)
        stages["out"] = out if x is given else out.contiguous(memory_format=torch.contiguous_format)
        return stages

    def _cpu_channels_last(self, x: torch.Tensor) -> bool:
        """Whether to run an NCHW input channels-last inside (returning NCHW): on the CPU oneDNN's
        convolutions work channels-last, and element-wise ops between tensors of mixed layouts take
        torch's slow strided loops. One copy each way."""
        return (x.device.type == "cpu" and x.dim() == 4 and self.conv != "nin"
                and not x.is_contiguous(memory_format=torch.channels_last))

    def stages(
        self,
        x: torch.Tensor,
        a: torch.Tensor | None = None,
        h: torch.Tensor | None = None,
        *,
        use_ema: bool = False,
        dropout_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The forward pass with its named intermediate tensors (``STAGES``; ``c1_skip`` only with ``a``)."""
        self._check_inputs(x, a, h, dropout_mask)
        if not self._init_checked and not torch.compiler.is_compiling():
            self._init_checked = True  # once per block: reading the flags would sync a GPU on every call
            if not self.initialized:
                warnings.warn(UNINITIALIZED_WARNING.format(owner="GatedResnet"), UserWarning, stacklevel=3)
        hw = None
        if h is not None:
            if use_ema and self.polyak_decay is None:
                raise ValueError("GatedResnet: use_ema=True needs averaged weights; this block was built with polyak_decay=None")
            hw = self.hw_ema if use_ema else self.hw
        return self._run(x, a, h, dropout_mask, self.training, lambda layer, t: layer(t, use_ema=use_ema), hw)

    def forward(
        self,
        x: torch.Tensor,
        a: torch.Tensor | None = None,
        h: torch.Tensor | None = None,
        *,
        use_ema: bool = False,
        dropout_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x + value * sigmoid(gate)``; ``use_ema`` reads the shadow of every weight, like the original's ``ema=``."""
        return self.stages(x, a, h, use_ema=use_ema, dropout_mask=dropout_mask)["out"]

    @torch.no_grad()
    def initialize(
        self,
        x: torch.Tensor,
        a: torch.Tensor | None = None,
        h: torch.Tensor | None = None,
        *,
        dropout_mask: torch.Tensor | None = None,
        dropout: bool = True,
    ) -> torch.Tensor:
        """The original's ``init=True`` pass over one batch; returns its output.

        Each layer initialises, in call order, on the already-normalised output of the one before
        (docs/spec.md); dropout is active, as in the original (``dropout_mask`` if given; ``dropout=False``
        for none, as a caller passing ``dropout_p=0`` to the init gets); ``hw`` keeps its initial value and is
        added after the second conv's statistics (pitfall 22). Runs once; shadows restart as copies.
        """
        if any(m.is_initialized for m in self.wn_layers):
            raise already_initialized("GatedResnet")
        self._check_inputs(x, a, h, dropout_mask)
        check_batch("GatedResnet", x)
        out = self._run(x, a, h, dropout_mask, dropout, lambda layer, t: layer.initialize(t), self.hw)["out"]
        for var, shadow in self._own_averages():
            shadow.copy_(var)
        return out
