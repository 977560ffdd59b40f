"""``gated_resnet`` of the original ``nn.py`` (PixelCNN++ / PixelSNAIL), as a Keras 3 layer, NHWC.

With ``F`` the channel count of ``x`` and ``nl`` the nonlinearity::

    c1 = conv_input(nl(x))                  # F channels
    c1 += nin_skip(nl(a))                   # if a is given (any channel count)
    c1 = dropout(nl(c1))
    c2 = conv_output(c1)                    # 2F channels, init_scale 0.1
    c2 += reshape(h @ hw, [B, 1, 1, 2F])    # if h is given; hw is [K, 2F]
    value, gate = split(c2, 2, axis=-1)     # value first
    out = x + value * sigmoid(gate)

Sublayers carry descriptive names (``conv_input``, ``nin_skip``, ``conv_output``); the original's
checkpoint names (``conv2d_0``, ``dense_0``, ...) are mapped by ``parity.table``.
Twin: ``torch_impl.block.GatedResnet``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import keras
import tensorflow as tf

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
from tf_impl.layers import CONV_LAYERS, Nin, _serializable, eager_only, refuse_mixed_precision
from tf_impl.ops import LAYOUT, get_nonlinearity



@_serializable
class GatedResnet(keras.layers.Layer):
    """The original ``gated_resnet(x, a, h, nonlinearity, conv, init, ema, dropout_p)``.

    Shapes: x (B, H, W, F); a (B, H, W, a_channels); h (B, h_channels) -> (B, H, W, F).

    Args:
        num_filters: ``F``, the channel count of ``x`` and of the output.
        a_channels: channel count of the auxiliary input ``a``; ``None`` for a block without it.
        h_channels: size ``K`` of the conditioning vector ``h``; ``None`` for a block without it.
        conv: ``'conv2d'``, ``'down_shifted_conv2d'``, ``'down_right_shifted_conv2d'`` or ``'nin'``.
        nonlinearity: ``'concat_elu'`` (the original's default), ``'elu'`` or ``'relu'``.
        dropout_p: drop probability. The original applies ``tf.nn.dropout`` on every pass and its
            scripts pass ``dropout_p=0`` at test time; here dropout runs when ``training=True``, and
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        refuse_mixed_precision(self)
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
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        mult = CHANNEL_MULTIPLIER[nonlinearity]
        conv_cls = CONV_LAYERS[conv]
        F_ = num_filters
        common = {"polyak_decay": polyak_decay, "dtype": self.dtype_policy}
        self.conv_input = conv_cls(mult * F_, F_, name="conv_input", **common)
        self.nin_skip = Nin(mult * a_channels, F_, name="nin_skip", **common) if a_channels else None
        self.conv_output = conv_cls(mult * F_, 2 * F_, init_scale=SECOND_CONV_INIT_SCALE, name="conv_output", **common)

    def build(self, input_shape: Any = None) -> None:
        for layer in self.wn_layers:
            layer.build()
        self.hw = None
        if self.h_channels:
            self.hw = self.add_weight(
                name="hw",
                shape=(self.h_channels, 2 * self.num_filters),
                initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.05),
            )
            if self.polyak_decay is not None:
                self.hw_ema = self.add_weight(
                    name="hw" + SHADOW_SUFFIX, shape=self.hw.shape, initializer="zeros", trainable=False
                )
                self.hw_ema.assign(self.hw.value)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_filters=self.num_filters,
            a_channels=self.a_channels,
            h_channels=self.h_channels,
            conv=self.conv,
            nonlinearity=self.nonlinearity,
            dropout_p=self.dropout_p,
            polyak_decay=self.polyak_decay,
        )
        return config

    @property
    def wn_layers(self) -> list[keras.layers.Layer]:
        """The weight-normalised layers in the original's call order."""
        return [m for m in (self.conv_input, self.nin_skip, self.conv_output) if m is not None]

    @property
    def initialized(self) -> bool:
        """Whether the data-dependent init has run (each layer's saved ``initialized`` flag)."""
        return all(m.is_initialized for m in self.wn_layers)

    def _own_averages(self) -> list[tuple[Any, Any]]:
        if not self.built or self.hw is None or self.polyak_decay is None:
            return []
        return [(self.hw, self.hw_ema)]

    def _ensure_built(self) -> None:
        if not self.built:
            self.build()

    # -- checks ------------------------------------------------------------------------------
    def _check_inputs(self, x: Any, a: Any, h: Any, dropout_mask: Any) -> tuple[Any, Any, Any, Any]:
        owner = "GatedResnet"
        dtype = self.variable_dtype
        check_rank(owner, "x", x, LAYOUT)
        check_channels(owner, "x", x, self.num_filters, -1, LAYOUT)
        x = tf.convert_to_tensor(x)
        check_dtype(owner, "x", x.dtype.name, dtype)
        check_given(owner, "a", a, "a_channels", self.a_channels)
        check_given(owner, "h", h, "h_channels", self.h_channels)
        if a is not None:
            check_rank(owner, "a", a, LAYOUT)
            check_same_dims(owner, "a", a, x, (0, 1, 2), "x", ("B", "H", "W"))
            check_channels(owner, "a", a, self.a_channels, -1, LAYOUT)
            a = tf.convert_to_tensor(a)
            check_dtype(owner, "a", a.dtype.name, dtype)
        if h is not None:
            check_rank(owner, "h", h, LAYOUT, rank=2)
            check_same_dims(owner, "h", h, x, (0,), "x", ("B",))
            check_channels(owner, "h", h, self.h_channels, 1, LAYOUT)
            h = tf.convert_to_tensor(h)
            check_dtype(owner, "h", h.dtype.name, dtype)
        if dropout_mask is not None:
            if self.dropout_p == 0.0:
                raise ValueError(f"{owner}: received `dropout_mask`, but this block was built with dropout_p=0")
            B, H, W, _ = x.shape
            expected = (B, H, W, self.num_filters * CHANNEL_MULTIPLIER[self.nonlinearity])
            dropout_mask = tf.convert_to_tensor(dropout_mask)
            check_mask_dtype(owner, dropout_mask.dtype.name, dtype)
            got = tuple(dropout_mask.shape)
            if any(e is not None and g is not None and e != g for e, g in zip(expected, got)) or len(got) != 4:
                raise ValueError(
                    f"{owner}: expected `dropout_mask` of shape {expected}, the shape of c1 ({LAYOUT}); "
                    f"received shape {got}"
                )
        return x, a, h, dropout_mask

    # -- the block ---------------------------------------------------------------------------
    def _dropout(self, c1: tf.Tensor, mask: Any, active: bool) -> tf.Tensor:
        if self.dropout_p == 0.0 or (mask is None and not active):
            return c1
        if mask is None:
            mask = tf.random.uniform(tf.shape(c1), dtype=c1.dtype) >= self.dropout_p  # keep probability 1 - p
        return c1 * (1.0 / (1.0 - self.dropout_p)) * tf.cast(mask, c1.dtype)

    # The steps of docs/spec.md's gated_resnet, one method each (twin of torch_impl's).
    def _skip(self, a: tf.Tensor, layer_call: Callable[[keras.layers.Layer, tf.Tensor], tf.Tensor]) -> tf.Tensor:
        """Step 2: ``nin(nonlinearity(a), F)``."""
        return layer_call(self.nin_skip, self._nonlinearity(a))

    def _activate_c1(self, c1: tf.Tensor) -> tf.Tensor:
        """Step 3: the nonlinearity between the convs, whether or not the block has ``a`` (pitfall 13)."""
        return self._nonlinearity(c1)

    def _condition(self, h: tf.Tensor, hw: Any) -> tf.Tensor:
        """Step 6: ``reshape(h @ hw, [B, 1, 1, 2F])``."""
        return tf.reshape(tf.matmul(h, hw), [-1, 1, 1, 2 * self.num_filters])

    def _split(self, c2: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Step 7: value = the first F channels, gate = the last F."""
        value, gate = tf.split(c2, 2, axis=-1)
        return value, gate

    def _run(
        self,
        x: tf.Tensor,
        a: tf.Tensor | None,
        h: tf.Tensor | None,
        dropout_mask: Any,
        dropout_active: bool,
        layer_call: Callable[[keras.layers.Layer, tf.Tensor], tf.Tensor],
        hw: Any,
    ) -> dict[str, tf.Tensor]:
        nl = self._nonlinearity
        stages: dict[str, tf.Tensor] = {}
        c1 = layer_call(self.conv_input, nl(x))  # (B, H, W, F)
        stages["c1_conv"] = c1
        if a is not None:
            skip = self._skip(a, layer_call)
            stages["c1_skip"] = skip
            c1 = c1 + skip
        c1 = self._dropout(self._activate_c1(c1), dropout_mask, dropout_active)  # (B, H, W, mult*F)
        stages["c1"] = c1
        c2 = layer_call(self.conv_output, c1)  # (B, H, W, 2F)
        stages["c2_conv"] = c2
        if h is not None:
            c2 = c2 + self._condition(h, hw)
        stages["c2"] = c2
        value, gate = self._split(c2)
        stages["value"] = value
        stages["gate_logits"] = gate
        stages["out"] = x + value * tf.sigmoid(gate)
        return stages

    def stages(
        self,
        x: Any,
        a: Any = None,
        h: Any = None,
        training: bool | None = None,
        use_ema: bool = False,
        dropout_mask: Any = None,
    ) -> dict[str, tf.Tensor]:
        """The forward pass with its named intermediate tensors (``STAGES``; ``c1_skip`` only with ``a``)."""
        self._ensure_built()
        x, a, h, dropout_mask = self._check_inputs(x, a, h, dropout_mask)
        if not self._init_checked:
            self._init_checked = True  # once per block: reading the flags costs a device read on every call
            with tf.init_scope():  # eager even while a tf.function traces (the backends run nets that way)
                initialized = self.initialized
            if not initialized:
                warnings.warn(UNINITIALIZED_WARNING.format(owner="GatedResnet"), UserWarning, stacklevel=3)
        hw = None
        if h is not None:
            if use_ema and self.polyak_decay is None:
                raise ValueError("GatedResnet: use_ema=True needs averaged weights; this block was built with polyak_decay=None")
            hw = self.hw_ema if use_ema else self.hw
        return self._run(x, a, h, dropout_mask, bool(training), lambda layer, t: layer(t, use_ema=use_ema), hw)

    def compute_output_spec(self, x: Any, a: Any = None, h: Any = None, training: bool | None = None,
                            use_ema: bool = False, dropout_mask: Any = None) -> Any:
        """The output has the shape and dtype of ``x``. Keras asks this of a symbolic call (a
        ``Sequential`` model holding the block is called with ``x`` alone); a real call still
        needs every input the block was built for."""
        check_rank("GatedResnet", "x", x, LAYOUT)
        check_channels("GatedResnet", "x", x, self.num_filters, -1, LAYOUT)
        return keras.KerasTensor(x.shape, dtype=x.dtype)

    def call(
        self,
        x: Any,
        a: Any = None,
        h: Any = None,
        training: bool | None = None,
        use_ema: bool = False,
        dropout_mask: Any = None,
    ) -> tf.Tensor:
        """``x + value * sigmoid(gate)``; ``use_ema`` reads the shadow of every weight, like the original's ``ema=``."""
        return self.stages(x, a, h, training=training, use_ema=use_ema, dropout_mask=dropout_mask)["out"]

    def initialize(self, x: Any, a: Any = None, h: Any = None, dropout_mask: Any = None, dropout: bool = True) -> tf.Tensor:
        """The original's ``init=True`` pass over one batch; returns its output.

        Each layer initialises, in call order, on the already-normalised output of the one before
        (docs/spec.md); dropout is active, as in the original (``dropout_mask`` if given; ``dropout=False``
        for none); ``hw`` keeps its initial value.
        Runs once; shadows restart as copies.
        """
        eager_only("GatedResnet")
        self._ensure_built()
        if any(m.is_initialized for m in self.wn_layers):
            raise already_initialized("GatedResnet")
        x, a, h, dropout_mask = self._check_inputs(x, a, h, dropout_mask)
        check_batch("GatedResnet", x)
        out = self._run(x, a, h, dropout_mask, dropout, lambda layer, t: layer.initialize(t), self.hw)["out"]
        for var, shadow in self._own_averages():
            shadow.assign(var.value)
        return out
