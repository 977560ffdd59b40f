"""A cached sampler for PixelCNN++: the naive sampler's images, computing only what each new pixel needs,
NCHW. Twin: ``tf_impl.fast_sample``.

The naive sampler (``torch_impl.mixture.sample``, the trainers' loop) runs the whole network on the
current image at every step ``(i, j)`` and keeps the output at ``(i, j)``. Every layer of the network
is causal, with fixed receptive fields (docs/sampler.md):

* the vertical stream ``u`` at level ``l`` (resolution ``H / 2^l``) row ``r`` depends only on image
  rows above ``2^l r``: its row is final once those rows are drawn, so it is computed once, a whole
  row at a time, at step ``(2^l r, 0)``;
* the horizontal stream ``ul`` at level ``l`` pixel ``(r, c)`` depends only on pixels before
  ``(2^l r, 2^l c)`` in raster order: it is computed once, at step ``(2^l r, 2^l c)``;
* every shifted convolution of the network has two kernel rows, so an output row needs its input's
  current row and the one above it: each map keeps only those two rows (:class:`RowCache`), with the
  zero padding the original's convolutions add around them;
* the strided convolutions read the two finer rows ``2r - 1`` and ``2r``; a transposed convolution of
  stride 2 writes two finer rows (or a 2 x 2 block) from one coarser row (pixel), kept until the finer
  level reaches them.

So each step computes one pixel of every ``ul`` layer at level 0 (a row of every ``u`` layer at
``j = 0``; the coarser levels every second or fourth row and column), each from the two cached rows
of its input, with the same kernels, biases and steps as the full pass: the same weights (live or
averaged), ``h`` included, dropout off. The draw at ``(i, j)`` is ``sample_from_discretized_mix_logistic``
on the output at ``(i, j)`` with the noise at ``(i, j)``, as in the naive sampler. The outputs agree
with the full pass's to float32 rounding (a convolution over a window is the same sum as over the
whole map, which the library may round differently), so the images agree on the 8-bit grid except
where a drawn value sits within rounding of a bin edge or a component choice is a near-tie.

The network is compiled once into a *program*: the original's call order (``PixelCNNpp._run``) with
every layer an op that owns its state and computes its output at one level-``l`` row ``r`` and columns
``[c0, c1)``.

PixelSNAIL (``torch_impl.pixelsnail``; docs/sampler.md "PixelSNAIL") compiles the same way at level 0:
its ``ul`` stream's shifted convs and blocks as PixelCNN++'s horizontal stream (``model_spec``'s ``u``
as its vertical one), and each attention block as one pixel op whose state is the keys and values of
every earlier pixel. The key of pixel ``p`` reads the image at ``p``, so it is computed at the next
step, once ``p`` is drawn, and appended; with ``att_downsample`` ``d > 1`` a ``d x d`` block's pooled
key and value (the maximum over the block, as ``max_pool``) are appended once its last pixel's are in:
exactly the keys the pooled mask ``-max_pool(-mask)`` leaves to every later query. The attention over
the appended keys is the original's formula without the masked columns, whose terms are exactly zero
in the full pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gated_spec import CHANNEL_MULTIPLIER
from gated_spec.checks import check_positive
from gated_spec.model import IMAGE_CHANNELS, check_image_size, raster
from gated_spec.pixelsnail import PROBS_EPS, attention_scale, pooled_blocks
from torch_impl.block import GatedResnet
from torch_impl.layers import DownRightShiftedConv2D, DownShiftedConv2D, Nin, WeightNormConv2D, WeightNormConv2DTranspose
from torch_impl.mixture import sample_from_discretized_mix_logistic, sampler_noise
from torch_impl.model import PixelCNNpp, down_pass_a
from torch_impl.ops import elu
from torch_impl.pixelsnail import PixelSNAIL, background

PAD = 1  # zero columns each side of a cached row: the widest shifted kernel (3 columns) needs one

# The zero columns each shifted conv pads on the left for a filter ``kw`` columns wide (docs/spec.md).
LEFT_PADDING: dict[type, Callable[[int], int]] = {
    DownShiftedConv2D: lambda kw: (kw - 1) // 2,
    DownRightShiftedConv2D: lambda kw: kw - 1,
}


def left_columns(layer: WeightNormConv2D) -> int:
    """``LEFT_PADDING`` of a shifted conv (of its kind, subclasses included)."""
    for kind, left in LEFT_PADDING.items():
        if isinstance(layer, kind):
            return left(layer.filter_size[1])
    raise ValueError(f"CachedSampler: expected a shifted convolution; received {type(layer).__name__}")


class RowCache:
    """The two most recent rows (``r - 1`` and ``r``) of one map at its level, with ``PAD`` zero columns
    on each side: what a two-row shifted convolution reads to compute row ``r`` of its output.

    Shapes: ``buf`` (B, C, 2, W + 2 PAD). A write that starts at column 0 begins a new row (the
    current row moves up, the new one starts as zeros), so writing a whole row, or one pixel after
    another, both keep the two rows in order. Twin: ``tf_impl.fast_sample.RowCache``.
    """

    def __init__(self, batch: int, channels: int, width: int, like: torch.Tensor) -> None:
        self.width = width
        self.buf = torch.zeros(batch, channels, 2, width + 2 * PAD, dtype=like.dtype, device=like.device)

    def write(self, c0: int, value: torch.Tensor) -> None:
        """Columns ``[c0, c0 + n)`` of the current row from ``value`` (B, C, 1, n)."""
        if c0 == 0:
            self.buf[:, :, 0].copy_(self.buf[:, :, 1])
            self.buf[:, :, 1].zero_()
        self.buf[:, :, 1:, PAD + c0:PAD + c0 + value.shape[3]] = value

    def window(self, columns: slice) -> torch.Tensor:
        """Both rows at the padded ``columns`` (column ``c`` of the map is padded column ``c + PAD``)."""
        return self.buf[:, :, :, columns]

    def current(self, c0: int, c1: int) -> torch.Tensor:
        """Columns ``[c0, c1)`` of the current row: (B, C, 1, c1 - c0)."""
        return self.buf[:, :, 1:, PAD + c0:PAD + c1]


class _Conv:
    """A shifted convolution's kernel and bias, read once, applied to cached rows: the output at columns
    ``[c0, c1)`` of the current row reads padded input columns ``PAD + s c0 - left`` to
    ``PAD + s (c1 - 1) - left + kw`` of the input's two rows (``left``: the zero columns the original
    pads on the left; ``s``: the stride)."""

    def __init__(self, layer: WeightNormConv2D, use_ema: bool) -> None:
        self.W = layer.kernel(use_ema)
        self.b = layer.raw_weights(use_ema)[2]
        self.stride = layer.stride
        self.kw = layer.filter_size[1]
        self.left = left_columns(layer)

    def columns(self, c0: int, c1: int) -> slice:
        """The padded input columns the outputs at ``[c0, c1)`` read."""
        s = self.stride[1]
        start = PAD + s * c0 - self.left
        return slice(start, start + s * (c1 - 1 - c0) + self.kw)

    def apply(self, window: torch.Tensor) -> torch.Tensor:
        """The convolution (``'VALID'``, bias added) of an already padded window."""
        return F.conv2d(window, self.W, self.b, self.stride)

    def __call__(self, rows: "RowCache | _Nonlinear", c0: int, c1: int) -> torch.Tensor:
        return self.apply(rows.window(self.columns(c0, c1)))  # (B, out, 1, c1 - c0)


class _Dense:
    """A ``Nin``'s weights, read once: ``(x @ V) * (g / sqrt(sum(V**2))) + b`` on every pixel, as ``Nin``."""

    def __init__(self, layer: Nin, use_ema: bool) -> None:
        self.V, g, self.b = layer.raw_weights(use_ema)
        self.scale = g / torch.sqrt(torch.sum(self.V * self.V, dim=1))
        self.units = layer.units

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        y = F.linear(x.movedim(1, -1).reshape(-1, C), self.V) * self.scale + self.b
        return y.reshape(B, H, W, self.units).movedim(-1, 1)


@dataclass
class _Op:
    """One step of the program: ``run(r, c0, c1)`` computes row ``r``, columns ``[c0, c1)`` of its output
    at ``level``; ``stream`` is ``'u'`` (a whole row at a time) or ``'ul'`` (a pixel at a time)."""

    level: int
    stream: str
    run: Callable[[int, int, int], None]


class CachedSampler:
    """The network's output at each step of the raster, from cached rows: call :meth:`output` at
    ``(i, j)``, then :meth:`put` the pixel drawn there, in raster order from ``(0, 0)``.

    Args:
        model: a ``PixelCNNpp`` or a ``PixelSNAIL`` (initialised); read, never changed.
        batch, height, width: the images drawn (H, W multiples of 4 for a PixelCNN++).
        h: the conditioning ``(B, h_channels)`` for a conditional model, else ``None``.
        use_ema: read the averaged weights (the shadows).

    The state is the image drawn so far, padded (``(B, 4, H + 1, W + 2)``, with the ones channel), and
    two rows of every map. Twin: ``tf_impl.fast_sample.CachedSampler``.
    """

    def __init__(self, model: PixelCNNpp | PixelSNAIL, batch: int, height: int, width: int, h: torch.Tensor | None = None,
                 use_ema: bool = False) -> None:
        if not isinstance(model, (PixelCNNpp, PixelSNAIL)):
            raise ValueError(f"CachedSampler: expected a PixelCNNpp or a PixelSNAIL; received {type(model).__name__}")
        if isinstance(model, PixelSNAIL):  # the network runs on every size
            check_positive("height", height)
            check_positive("width", width)
        else:
            check_image_size("CachedSampler", height, width)
        if (h is None) != (model.config["h_channels"] is None):
            raise ValueError(f"CachedSampler: the model was built with h_channels={model.config['h_channels']}; "
                             f"received h={'None' if h is None else 'a tensor'}")
        like = next(model.parameters())
        if h is not None and (tuple(h.shape) != (batch, model.config["h_channels"]) or h.dtype != like.dtype):
            raise ValueError(f"CachedSampler: expected h of shape {(batch, model.config['h_channels'])} and dtype {like.dtype} "
                             f"(the model's); received {tuple(h.shape)}, {h.dtype}")
        self.model, self.batch, self.height, self.width, self.use_ema = model, batch, height, width, use_ema
        self._like = like
        self.h = None if h is None else h.to(like.device)
        self.xp = torch.zeros(batch, IMAGE_CHANNELS + 1, height + 1, width + 2 * PAD, dtype=like.dtype, device=like.device)
        self.xp[:, IMAGE_CHANNELS, 1:, PAD:PAD + width] = 1.0  # the ones channel, inside the image only
        with torch.no_grad():
            self.program, self.out = self._compile_snail() if isinstance(model, PixelSNAIL) else self._compile()

    # -- the program -------------------------------------------------------------------------------
    def _cache(self, channels: int, level: int) -> RowCache:
        return RowCache(self.batch, channels, self.width >> level, self._like)

    def _compile(self) -> tuple[list[_Op], Callable[[int], torch.Tensor]]:
        """The network's call order (``PixelCNNpp._run``) with caches in place of tensors."""
        m, R = self.model, self.model.config["nr_resnet"]
        prog: list[_Op] = []
        U = [self._first_u(prog)]
        Lst = [self._first_ul(prog)]
        k = 0
        for res in range(3):
            for _ in range(R):
                U.append(self._block(prog, m.up_u[k], "u", res, U[-1], None))
                Lst.append(self._block(prog, m.up_ul[k], "ul", res, Lst[-1], [U[-1]]))
                k += 1
            if res < 2:
                U.append(self._strided(prog, m.downsample_u[res], "u", res + 1, U[-1]))
                Lst.append(self._strided(prog, m.downsample_ul[res], "ul", res + 1, Lst[-1]))
        u, ul = U.pop(), Lst.pop()
        k = 0
        for res in range(3):
            level = 2 - res
            for _ in range(R if res == 0 else R + 1):
                u = self._block(prog, m.down_u[k], "u", level, u, [U.pop()])
                ul = self._block(prog, m.down_ul[k], "ul", level, ul, [u, Lst.pop()])
                k += 1
            if res < 2:
                u = self._transposed(prog, m.upsample_u[res], "u", level - 1, u)
                ul = self._transposed(prog, m.upsample_ul[res], "ul", level - 1, ul)
        assert not U and not Lst, "the down pass consumes every entry of the up pass"
        nin_out = _Dense(m.nin_out, self.use_ema)
        return prog, lambda j: nin_out(elu(ul.current(j, j + 1)))

    def _compile_snail(self) -> tuple[list[_Op], Callable[[int], torch.Tensor]]:
        """``PixelSNAIL._run``'s call order, every op at level 0: the streams as PixelCNN++'s first
        level, each attention block one pixel op (:meth:`_attention`)."""
        m, R = self.model, self.model.config["nr_resnet"]
        prog: list[_Op] = []
        u = self._first_u(prog) if m.two_streams else None
        ul = self._first_ul(prog)
        k = 0
        for r in range(m.config["attn_rep"]):
            for _ in range(R):
                if m.two_streams:
                    u = self._block(prog, m.u[k], "u", 0, u, None)
                ul = self._block(prog, m.ul[k], "ul", 0, ul, None if u is None else [u])
                k += 1
            ul = self._attention(prog, r, ul)
        nin_out = _Dense(m.nin_out, self.use_ema)
        return prog, lambda j: nin_out(elu(ul.current(j, j + 1)))

    def _pixel_block(self, block: GatedResnet) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
        """A ``gated_resnet`` with ``nin`` convs on one pixel: ``(x, a)`` (B, C, 1, 1) -> (B, F, 1, 1),
        the steps of :meth:`_block` with dense layers, dropout off."""
        nl = block._nonlinearity
        conv_in, conv_out = _Dense(block.conv_input, self.use_ema), _Dense(block.conv_output, self.use_ema)
        skip = _Dense(block.nin_skip, self.use_ema) if block.nin_skip is not None else None
        condition = None
        if self.h is not None:
            condition = block._condition(self.h, block.hw_ema if self.use_ema else block.hw)

        def run(x: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
            c1 = conv_in(nl(x))
            if a is not None:
                c1 = c1 + block._skip(a, lambda layer, t: skip(t))
            c2 = conv_out(block._activate_c1(c1))
            if condition is not None:
                c2 = c2 + condition
            value, gate = block._split(c2)
            return x + value * torch.sigmoid(gate)

        return run

    def _attention(self, prog: list[_Op], r: int, ul: RowCache) -> RowCache:
        """Attention block ``r`` at pixel ``(i, j)``: first the keys and values of the pixel before,
        now drawn (``key_nin(key_block(concat([x, ul, bg])))``, keys first), appended (pooled by
        ``att_downsample`` ``d``: a ``SAME`` pooling block once its last pixel is in); then the query
        (``query_nin(query_block(concat([ul, bg])))``) against the ``n`` appended keys::

            dot = q . k;  dot -= max(dot);  e = exp(dot / sqrt(K));  mixed = (e / (sum(e) + 1e-6)) . v

        (0 with no key yet), and ``mix_block(ul, a=mixed)``. The original's masked columns add exactly
        0 to its sum and never win its maximum (``dot - 1e10``) while a key is unmasked."""
        m, K, d = self.model, self.model.key_channels, self.model.att_downsample
        H, W = self.height, self.width
        blocks = pooled_blocks(H, W, d)  # last pixel -> the block's rows and columns
        key_block, query_block, mix_block = (self._pixel_block(b[r]) for b in (m.key_block, m.query_block, m.mix_block))
        key_nin, query_nin = _Dense(m.key_nin[r], self.use_ema), _Dense(m.query_nin[r], self.use_ema)
        scale = attention_scale(K)
        bg = background(self.xp[:, :IMAGE_CHANNELS, 1:, PAD:PAD + W])  # (B, 6, H, W), as the full pass's
        raw = torch.zeros(self.batch, key_nin.units, H, W, dtype=self._like.dtype, device=self._like.device)
        keys = torch.zeros(self.batch, len(blocks), key_nin.units, dtype=raw.dtype, device=raw.device)
        state: dict[str, Any] = {"n": 0, "before": None}  # appended keys; the pixel before and its ul
        out = self._cache(m.config["nr_filters"], 0)

        def run(i: int, j: int, _: int) -> None:
            if state["before"] is not None:
                pi, pj, ul_before = state["before"]
                x = self.xp[:, :IMAGE_CHANNELS, 1 + pi:2 + pi, PAD + pj:PAD + pj + 1]
                content = torch.cat([x, ul_before, bg[:, :, pi:pi + 1, pj:pj + 1]], dim=1)
                raw[:, :, pi:pi + 1, pj:pj + 1] = key_nin(key_block(content, None))
                if (pi, pj) in blocks:
                    r0, r1, c0, c1 = blocks[pi, pj]
                    keys[:, state["n"]] = torch.amax(raw[:, :, r0:r1, c0:c1], dim=(2, 3))
                    state["n"] += 1
            here = ul.current(j, j + 1).clone()
            query = query_nin(query_block(torch.cat([here, bg[:, :, i:i + 1, j:j + 1]], dim=1), None))[:, :, 0, 0]
            n = state["n"]
            mixed = torch.zeros(self.batch, key_nin.units - K, dtype=raw.dtype, device=raw.device)
            if n:
                dot = torch.einsum("bk,bnk->bn", query, keys[:, :n, :K])
                e = torch.exp((dot - torch.amax(dot, dim=-1, keepdim=True)) / scale)
                mixed = torch.einsum("bn,bnc->bc", e / (torch.sum(e, dim=-1, keepdim=True) + PROBS_EPS), keys[:, :n, K:])
            out.write(j, mix_block(here, mixed[:, :, None, None]))
            state["before"] = (i, j, here)

        prog.append(_Op(0, "ul", run))
        return out

    def _first_u(self, prog: list[_Op]) -> RowCache:
        """``u = down_shift(down_shifted_conv2d(xp, [2, 3]))``: row ``r`` is the conv's row ``r - 1``, which
        reads image rows ``r - 2`` and ``r - 1`` (padded rows ``r - 1`` and ``r``); zeros at ``r = 0``."""
        conv, out = _Conv(self.model.u_init, self.use_ema), self._cache(self.model.config["nr_filters"], 0)

        def run(r: int, c0: int, c1: int) -> None:
            if r == 0:
                out.write(c0, torch.zeros_like(out.current(c0, c1)))
            else:
                out.write(c0, conv.apply(self.xp[:, :, r - 1:r + 1, conv.columns(c0, c1)]))

        prog.append(_Op(0, "u", run))
        return out

    def _first_ul(self, prog: list[_Op]) -> RowCache:
        """``ul = down_shift(down_shifted_conv2d(xp, [1, 3])) + right_shift(down_right_shifted_conv2d(xp, [2, 1]))``:
        at ``(r, c)`` the ``[1, 3]`` conv's output at ``(r - 1, c)`` (image row ``r - 1``, padded row ``r``;
        zeros at ``r = 0``) plus the ``[2, 1]`` conv's at ``(r, c - 1)`` (image rows ``r - 1``, ``r``; zeros at ``c = 0``)."""
        m = self.model
        down, right = _Conv(m.ul_init_down, self.use_ema), _Conv(m.ul_init_right, self.use_ema)
        out = self._cache(m.config["nr_filters"], 0)

        def run(r: int, c0: int, c1: int) -> None:
            zeros = torch.zeros_like(out.current(c0, c1))
            above = zeros if r == 0 else down.apply(self.xp[:, :, r:r + 1, down.columns(c0, c1)])
            left = right.apply(self.xp[:, :, r:r + 2, right.columns(c0 - 1, c1 - 1)])
            if c0 == 0:  # column 0 has nothing on its left: the shift's zero, not the conv's bias
                left = torch.cat([zeros[..., :1], left[..., 1:]], dim=3)
            out.write(c0, above + left)

        prog.append(_Op(0, "ul", run))
        return out

    def _block(self, prog: list[_Op], block: GatedResnet, stream: str, level: int, x: RowCache,
               a: list[RowCache] | None) -> RowCache:
        """``gated_resnet`` on cached rows: both convs read two rows; ``a`` (one cache, or the down pass's
        two, concatenated ``u`` first) and the residual are read at the output's own pixels."""
        nl, F_ = block._nonlinearity, block.num_filters
        conv_in, conv_out = _Conv(block.conv_input, self.use_ema), _Conv(block.conv_output, self.use_ema)
        skip = _Dense(block.nin_skip, self.use_ema) if block.nin_skip is not None else None
        condition = None
        if self.h is not None:
            condition = block._condition(self.h, block.hw_ema if self.use_ema else block.hw)
        c1_rows = self._cache(CHANNEL_MULTIPLIER[block.nonlinearity] * F_, level)
        nl_x = _Nonlinear(x, nl)
        out = self._cache(F_, level)

        def run(r: int, c0: int, c1: int) -> None:
            c1_ = conv_in(nl_x, c0, c1)
            if a is not None:
                given = a[0].current(c0, c1) if len(a) == 1 else down_pass_a(a[0].current(c0, c1), a[1].current(c0, c1))
                c1_ = c1_ + block._skip(given, lambda layer, t: skip(t))
            c1_rows.write(c0, block._activate_c1(c1_))
            c2 = conv_out(c1_rows, c0, c1)
            if condition is not None:
                c2 = c2 + condition
            value, gate = block._split(c2)
            out.write(c0, x.current(c0, c1) + value * torch.sigmoid(gate))

        prog.append(_Op(level, stream, run))
        return out

    def _strided(self, prog: list[_Op], layer: WeightNormConv2D, stream: str, level: int, x: RowCache) -> RowCache:
        """A stride-2 shifted conv: level ``l`` row ``r`` from level ``l - 1`` rows ``2r - 1``, ``2r`` (the cache's two)."""
        conv, out = _Conv(layer, self.use_ema), self._cache(layer.num_filters, level)
        prog.append(_Op(level, stream, lambda r, c0, c1: out.write(c0, conv(x, c0, c1))))
        return out

    def _transposed(self, prog: list[_Op], layer: WeightNormConv2DTranspose, stream: str, level: int, x: RowCache) -> RowCache:
        """A stride-2 shifted transposed conv: coarser row ``r`` (pixel ``(r, c)``) gives finer rows ``2r``,
        ``2r + 1`` (a 2 x 2 block), computed by the layer itself at the even finer row (and column) and
        kept for the odd one. Kernel rows equal the stride, so rows never overlap; a pixel at a time needs
        columns that do not overlap either (the ``[2, 2]`` kernel), a whole row any kernel."""
        if stream == "ul" and layer.filter_size[1] != layer.stride[1]:
            raise ValueError(f"CachedSampler: a pixel at a time needs non-overlapping columns; {type(layer).__name__} "
                             f"has filter {layer.filter_size} at stride {layer.stride}")
        pending = torch.zeros(self.batch, layer.num_filters, layer.stride[0], self.width >> level, dtype=self._like.dtype,
                              device=self._like.device)
        out = self._cache(layer.num_filters, level)

        def run(r: int, c0: int, c1: int) -> None:
            if r % 2 == 0 and c0 % 2 == 0:
                lo, hi = c0 // 2, (c1 + 1) // 2
                pending[:, :, :, 2 * lo:2 * hi] = layer(x.current(lo, hi), use_ema=self.use_ema)
            out.write(c0, pending[:, :, r % 2:r % 2 + 1, c0:c1])

        prog.append(_Op(level, stream, run))
        return out

    # -- the steps ---------------------------------------------------------------------------------
    @torch.no_grad()
    def output(self, i: int, j: int) -> torch.Tensor:
        """The network's output at ``(i, j)`` on the image drawn so far: (B, 10 M, 1, 1), as the full
        pass's ``[:, :, i:i + 1, j:j + 1]``. Steps go in raster order, each followed by :meth:`put`."""
        for op in self.program:
            step = 1 << op.level
            if op.stream == "u":
                if j == 0 and i % step == 0:
                    op.run(i >> op.level, 0, self.width >> op.level)
            elif i % step == 0 and j % step == 0:
                op.run(i >> op.level, j >> op.level, (j >> op.level) + 1)
        return self.out(j)

    def put(self, i: int, j: int, pixel: torch.Tensor) -> None:
        """Pixel ``(i, j)`` of every image: (B, 3)."""
        self.xp[:, :IMAGE_CHANNELS, 1 + i, PAD + j] = pixel

    def image(self) -> torch.Tensor:
        """The images drawn so far: (B, 3, H, W), zeros where nothing is drawn yet."""
        return self.xp[:, :IMAGE_CHANNELS, 1:, PAD:PAD + self.width].clone()


class _Nonlinear:
    """``nonlinearity(x)`` on a cache's window, as the block's first conv reads it: the nonlinearity of
    the zero padding is zero for every choice (``elu(0) = relu(0) = 0``), so padding after it, as the
    original does, and before it give the same window."""

    def __init__(self, rows: RowCache, nl: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.rows, self.nl = rows, nl

    def window(self, columns: slice) -> torch.Tensor:
        return self.nl(self.rows.window(columns))


@torch.no_grad()
def sample(model: PixelCNNpp | PixelSNAIL, batch: int, height: int, width: int, h: torch.Tensor | None = None, *,
           u_mix: torch.Tensor | None = None, u_value: torch.Tensor | None = None, use_ema: bool = False,
           generator: torch.Generator | None = None, progress: bool = False,
           on_step: Callable[[int, int, torch.Tensor], Any] | None = None) -> torch.Tensor:
    """The images ``torch_impl.mixture.sample`` draws (B, 3, H, W), with the cached network
    (:class:`CachedSampler`): same arguments, same noise contract (``u_mix`` (B, H, W, M) and ``u_value``
    (B, H, W, 3), position ``(i, j)`` used at step ``(i, j)``; drawn from ``generator`` in the same order
    where not given). ``on_step(i, j, l)`` sees each step's output (B, 10 M, 1, 1) before the draw."""
    M = model.config["nr_logistic_mix"]
    u_mix, u_value = sampler_noise(batch, height, width, M, next(model.parameters()), u_mix, u_value, generator)
    sampler = CachedSampler(model, batch, height, width, h, use_ema)
    for i, j in raster(height, width, progress):
        l = sampler.output(i, j)
        if on_step is not None:
            on_step(i, j, l)
        draw = sample_from_discretized_mix_logistic(l, u_mix[:, i:i + 1, j:j + 1], u_value[:, i:i + 1, j:j + 1])
        sampler.put(i, j, draw[:, :, 0, 0])
    return sampler.image()
