"""Weight-normalised layers of the original ``nn.py`` (Salimans & Kingma 2016), as Keras 3 layers, NHWC.

Every layer owns ``V`` (direction, ~ Normal(0, 0.05)), ``g`` (scale, one per output unit) and ``b``
(bias), with the original's names, shapes and formulas:

============================  ======================  ==============  =====================================
layer                         ``V``                   normalised over forward
============================  ======================  ==============  =====================================
``WeightNormDense``           ``[in, out]``           axis 0          ``(x @ V) * (g / sqrt(sum(V**2, 0))) + b``
``Nin``                       ``[in, out]``           axis 0          ``dense`` on every pixel
``WeightNormConv2D``          ``[kh, kw, in, out]``   axes 0, 1, 2    ``conv2d(x, g * l2_normalize(V)) + b``
``WeightNormConv2DTranspose`` ``[kh, kw, out, in]``   axes 0, 1, 3    ``conv2d_transpose(x, g * l2_normalize(V)) + b``
============================  ======================  ==============  =====================================

The computation uses TensorFlow ops directly (``tf.nn.conv2d``, ``tf.nn.conv2d_transpose``,
``tf.matmul``), as the original did, so ``'SAME'`` padding and the transposed conv's target shape are
TensorFlow's own. What differs from the original: variables are created in ``build()`` (no
``variable_scope``/``get_variable``), the data-dependent init is an explicit ``initialize(x)`` call
instead of an ``init=True`` graph, and a non-trainable ``initialized`` flag records it. With
``polyak_decay`` set, the layer also holds the averaged shadows ``V_ema``, ``g_ema``, ``b_ema``.
Inputs are not cast: a tensor of another dtype is an error, as in the PyTorch twin.
Twin: ``torch_impl.layers``.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from gated_spec import CONV_INIT_EPS, DENSE_INIT_EPS, LAYER_KINDS, SHADOW_SUFFIX
from gated_spec.checks import already_initialized, check_batch, check_channels, check_dtype, check_pad, check_positive, check_rank, pair
from tf_impl.ops import LAYOUT, get_nonlinearity, l2_normalize



# Every public layer is registered with Keras under this package name, so that a model holding one
# saves and loads (keras.models.load_model) and deep-copies without custom_objects.
PACKAGE = "gated_resnet_parity"
_serializable = keras.saving.register_keras_serializable(package=PACKAGE)


def refuse_mixed_precision(layer: keras.layers.Layer) -> None:
    """The port computes in its variables' dtype, as the original does: a policy that computes in
    another dtype (``mixed_float16``, ``mixed_bfloat16``) is refused at construction."""
    policy = layer.dtype_policy
    if policy.compute_dtype != policy.variable_dtype:
        raise ValueError(
            f"{type(layer).__name__}: expected a dtype policy that computes in its variables' dtype (float32 or "
            f"float64, as the original); received {policy.name!r} (compute {policy.compute_dtype}, variables "
            f"{policy.variable_dtype}). Pass dtype='float32' to this layer.")


def eager_only(owner: str) -> None:
    """The data-dependent init runs once, eagerly, before training (it reads and sets its flags)."""
    if not tf.executing_eagerly():
        raise RuntimeError(f"{owner}: initialize() runs eagerly, once, before training; call it outside tf.function")


class _WeightNormLayer(keras.layers.Layer):
    """Holds ``V``, ``g``, ``b``, the ``initialized`` flag and the optional shadows.

    Subclasses define ``_v_shape``, ``_norm_axes`` and ``_op(x, W)`` and may define ``_pre``/``_post``.
    """

    _init_eps: float = CONV_INIT_EPS
    _norm_axes: tuple[int, ...] = ()
    _rank: int = 4

    def __init__(
        self,
        in_channels: int,
        num_filters: int,
        init_scale: float = 1.0,
        nonlinearity: str | None = None,
        polyak_decay: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        refuse_mixed_precision(self)
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
        # Inputs keep their dtype (a mismatch raises) and may be NumPy arrays.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def build(self, input_shape: Any = None) -> None:
        normal = keras.initializers.RandomNormal(mean=0.0, stddev=0.05)
        self.V = self.add_weight(name="V", shape=self._v_shape, initializer=normal)
        self.g = self.add_weight(name="g", shape=(self.num_filters,), initializer="ones")
        self.b = self.add_weight(name="b", shape=(self.num_filters,), initializer="zeros")
        self.initialized = self.add_weight(
            name="initialized", shape=(), dtype="bool", initializer="zeros", trainable=False
        )
        if self.polyak_decay is not None:
            for name in ("V", "g", "b"):
                var = getattr(self, name)
                shadow = self.add_weight(name=name + SHADOW_SUFFIX, shape=var.shape, initializer="zeros", trainable=False)
                shadow.assign(var.value)
                setattr(self, name + SHADOW_SUFFIX, shadow)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            num_filters=self.num_filters,
            init_scale=self.init_scale,
            nonlinearity=self.nonlinearity,
            polyak_decay=self.polyak_decay,
        )
        return config

    # -- weights -----------------------------------------------------------------------------
    def _ensure_built(self) -> None:
        if not self.built:
            self.build()

    def _weights(self, use_ema: bool) -> tuple[Any, Any, Any]:
        if not use_ema:
            return self.V, self.g, self.b
        if self.polyak_decay is None:
            raise ValueError(
                f"{type(self).__name__}: use_ema=True needs averaged weights; this layer was built with polyak_decay=None"
            )
        return self.V_ema, self.g_ema, self.b_ema

    def raw_weights(self, use_ema: bool = False) -> tuple[Any, Any, Any]:
        """``(V, g, b)`` as the forward reads them (the shadows with ``use_ema``)."""
        self._ensure_built()
        return self._weights(use_ema)

    def _scale(self, g: Any) -> tf.Tensor:
        return tf.convert_to_tensor(g)  # broadcasts over the last (output) axis

    def kernel(self, use_ema: bool = False) -> tf.Tensor:
        """The effective kernel ``g * l2_normalize(V)`` (from the shadows with ``use_ema``)."""
        self._ensure_built()
        V, g, _ = self._weights(use_ema)
        return self._scale(g) * l2_normalize(V, self._norm_axes)

    def _own_averages(self) -> list[tuple[Any, Any]]:
        if self.polyak_decay is None or not self.built:
            return []
        return [(getattr(self, n), getattr(self, n + SHADOW_SUFFIX)) for n in ("V", "g", "b")]

    @property
    def is_initialized(self) -> bool:
        """Whether the data-dependent init has run (the saved ``initialized`` flag)."""
        return self.built and bool(self.initialized.numpy())

    # -- forward -----------------------------------------------------------------------------
    def _check(self, x: Any) -> tf.Tensor:
        owner = type(self).__name__
        check_rank(owner, "x", x, LAYOUT, self._rank)
        check_channels(owner, "x", x, self.in_channels, -1, LAYOUT)
        x = tf.convert_to_tensor(x)
        check_dtype(owner, "x", x.dtype.name, self.variable_dtype)
        return x

    def _pre(self, x: tf.Tensor) -> tf.Tensor:
        return x

    def _post(self, y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return y

    def _activate(self, y: tf.Tensor) -> tf.Tensor:
        return y if self._nonlinearity is None else self._nonlinearity(y)

    def call(self, x: Any, use_ema: bool = False) -> tf.Tensor:
        x = self._check(x)
        V, g, b = self._weights(use_ema)
        y = self._op(self._pre(x), self._scale(g) * l2_normalize(V, self._norm_axes))
        y = tf.nn.bias_add(y, b)
        return self._activate(self._post(y, x))

    # -- data-dependent init -----------------------------------------------------------------
    def initialize(self, x: Any) -> tf.Tensor:
        """The original's ``init=True`` pass: normalise this layer's output on the batch ``x``.

        ``t = op(x, l2_normalize(V))``; ``m, v = tf.nn.moments(t, all axes but the last)`` (biased
        variance); ``s = init_scale / sqrt(v + eps)``; assigns ``g := s``, ``b := -m * s`` and returns
        ``s * (t - m)`` (then the nonlinearity and, for the shifted transposed convs, the crop).
        Runs once: a second call raises. Shadows, if any, restart as copies.
        """
        eager_only(type(self).__name__)
        self._ensure_built()
        if self.is_initialized:
            raise already_initialized(type(self).__name__)
        x = self._check(x)
        check_batch(type(self).__name__, x)
        t = self._op(self._pre(x), self._init_direction())
        m, v = self._moments(t, list(range(len(t.shape) - 1)))
        s = self.init_scale / tf.sqrt(v + self._init_eps)
        self.g.assign(s)
        self.b.assign(-m * s)
        self.initialized.assign(True)
        for var, shadow in self._own_averages():
            shadow.assign(var.value)
        return self._activate(self._post(self._init_output(s, t, m), x))

    # The steps of the init pass, one method each (twin of torch_impl's).
    def _init_direction(self) -> tf.Tensor:
        """The kernel the init measures: the unit-norm direction ``l2_normalize(V)``."""
        return l2_normalize(self.V, self._norm_axes)

    @staticmethod
    def _moments(t: tf.Tensor, axes: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean and biased variance (``tf.nn.moments``)."""
        return tf.nn.moments(t, axes=axes)

    @staticmethod
    def _init_output(s: tf.Tensor, t: tf.Tensor, m: tf.Tensor) -> tf.Tensor:
        """What the init pass returns: the normalised ``s * (t - m)``."""
        return s * (t - m)


@_serializable
class WeightNormDense(_WeightNormLayer):
    """The original ``dense``: ``(x @ V) * (g / sqrt(sum(V**2, 0))) + b``, scale after the matmul.

    Shapes: x (B, in) -> (B, units); ``V`` is ``[in, units]``. Init eps is 1e-10.
    Twin: ``torch_impl.layers.WeightNormDense``.
    """

    _init_eps = DENSE_INIT_EPS
    _norm_axes = (0,)
    _rank = 2

    def __init__(
        self,
        in_channels: int,
        units: int,
        init_scale: float = 1.0,
        nonlinearity: str | None = None,
        polyak_decay: float | None = None,
        **kwargs: Any,
    ) -> None:
        check_positive("units", units)
        super().__init__(in_channels, units, init_scale, nonlinearity, polyak_decay, **kwargs)

    @property
    def units(self) -> int:
        return self.num_filters

    @property
    def _v_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.num_filters)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["units"] = config.pop("num_filters")
        return config

    def _op(self, x: tf.Tensor, W: tf.Tensor) -> tf.Tensor:  # the init pass's matmul
        return tf.matmul(x, W)

    def call(self, x: Any, use_ema: bool = False) -> tf.Tensor:
        x = self._check(x)
        V, g, b = self._weights(use_ema)
        y = tf.matmul(self._pre(x), V) * (g / tf.sqrt(tf.reduce_sum(tf.square(V), axis=0))) + b
        return self._activate(self._post(y, x))


@_serializable
class Nin(WeightNormDense):
    """The original ``nin``: reshape (B, H, W, C) to (B*H*W, C), ``dense``, reshape back.

    Shapes: x (B, H, W, C) -> (B, H, W, units). Twin: ``torch_impl.layers.Nin``.
    """

    _rank = 4

    def _pre(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, [-1, self.in_channels])  # (B*H*W, C)

    def _post(self, y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.units]], axis=0))  # (B, H, W, units)


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
        **kwargs: Any,
    ) -> None:
        self.filter_size = pair(filter_size, "filter_size")
        self.stride = pair(stride, "stride")
        self.pad = check_pad(pad)
        super().__init__(in_channels, num_filters, init_scale, nonlinearity, polyak_decay, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(filter_size=list(self.filter_size), stride=list(self.stride), pad=self.pad)
        return config


@_serializable
class WeightNormConv2D(_Convolution):
    """The original ``conv2d``: ``tf.nn.conv2d(x, g * l2_normalize(V, [0, 1, 2]), stride, pad) + b``.

    Shapes: x (B, H, W, in) -> (B, H', W', num_filters); ``V`` is ``[kh, kw, in, num_filters]``.
    Twin: ``torch_impl.layers.WeightNormConv2D``.
    """

    _norm_axes = (0, 1, 2)

    @property
    def _v_shape(self) -> tuple[int, ...]:
        return (*self.filter_size, self.in_channels, self.num_filters)

    def _op(self, x: tf.Tensor, W: tf.Tensor) -> tf.Tensor:
        return tf.nn.conv2d(x, W, strides=[1, *self.stride, 1], padding=self.pad)


@_serializable
class WeightNormConv2DTranspose(_Convolution):
    """The original ``deconv2d``: ``tf.nn.conv2d_transpose(x, g * l2_normalize(V, [0, 1, 3]), target) + b``.

    Shapes: x (B, H, W, in) -> (B, H*sh, W*sw, num_filters) for ``'SAME'`` and
    (B, H*sh + kh - 1, W*sw + kw - 1, num_filters) for ``'VALID'`` (the original's target shapes);
    ``V`` is ``[kh, kw, num_filters, in]``. Twin: ``torch_impl.layers.WeightNormConv2DTranspose``.
    """

    _norm_axes = (0, 1, 3)

    @property
    def _v_shape(self) -> tuple[int, ...]:
        return (*self.filter_size, self.num_filters, self.in_channels)

    def _scale(self, g: Any) -> tf.Tensor:
        return tf.reshape(g, [1, 1, self.num_filters, 1])  # V is [kh, kw, out, in]

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The original's target shape (docs/spec.md, ``deconv2d``)."""
        (kh, kw), (sh, sw) = self.filter_size, self.stride
        if self.pad == "SAME":
            return h * sh, w * sw
        return h * sh + kh - 1, w * sw + kw - 1

    def _op(self, x: tf.Tensor, W: tf.Tensor) -> tf.Tensor:
        target = self.output_size(x.shape[1], x.shape[2])
        output_shape = tf.stack([tf.shape(x)[0], target[0], target[1], self.num_filters])
        return tf.nn.conv2d_transpose(x, W, output_shape, strides=[1, *self.stride, 1], padding=self.pad)


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
        **kwargs: Any,
    ) -> None:
        kwargs.pop("pad", None)  # from_config
        super().__init__(  # type: ignore[call-arg]
            in_channels,
            num_filters,
            self._default_filter if filter_size is None else filter_size,
            stride,
            "VALID",
            init_scale,
            nonlinearity,
            polyak_decay,
            **kwargs,
        )


@_serializable
class DownShiftedConv2D(_Shifted, WeightNormConv2D):
    """The original ``down_shifted_conv2d`` (filter [2, 3] by default): pad ``kh - 1`` rows on top and
    ``(kw - 1) // 2`` columns on each side with zeros, then a ``'VALID'`` conv.

    Shapes: x (B, H, W, in) -> (B, H / sh, W / sw, num_filters). Twin: ``torch_impl.layers.DownShiftedConv2D``.
    """

    _default_filter = LAYER_KINDS["down_shifted_conv2d"][1]

    def _pre(self, x: tf.Tensor) -> tf.Tensor:
        kh, kw = self.filter_size
        return tf.pad(x, [[0, 0], [kh - 1, 0], [(kw - 1) // 2, (kw - 1) // 2], [0, 0]])


@_serializable
class DownRightShiftedConv2D(_Shifted, WeightNormConv2D):
    """The original ``down_right_shifted_conv2d`` (filter [2, 2] by default): pad ``kh - 1`` rows on top
    and ``kw - 1`` columns on the left, then a ``'VALID'`` conv.

    Shapes: x (B, H, W, in) -> (B, H / sh, W / sw, num_filters). Twin: ``torch_impl.layers.DownRightShiftedConv2D``.
    """

    _default_filter = LAYER_KINDS["down_right_shifted_conv2d"][1]

    def _pre(self, x: tf.Tensor) -> tf.Tensor:
        kh, kw = self.filter_size
        return tf.pad(x, [[0, 0], [kh - 1, 0], [kw - 1, 0], [0, 0]])


@_serializable
class DownShiftedConv2DTranspose(_Shifted, WeightNormConv2DTranspose):
    """The original ``down_shifted_deconv2d`` (filter [2, 3] by default): a ``'VALID'`` ``deconv2d``, then
    keep rows ``[0, H' - kh + 1)`` and columns ``[(kw - 1) // 2, W' - (kw - 1) // 2)``; the init moments
    are taken before the crop.

    Shapes: x (B, H, W, in) -> (B, H*sh, W*sw, num_filters). Twin: ``torch_impl.layers.DownShiftedConv2DTranspose``.
    """

    _default_filter = LAYER_KINDS["down_shifted_deconv2d"][1]

    def _post(self, y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        kh, kw = self.filter_size
        side = (kw - 1) // 2
        return y[:, : y.shape[1] - kh + 1, side : y.shape[2] - side, :]


@_serializable
class DownRightShiftedConv2DTranspose(_Shifted, WeightNormConv2DTranspose):
    """The original ``down_right_shifted_deconv2d`` (filter [2, 2] by default): a ``'VALID'`` ``deconv2d``,
    then keep rows ``[0, H' - kh + 1)`` and columns ``[0, W' - kw + 1)``; moments before the crop.

    Shapes: x (B, H, W, in) -> (B, H*sh, W*sw, num_filters). Twin: ``torch_impl.layers.DownRightShiftedConv2DTranspose``.
    """

    _default_filter = LAYER_KINDS["down_right_shifted_deconv2d"][1]

    def _post(self, y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        kh, kw = self.filter_size
        return y[:, : y.shape[1] - kh + 1, : y.shape[2] - kw + 1, :]


# The layer class of each conv kind of ``GatedResnet`` (the kinds, by the original's function
# names, and their filters are ``gated_spec.CONV_KINDS``).
CONV_LAYERS: dict[str, type[_WeightNormLayer]] = {
    "conv2d": WeightNormConv2D,
    "down_shifted_conv2d": DownShiftedConv2D,
    "down_right_shifted_conv2d": DownRightShiftedConv2D,
    "nin": Nin,
}
