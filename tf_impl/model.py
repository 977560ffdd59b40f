"""PixelCNN++ (the original ``pxpp_spec``) as a Keras 3 layer, NHWC. Twin: ``torch_impl.model``.

The network of docs/model_spec.md, built from ``gated_spec.model.pixelcnn_pp_plan``; every sublayer
is named after its plan path (``up_u.3`` is the layer ``up_u_3``, so its variables are
``up_u_3/conv_input/V``, ...). See ``torch_impl.model`` for the outline; the call order is the same.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from gated_spec.checks import already_initialized, check_batch, check_channels, check_dtype, check_rank, check_same_dims
from gated_spec.model import IMAGE_CHANNELS, check_image_size, normalize_model_config, pixelcnn_pp_plan
from tf_impl import layers as L
from tf_impl.block import GatedResnet
from tf_impl.layers import _serializable, eager_only, refuse_mixed_precision
from tf_impl.ops import LAYOUT, down_shift, elu, right_shift

_LAYER_CLASSES = {
    "down_shifted_conv2d": L.DownShiftedConv2D,
    "down_right_shifted_conv2d": L.DownRightShiftedConv2D,
    "down_shifted_deconv2d": L.DownShiftedConv2DTranspose,
    "down_right_shifted_deconv2d": L.DownRightShiftedConv2DTranspose,
}


def down_pass_a(u: tf.Tensor, ul_skip: tf.Tensor) -> tf.Tensor:
    """The down pass's ``a`` of the ``ul`` blocks: ``concat([u, ul_skip])`` on channels, ``u`` first."""
    return tf.concat([u, ul_skip], axis=-1)


def with_ones(x: tf.Tensor) -> tf.Tensor:
    """``concat([x, ones])`` on channels: the ones channel marks the image against the convs' zero padding."""
    return tf.concat([x, tf.ones_like(x[..., :1])], axis=-1)


class PlannedNetwork(keras.layers.Layer):
    """A network built from a plan (``gated_spec.model.PlanEntry`` list, the original's call order):
    one sublayer per entry, named after its path (``a.3`` is the layer ``a_3``, held in the list
    ``a``). Twin: ``torch_impl.model.PlannedNetwork``; each subclass writes ``_run``."""

    owner = "network"

    def _build(self, config: dict, plan: list) -> None:
        refuse_mixed_precision(self)
        self.config = config
        self.plan = plan
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        common = {"polyak_decay": config["polyak_decay"], "dtype": self.dtype_policy}
        self._layers_by_path: dict[str, keras.layers.Layer] = {}
        lists: dict[str, list[keras.layers.Layer]] = {}
        for e in self.plan:
            if e.kind == "gated_resnet":
                m = GatedResnet(e.in_channels, e.a_channels or None, config["h_channels"], e.conv, config["nonlinearity"],
                                config["dropout_p"], name=e.keras_name, **common)
            elif e.kind == "nin":
                m = L.Nin(e.in_channels, e.out_channels, name=e.keras_name, **common)
            else:
                m = _LAYER_CLASSES[e.kind](e.in_channels, e.out_channels, e.filter_size, e.stride, name=e.keras_name, **common)
            self._layers_by_path[e.path] = m
            if "." in e.path:
                lists.setdefault(e.path.split(".")[0], []).append(m)
            else:
                setattr(self, e.path, m)
        for name, layers in lists.items():
            setattr(self, name, layers)
            # Keras 3 holds a list attribute as its own TrackedList, which TensorFlow's object tracking
            # does not follow: tf.train.Checkpoint(model=self) would save and restore none of these
            # layers. A TensorFlow list wrapper of the same layers makes them the checkpoint's
            # children `name/0`, `name/1`, ... (Keras' own tracking and .weights are unchanged).
            self._track_trackable(tf.__internal__.tracking.wrap(list(layers)), name=name, overwrite=True)

    def build(self, input_shape: Any = None) -> None:
        for m in self.layers_in_call_order():
            m.build()

    def _ensure_built(self) -> None:
        if not self.built:
            self.build()

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.config}

    def layers_in_call_order(self) -> list[keras.layers.Layer]:
        return [self._layers_by_path[e.path] for e in self.plan]

    @property
    def wn_layers(self) -> list[keras.layers.Layer]:
        out = []
        for m in self.layers_in_call_order():
            out += m.wn_layers if isinstance(m, GatedResnet) else [m]
        return out

    @property
    def initialized(self) -> bool:
        self._ensure_built()
        return all(m.is_initialized for m in self.wn_layers)

    def _check_size(self, height: int | None, width: int | None) -> None:
        """Raise unless the network runs on images of this size (every size, unless a subclass says)."""

    # -- checks ------------------------------------------------------------------------------
    def _check_inputs(self, x: Any, h: Any, dropout_masks: Sequence[Any] | None) -> tuple[tf.Tensor, Any]:
        owner = self.owner
        check_rank(owner, "x", x, LAYOUT)
        check_channels(owner, "x", x, IMAGE_CHANNELS, -1, LAYOUT)
        x = tf.convert_to_tensor(x)
        check_dtype(owner, "x", x.dtype.name, self.variable_dtype)
        self._check_size(x.shape[1], x.shape[2])
        if (h is None) != (self.config["h_channels"] is None):
            raise ValueError(f"{owner}: built with h_channels={self.config['h_channels']}; received h={'None' if h is None else 'a tensor'}")
        if h is not None:
            check_rank(owner, "h", h, LAYOUT, rank=2)
            check_same_dims(owner, "h", h, x, (0,), "x", ("B",))
            h = tf.convert_to_tensor(h)
        if dropout_masks is not None:
            n = sum(e.kind == "gated_resnet" for e in self.plan)
            if len(dropout_masks) != n:
                raise ValueError(f"{owner}: expected {n} dropout masks (one per block, in call order); received {len(dropout_masks)}")
        return x, h

    def compute_output_spec(self, x: Any, h: Any = None, training: bool | None = None, use_ema: bool = False,
                            dropout_masks: Any = None) -> Any:
        return keras.KerasTensor((*x.shape[:-1], 10 * self.config["nr_logistic_mix"]), dtype=x.dtype)

    def call(self, x: Any, h: Any = None, training: bool | None = None, use_ema: bool = False,
             dropout_masks: Sequence[Any] | None = None) -> tf.Tensor:
        """Mixture parameters (B, H, W, 10 M); ``use_ema`` reads every shadow; dropout with
        ``training=True`` or on ``dropout_masks``."""
        self._ensure_built()
        x, h = self._check_inputs(x, h, dropout_masks)
        return self._run(
            x, h, lambda m, t: m(t, use_ema=use_ema),
            lambda m, t, a, hh, mask: m(t, a, hh, training=training, use_ema=use_ema, dropout_mask=mask), dropout_masks)

    def initialize(self, x: Any, h: Any = None, dropout: bool = True, dropout_masks: Sequence[Any] | None = None) -> tf.Tensor:
        """The original's ``init=True`` pass over the init batch, in call order; returns its output.
        All or nothing: on an error every variable is as before. Eager only."""
        eager_only(self.owner)
        self._ensure_built()
        if any(m.is_initialized for m in self.wn_layers):
            raise already_initialized(self.owner)
        x, h = self._check_inputs(x, h, dropout_masks)
        check_batch(self.owner, x)
        saved = [(v, tf.identity(v.value)) for v in self.weights]
        try:
            return self._run(
                x, h, lambda m, t: m.initialize(t),
                lambda m, t, a, hh, mask: m.initialize(t, a, hh, dropout_mask=mask, dropout=dropout), dropout_masks)
        except BaseException:
            for v, value in saved:
                v.assign(value)
            raise


@_serializable
class PixelCNNpp(PlannedNetwork):
    """The original ``pxpp_spec``: ``x`` (B, H, W, 3) in [-1, 1] -> mixture parameters (B, H, W, 10 M).
    Arguments as ``torch_impl.model.PixelCNNpp``; ``dtype`` as any Keras layer's (mixed precision refused)."""

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        config = normalize_model_config({
            "nr_resnet": nr_resnet, "nr_filters": nr_filters, "nr_logistic_mix": nr_logistic_mix, "nonlinearity": nonlinearity,
            "h_channels": h_channels, "dropout_p": dropout_p, "polyak_decay": polyak_decay})
        self._build(config, pixelcnn_pp_plan(config))

    def _check_size(self, height: int | None, width: int | None) -> None:
        check_image_size(self.owner, height, width)

    # -- the network -------------------------------------------------------------------------
    def _run(self, x: tf.Tensor, h: Any, layer: Callable[[Any, tf.Tensor], tf.Tensor], block: Callable[..., tf.Tensor],
             masks: Sequence[Any] | None) -> tf.Tensor:
        """The network once, in call order (twin: ``torch_impl.model.PixelCNNpp._run``)."""
        R = self.config["nr_resnet"]
        mask_iter = iter(masks) if masks is not None else None

        def run_block(m: Any, t: tf.Tensor, a: Any) -> tf.Tensor:
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
