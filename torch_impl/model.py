"""PixelCNN++ (the original ``pxpp_spec``) as a PyTorch module, NCHW. Twin: ``tf_impl.model``.

The network of docs/model_spec.md, built from ``gated_spec.model.pixelcnn_pp_plan`` (every layer and
block in the original's call order, with its attribute path) and the existing layers and
``GatedResnet``::

    xp = concat([x, ones])                                   # (B, 4, H, W)
    u  = down_shift(u_init(xp))                              # 2x3 down-shifted conv
    ul = down_shift(ul_init_down(xp)) + right_shift(ul_init_right(xp))   # 1x3 and 2x1
    up pass, 3 resolutions: R x (u = up_u[k](u); ul = up_ul[k](ul, a=u)), strided convs between
    down pass: u = down_u[k](u, a=U.pop()); ul = down_ul[k](ul, a=concat([u, L.pop()])), R then R+1
               then R+1 times, shifted deconvs between
    out = nin_out(elu(ul))                                   # nin to 10 M channels

``h`` (``(B, h_channels)``) conditions every block. ``dropout_masks`` (one keep-mask per block, in call
order, each shaped like that block's ``c1``) makes dropout reproducible across backends.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from gated_spec.checks import already_initialized, check_batch, check_channels, check_dtype, check_rank, check_same_dims
from gated_spec.model import IMAGE_CHANNELS, check_image_size, normalize_model_config, pixelcnn_pp_plan
from torch_impl import layers as L
from torch_impl._state import ValidatedLoad
from torch_impl.block import GatedResnet
from torch_impl.ops import LAYOUT, down_shift, elu, right_shift

_LAYER_CLASSES = {
    "down_shifted_conv2d": L.DownShiftedConv2D,
    "down_right_shifted_conv2d": L.DownRightShiftedConv2D,
    "down_shifted_deconv2d": L.DownShiftedConv2DTranspose,
    "down_right_shifted_deconv2d": L.DownRightShiftedConv2DTranspose,
}


def down_pass_a(u: torch.Tensor, ul_skip: torch.Tensor) -> torch.Tensor:
    """The down pass's ``a`` of the ``ul`` blocks: ``concat([u, ul_skip])`` on channels, ``u`` first."""
    return torch.cat([u, ul_skip], dim=1)


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """``concat([x, ones])`` on channels: the ones channel marks the image against the convs' zero padding."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


class PlannedNetwork(ValidatedLoad, nn.Module):
    """A network built from a plan (``gated_spec.model.PlanEntry`` list, the original's call order):
    one module per entry, at the entry's attribute path (``a.3`` is ``a[3]`` of a ``ModuleList``).
    The checks, the forward with its dropout masks and EMA, and the all-or-nothing init are the same
    for every network; each subclass writes ``_run``, the network once in call order."""

    owner = "network"

    def _build(self, config: dict, plan: list, device: Any, dtype: Any) -> None:
        self.config = config
        self.plan = plan
        factory = {"device": device, "dtype": dtype}
        polyak_decay, h_channels = config["polyak_decay"], config["h_channels"]
        lists: dict[str, list[nn.Module]] = {}
        for e in self.plan:
            if e.kind == "gated_resnet":
                m: nn.Module = GatedResnet(e.in_channels, e.a_channels or None, h_channels, e.conv, config["nonlinearity"],
                                           config["dropout_p"], polyak_decay, **factory)
            elif e.kind == "nin":
                m = L.Nin(e.in_channels, e.out_channels, polyak_decay=polyak_decay, **factory)
            else:
                m = _LAYER_CLASSES[e.kind](e.in_channels, e.out_channels, e.filter_size, e.stride, polyak_decay=polyak_decay, **factory)
            if "." in e.path:
                lists.setdefault(e.path.split(".")[0], []).append(m)
            else:
                setattr(self, e.path, m)
        for name, modules in lists.items():
            setattr(self, name, nn.ModuleList(modules))

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (device and dtype aside), as ``tf_impl``'s ``get_config``."""
        return dict(self.config)

    def layers_in_call_order(self) -> list[nn.Module]:
        """Every layer and block, as ``plan`` lists them."""
        return [self.get_submodule(e.path) for e in self.plan]

    @property
    def wn_layers(self) -> list[nn.Module]:
        """Every weight-normalised layer, blocks' layers included, in call order."""
        out = []
        for m in self.layers_in_call_order():
            out += m.wn_layers if isinstance(m, GatedResnet) else [m]
        return out

    @property
    def initialized(self) -> bool:
        return all(m.is_initialized for m in self.wn_layers)

    def _check_size(self, height: int, width: int) -> None:
        """Raise unless the network runs on images of this size (every size, unless a subclass says)."""

    # -- checks ------------------------------------------------------------------------------
    def _check_inputs(self, x: torch.Tensor, h: torch.Tensor | None, dropout_masks: Sequence[torch.Tensor] | None) -> None:
        owner = self.owner
        dtype = str(next(self.parameters()).dtype).replace("torch.", "")
        check_rank(owner, "x", x, LAYOUT)
        check_channels(owner, "x", x, IMAGE_CHANNELS, 1, LAYOUT)
        check_dtype(owner, "x", str(x.dtype).replace("torch.", ""), dtype)
        self._check_size(x.shape[2], x.shape[3])
        if (h is None) != (self.config["h_channels"] is None):
            raise ValueError(f"{owner}: built with h_channels={self.config['h_channels']}; received h={'None' if h is None else 'a tensor'}")
        if h is not None:
            check_rank(owner, "h", h, LAYOUT, rank=2)
            check_same_dims(owner, "h", h, x, (0,), "x", ("B",))
        if dropout_masks is not None:
            n = sum(e.kind == "gated_resnet" for e in self.plan)
            if len(dropout_masks) != n:
                raise ValueError(f"{owner}: expected {n} dropout masks (one per block, in call order); received {len(dropout_masks)}")

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, *, use_ema: bool = False,
                dropout_masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Mixture parameters ``(B, 10 M, H, W)``; ``use_ema`` reads every shadow. Dropout: in
        ``train()`` mode, or on ``dropout_masks`` in any mode."""
        self._check_inputs(x, h, dropout_masks)
        return self._run(
            x, h, lambda m, t: m(t, use_ema=use_ema),
            lambda m, t, a, hh, mask: m(t, a, hh, use_ema=use_ema, dropout_mask=mask), dropout_masks)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, h: torch.Tensor | None = None, *, dropout: bool = True,
                   dropout_masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The original's ``init=True`` pass: one pass over the init batch in call order, each layer
        initialising on the output of the ones before it; returns the network output of that pass.

        Dropout as in the original's init (on when ``dropout_p > 0``; ``dropout=False`` for none;
        ``dropout_masks`` for given masks). All or nothing: on an error every weight is as before.
        """
        if any(m.is_initialized for m in self.wn_layers):
            raise already_initialized(self.owner)
        self._check_inputs(x, h, dropout_masks)
        check_batch(self.owner, x)
        saved = {k: v.clone() for k, v in self.state_dict().items()}
        try:
            return self._run(
                x, h, lambda m, t: m.initialize(t),
                lambda m, t, a, hh, mask: m.initialize(t, a, hh, dropout_mask=mask, dropout=dropout), dropout_masks)
        except BaseException:
            self.load_state_dict(saved)
            raise


class PixelCNNpp(PlannedNetwork):
    """The original ``pxpp_spec(x, h, init, ema, dropout_p, nr_resnet, nr_filters, nr_logistic_mix,
    resnet_nonlinearity)``: ``x`` (B, 3, H, W) in [-1, 1] -> mixture parameters (B, 10 M, H, W).

    Args:
        nr_resnet: ``R``, blocks per resolution in the up pass (``R + 1`` below the top in the down pass).
        nr_filters: ``F``, the channel count of both streams.
        nr_logistic_mix: ``M``, mixture components of the output distribution.
        nonlinearity: the blocks' nonlinearity (the output uses plain ``elu`` whatever this is).
        h_channels: size of the conditioning vector ``h``; ``None`` for an unconditional model.
        dropout_p: the blocks' dropout (the original trains with 0.5); active in ``train()``.
        polyak_decay: keep Polyak shadows of every weight with this decay; ``None`` for none.
    """

    owner = "PixelCNNpp"

    def __init__(
        self,
        nr_resnet: int = 5,
        nr_filters: int = 160,
        nr_logistic_mix: int = 10,
        nonlinearity: str = "concat_elu",
        h_channels: int | None = None,
        dropout_p: float = 0.5,
        polyak_decay: float | None = None,
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        config = normalize_model_config({
            "nr_resnet": nr_resnet, "nr_filters": nr_filters, "nr_logistic_mix": nr_logistic_mix, "nonlinearity": nonlinearity,
            "h_channels": h_channels, "dropout_p": dropout_p, "polyak_decay": polyak_decay})
        self._build(config, pixelcnn_pp_plan(config), device, dtype)

    def _check_size(self, height: int, width: int) -> None:
        check_image_size(self.owner, height, width)

    # -- the network -------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, h: torch.Tensor | None, layer: Callable[[nn.Module, torch.Tensor], torch.Tensor],
             block: Callable[..., torch.Tensor], masks: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """The network once, in call order; ``layer(m, t)`` runs a layer, ``block(m, x, a, h, mask)`` a block."""
        R = self.config["nr_resnet"]
        mask_iter = iter(masks) if masks is not None else None

        def run_block(m: nn.Module, t: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
            return block(m, t, a, h, None if mask_iter is None else next(mask_iter))

        xp = with_ones(x)
        U = [down_shift(layer(self.u_init, xp))]
        Lst = [down_shift(layer(self.ul_init_down, xp)) + right_shift(layer(self.ul_init_right, xp))]
        k = 0
        for res in range(3):
            for _ in range(R):
                U.append(run_block(self.up_u[k], U[-1], None))
                Lst.append(run_block(self.up_ul[k], Lst[-1], U[-1]))
                k += 1
            if res < 2:
                U.append(layer(self.downsample_u[res], U[-1]))
                Lst.append(layer(self.downsample_ul[res], Lst[-1]))
        u, ul = U.pop(), Lst.pop()
        k = 0
        for res in range(3):
            for _ in range(R if res == 0 else R + 1):
                u = run_block(self.down_u[k], u, U.pop())
                ul = run_block(self.down_ul[k], ul, down_pass_a(u, Lst.pop()))
                k += 1
            if res < 2:
                u = layer(self.upsample_u[res], u)
                ul = layer(self.upsample_ul[res], ul)
        assert not U and not Lst, "the down pass consumes every entry of the up pass"
        return layer(self.nin_out, elu(ul))
