"""A cached sampler for PixelCNN++: the naive sampler's images, computing only what each new pixel needs,
NHWC. Twin: ``torch_impl.fast_sample`` (the algorithm, step by step, is described there and in
docs/sampler.md).

Each map keeps its two latest rows (:class:`RowCache`, a ``tf.Variable``); the vertical stream is
computed a row at a time, the horizontal one a pixel at a time, the strided and transposed layers on
their levels' schedules, with the kernels, biases and steps of the full pass, eagerly. PixelSNAIL
(``tf_impl.pixelsnail``) compiles at level 0, each attention block a pixel op whose keys and values
(pooled by ``att_downsample`` once a block is complete) are appended once per pixel, as in the twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import tensorflow as tf

from gated_spec import CHANNEL_MULTIPLIER
from gated_spec.checks import check_positive
from gated_spec.model import IMAGE_CHANNELS, check_image_size, raster
from gated_spec.pixelsnail import PROBS_EPS, attention_scale, pooled_blocks
from tf_impl.block import GatedResnet
from tf_impl.layers import DownRightShiftedConv2D, DownShiftedConv2D, Nin, WeightNormConv2D, WeightNormConv2DTranspose
from tf_impl.mixture import sample_from_discretized_mix_logistic, sampler_noise
from tf_impl.model import PixelCNNpp, down_pass_a
from tf_impl.ops import elu
from tf_impl.pixelsnail import PixelSNAIL, background

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
    on each side. A write that starts at column 0 begins a new row. Twin: ``torch_impl.fast_sample.RowCache``.

    Where the torch twin holds one tensor (B, C, 2, W + 2 PAD) and writes into it, this holds each row
    as a list of its padded columns, one (B, 1, 1, C) tensor each: eager TensorFlow's slicing and
    slice-assigning of a ``tf.Variable`` cost far more than the arithmetic here (half of a step at the
    CIFAR-10 size, measured), a list's are free.
    """

    def __init__(self, batch: int, channels: int, width: int, dtype: tf.DType) -> None:
        self.width = width
        self.zero = tf.zeros([batch, 1, 1, channels], dtype)
        self.rows = [[self.zero] * (width + 2 * PAD) for _ in range(2)]  # row r - 1, row r

    def write(self, c0: int, value: tf.Tensor) -> None:
        """Columns ``[c0, c0 + n)`` of the current row from ``value`` (B, 1, n, C)."""
        if c0 == 0:
            self.rows = [self.rows[1], [self.zero] * (self.width + 2 * PAD)]
        n = value.shape[2]
        self.rows[1][PAD + c0:PAD + c0 + n] = [value] if n == 1 else tf.split(value, n, axis=2)

    def window(self, columns: slice) -> tf.Tensor:
        """Both rows at the padded ``columns`` (column ``c`` of the map is padded column ``c + PAD``): (B, 2, n, C)."""
        return tf.concat([tf.concat(row[columns], axis=2) for row in self.rows], axis=1)

    def current(self, c0: int, c1: int) -> tf.Tensor:
        """Columns ``[c0, c1)`` of the current row: (B, 1, c1 - c0, C)."""
        columns = self.rows[1][PAD + c0:PAD + c1]
        return columns[0] if len(columns) == 1 else tf.concat(columns, axis=2)


class _Conv:
    """A shifted convolution's kernel and bias, read once, applied to cached rows (twin:
    ``torch_impl.fast_sample._Conv``)."""

    def __init__(self, layer: WeightNormConv2D, use_ema: bool) -> None:
        self.W = layer.kernel(use_ema)
        self.b = tf.convert_to_tensor(layer.raw_weights(use_ema)[2])
        self.stride = layer.stride
        self.kw = layer.filter_size[1]
        self.left = left_columns(layer)

    def columns(self, c0: int, c1: int) -> slice:
        """The padded input columns the outputs at ``[c0, c1)`` read."""
        s = self.stride[1]
        start = PAD + s * c0 - self.left
        return slice(start, start + s * (c1 - 1 - c0) + self.kw)

    def apply(self, window: tf.Tensor) -> tf.Tensor:
        """The convolution (``'VALID'``, bias added) of an already padded window."""
        return tf.nn.bias_add(tf.nn.conv2d(window, self.W, strides=[1, *self.stride, 1], padding="VALID"), self.b)

    def __call__(self, rows: "RowCache | _Nonlinear", c0: int, c1: int) -> tf.Tensor:
        return self.apply(rows.window(self.columns(c0, c1)))  # (B, 1, c1 - c0, out)


class _Dense:
    """A ``Nin``'s weights, read once: ``(x @ V) * (g / sqrt(sum(V**2))) + b`` on every pixel, as ``Nin``."""

    def __init__(self, layer: Nin, use_ema: bool) -> None:
        V, g, b = (tf.convert_to_tensor(t) for t in layer.raw_weights(use_ema))
        self.V, self.b = V, b
        self.scale = g / tf.sqrt(tf.reduce_sum(tf.square(V), axis=0))
        self.units = layer.units

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        B, H, W, C = x.shape
        y = tf.matmul(tf.reshape(x, [-1, C]), self.V) * self.scale + self.b
        return tf.reshape(y, [B, H, W, self.units])


@dataclass
class _Op:
    """One step of the program: ``run(r, c0, c1)`` computes row ``r``, columns ``[c0, c1)`` of its output
    at ``level``; ``stream`` is ``'u'`` (a whole row at a time) or ``'ul'`` (a pixel at a time)."""

    level: int
    stream: str
    run: Callable[[int, int, int], None]


class CachedSampler:
    """The network's output at each step of the raster, from cached rows: call :meth:`output` at
    ``(i, j)``, then :meth:`put` the pixel drawn there, in raster order from ``(0, 0)``. Arguments as
    ``torch_impl.fast_sample.CachedSampler``; the image drawn so far is ``(B, H + 1, W + 2, 4)``, padded,
    with the ones channel."""

    def __init__(self, model: PixelCNNpp | PixelSNAIL, batch: int, height: int, width: int, h: Any = None,
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
        dtype = tf.as_dtype(model.variable_dtype)
        if h is not None and (tuple(h.shape) != (batch, model.config["h_channels"]) or h.dtype != dtype):
            raise ValueError(f"CachedSampler: expected h of shape {(batch, model.config['h_channels'])} and dtype {dtype.name} "
                             f"(the model's); received {tuple(h.shape)}, {h.dtype.name}")
        model._ensure_built()
        self.model, self.batch, self.height, self.width, self.use_ema = model, batch, height, width, use_ema
        self.dtype = dtype
        self.h = h
        ones = tf.pad(tf.ones([batch, height, width, 1], self.dtype), [[0, 0], [1, 0], [PAD, PAD], [0, 0]])
        self.xp = tf.Variable(tf.concat([tf.zeros([batch, height + 1, width + 2 * PAD, IMAGE_CHANNELS], self.dtype), ones],
                                        axis=-1), trainable=False)  # the ones channel, inside the image only
        self.program, self.out = self._compile_snail() if isinstance(model, PixelSNAIL) else self._compile()

    # -- the program -------------------------------------------------------------------------------
    def _cache(self, channels: int, level: int) -> RowCache:
        return RowCache(self.batch, channels, self.width >> level, self.dtype)

    def _compile(self) -> tuple[list[_Op], Callable[[int], tf.Tensor]]:
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

    def _compile_snail(self) -> tuple[list[_Op], Callable[[int], tf.Tensor]]:
        """``PixelSNAIL._run``'s call order, every op at level 0 (twin: ``torch_impl.fast_sample.CachedSampler._compile_snail``)."""
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

    def _pixel_block(self, block: GatedResnet) -> Callable[[tf.Tensor, Any], tf.Tensor]:
        """A ``gated_resnet`` with ``nin`` convs on one pixel: ``(x, a)`` (B, 1, 1, C) -> (B, 1, 1, F),
        dropout off (twin: ``torch_impl.fast_sample.CachedSampler._pixel_block``)."""
        nl = block._nonlinearity
        conv_in, conv_out = _Dense(block.conv_input, self.use_ema), _Dense(block.conv_output, self.use_ema)
        skip = _Dense(block.nin_skip, self.use_ema) if block.nin_skip is not None else None
        condition = None
        if self.h is not None:
            condition = block._condition(self.h, block.hw_ema if self.use_ema else block.hw)

        def run(x: tf.Tensor, a: Any) -> tf.Tensor:
            c1 = conv_in(nl(x))
            if a is not None:
                c1 = c1 + block._skip(a, lambda layer, t: skip(t))
            c2 = conv_out(block._activate_c1(c1))
            if condition is not None:
                c2 = c2 + condition
            value, gate = block._split(c2)
            return x + value * tf.sigmoid(gate)

        return run

    def _attention(self, prog: list[_Op], r: int, ul: RowCache) -> RowCache:
        """Attention block ``r`` at pixel ``(i, j)``: the keys and values of the pixel before, now drawn,
        appended (a pooled ``d x d`` block once its last pixel is in), then the query against them and
        ``mix_block`` (twin: ``torch_impl.fast_sample.CachedSampler._attention``). Each pixel's keys and
        values are kept as a list of (B, K + C) tensors, as :class:`RowCache` keeps its columns."""
        m, K, d = self.model, self.model.key_channels, self.model.att_downsample
        H, W = self.height, self.width
        blocks = pooled_blocks(H, W, d)  # last pixel -> the block's rows and columns
        key_block, query_block, mix_block = (self._pixel_block(b[r]) for b in (m.key_block, m.query_block, m.mix_block))
        key_nin, query_nin = _Dense(m.key_nin[r], self.use_ema), _Dense(m.query_nin[r], self.use_ema)
        scale = attention_scale(K)
        bg = background(tf.zeros([self.batch, H, W, IMAGE_CHANNELS], self.dtype))  # (B, H, W, 6), as the full pass's
        raw: dict[tuple[int, int], tf.Tensor] = {}  # pixel -> (B, K + C)
        keys: list[tf.Tensor] = []  # appended keys and values, (B, K + C) each
        state: dict[str, Any] = {"before": None}  # the pixel before and its ul
        out = self._cache(m.config["nr_filters"], 0)

        def run(i: int, j: int, _: int) -> None:
            if state["before"] is not None:
                pi, pj, ul_before = state["before"]
                x = self.xp[:, 1 + pi:2 + pi, PAD + pj:PAD + pj + 1, :IMAGE_CHANNELS]
                raw[pi, pj] = key_nin(key_block(tf.concat([x, ul_before, bg[:, pi:pi + 1, pj:pj + 1]], axis=-1), None))[:, 0, 0]
                if (pi, pj) in blocks:
                    r0, r1, c0, c1 = blocks[pi, pj]
                    block = [raw.pop((a, b)) for a in range(r0, r1) for b in range(c0, c1)]
                    keys.append(block[0] if len(block) == 1 else tf.reduce_max(tf.stack(block), axis=0))
            here = ul.current(j, j + 1)
            query = query_nin(query_block(tf.concat([here, bg[:, i:i + 1, j:j + 1]], axis=-1), None))[:, 0, 0]
            if keys:
                kv = tf.stack(keys, axis=1)  # (B, n, K + C)
                dot = tf.einsum("bk,bnk->bn", query, kv[:, :, :K])
                e = tf.exp((dot - tf.reduce_max(dot, axis=-1, keepdims=True)) / scale)
                mixed = tf.einsum("bn,bnc->bc", e / (tf.reduce_sum(e, axis=-1, keepdims=True) + PROBS_EPS), kv[:, :, K:])
            else:
                mixed = tf.zeros([self.batch, key_nin.units - K], self.dtype)
            out.write(j, mix_block(here, mixed[:, None, None]))
            state["before"] = (i, j, here)

        prog.append(_Op(0, "ul", run))
        return out

    def _first_u(self, prog: list[_Op]) -> RowCache:
        """``u = down_shift(down_shifted_conv2d(xp, [2, 3]))``: row ``r`` is the conv's row ``r - 1``, which
        reads image rows ``r - 2`` and ``r - 1`` (padded rows ``r - 1`` and ``r``); zeros at ``r = 0``."""
        conv, out = _Conv(self.model.u_init, self.use_ema), self._cache(self.model.config["nr_filters"], 0)

        def run(r: int, c0: int, c1: int) -> None:
            if r == 0:
                out.write(c0, tf.zeros_like(out.current(c0, c1)))
            else:
                out.write(c0, conv.apply(self.xp[:, r - 1:r + 1, conv.columns(c0, c1)]))

        prog.append(_Op(0, "u", run))
        return out

    def _first_ul(self, prog: list[_Op]) -> RowCache:
        """``ul = down_shift(down_shifted_conv2d(xp, [1, 3])) + right_shift(down_right_shifted_conv2d(xp, [2, 1]))``
        (twin: ``torch_impl.fast_sample.CachedSampler._first_ul``)."""
        m = self.model
        down, right = _Conv(m.ul_init_down, self.use_ema), _Conv(m.ul_init_right, self.use_ema)
        out = self._cache(m.config["nr_filters"], 0)

        def run(r: int, c0: int, c1: int) -> None:
            zeros = tf.zeros_like(out.current(c0, c1))
            above = zeros if r == 0 else down.apply(self.xp[:, r:r + 1, down.columns(c0, c1)])
            left = right.apply(self.xp[:, r:r + 2, right.columns(c0 - 1, c1 - 1)])
            if c0 == 0:  # column 0 has nothing on its left: the shift's zero, not the conv's bias
                left = tf.concat([zeros[:, :, :1], left[:, :, 1:]], axis=2)
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
            out.write(c0, x.current(c0, c1) + value * tf.sigmoid(gate))

        prog.append(_Op(level, stream, run))
        return out

    def _strided(self, prog: list[_Op], layer: WeightNormConv2D, stream: str, level: int, x: RowCache) -> RowCache:
        """A stride-2 shifted conv: level ``l`` row ``r`` from level ``l - 1`` rows ``2r - 1``, ``2r`` (the cache's two)."""
        conv, out = _Conv(layer, self.use_ema), self._cache(layer.num_filters, level)
        prog.append(_Op(level, stream, lambda r, c0, c1: out.write(c0, conv(x, c0, c1))))
        return out

    def _transposed(self, prog: list[_Op], layer: WeightNormConv2DTranspose, stream: str, level: int, x: RowCache) -> RowCache:
        """A stride-2 shifted transposed conv, computed by the layer itself at the even finer row (and
        column) and kept for the odd one (twin: ``torch_impl.fast_sample.CachedSampler._transposed``)."""
        if stream == "ul" and layer.filter_size[1] != layer.stride[1]:
            raise ValueError(f"CachedSampler: a pixel at a time needs non-overlapping columns; {type(layer).__name__} "
                             f"has filter {layer.filter_size} at stride {layer.stride}")
        pending: list[list[Any]] = [[None] * (self.width >> level) for _ in range(layer.stride[0])]  # two rows of columns
        out = self._cache(layer.num_filters, level)

        def run(r: int, c0: int, c1: int) -> None:
            if r % 2 == 0 and c0 % 2 == 0:
                lo, hi = c0 // 2, (c1 + 1) // 2
                for row, y in zip(pending, tf.split(layer(x.current(lo, hi), use_ema=self.use_ema), 2, axis=1)):
                    row[2 * lo:2 * hi] = tf.split(y, 2 * (hi - lo), axis=2)
            columns = pending[r % 2][c0:c1]
            out.write(c0, columns[0] if len(columns) == 1 else tf.concat(columns, axis=2))

        prog.append(_Op(level, stream, run))
        return out

    # -- the steps ---------------------------------------------------------------------------------
    def output(self, i: int, j: int) -> tf.Tensor:
        """The network's output at ``(i, j)`` on the image drawn so far: (B, 1, 1, 10 M), as the full
        pass's ``[:, i:i + 1, j:j + 1]``. Steps go in raster order, each followed by :meth:`put`."""
        for op in self.program:
            step = 1 << op.level
            if op.stream == "u":
                if j == 0 and i % step == 0:
                    op.run(i >> op.level, 0, self.width >> op.level)
            elif i % step == 0 and j % step == 0:
                op.run(i >> op.level, j >> op.level, (j >> op.level) + 1)
        return self.out(j)

    def put(self, i: int, j: int, pixel: Any) -> None:
        """Pixel ``(i, j)`` of every image: (B, 3)."""
        self.xp[:, 1 + i, PAD + j, :IMAGE_CHANNELS].assign(tf.cast(pixel, self.dtype))

    def image(self) -> tf.Tensor:
        """The images drawn so far: (B, H, W, 3), zeros where nothing is drawn yet."""
        return tf.identity(self.xp[:, 1:, PAD:PAD + self.width, :IMAGE_CHANNELS])


class _Nonlinear:
    """``nonlinearity(x)`` on a cache's window, as the block's first conv reads it (the nonlinearity of
    the zero padding is zero for every choice)."""

    def __init__(self, rows: RowCache, nl: Callable[[tf.Tensor], tf.Tensor]) -> None:
        self.rows, self.nl = rows, nl

    def window(self, columns: slice) -> tf.Tensor:
        return self.nl(self.rows.window(columns))


def sample(model: PixelCNNpp | PixelSNAIL, batch: int, height: int, width: int, h: Any = None, *, u_mix: Any = None, u_value: Any = None,
           use_ema: bool = False, generator: tf.random.Generator | None = None, progress: bool = False,
           on_step: Callable[[int, int, tf.Tensor], Any] | None = None) -> tf.Tensor:
    """The images ``tf_impl.mixture.sample`` draws (B, H, W, 3), with the cached network; arguments and
    noise contract as there (twin: ``torch_impl.fast_sample.sample``)."""
    model._ensure_built()
    dtype = tf.as_dtype(model.variable_dtype)
    u_mix, u_value = sampler_noise(batch, height, width, model.config["nr_logistic_mix"], dtype, u_mix, u_value, generator)
    sampler = CachedSampler(model, batch, height, width, None if h is None else tf.convert_to_tensor(h), use_ema)
    for i, j in raster(height, width, progress):
        l = sampler.output(i, j)
        if on_step is not None:
            on_step(i, j, l)
        draw = sample_from_discretized_mix_logistic(l, u_mix[:, i:i + 1, j:j + 1], u_value[:, i:i + 1, j:j + 1])
        sampler.put(i, j, draw[:, 0, 0])
    return sampler.image()
