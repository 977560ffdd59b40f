"""PixelSNAIL (the original ``_base_noup_smallkey_spec`` family and ``model_spec``) as a Keras 3 layer,
NHWC, and its causal attention. Twin: ``torch_impl.pixelsnail``.

Built from ``gated_spec.pixelsnail.pixelsnail_plan``; every sublayer is named after its plan path
(``key_block.2`` is the layer ``key_block_2``). See ``torch_impl.pixelsnail`` for the outline; the
call order is the same.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

from gated_spec.pixelsnail import (
    MASK_OFFSET,
    PROBS_EPS,
    attention_channels,
    attention_scale,
    causal_mask,
    normalize_pixelsnail_config,
    pixelsnail_plan,
    spec_of,
)
from tf_impl.layers import _serializable
from tf_impl.model import PlannedNetwork, with_ones
from tf_impl.ops import down_shift, elu, right_shift


def causal_attention(key: tf.Tensor, mixin: tf.Tensor, query: tf.Tensor, downsample: int = 1) -> tf.Tensor:
    """The original ``nn.causal_attention``: ``key`` (B, H, W, K), ``mixin`` (B, H, W, C), ``query``
    (B, H, W, K) -> (B, H, W, C); see ``torch_impl.pixelsnail.causal_attention``. Keys and values are
    pooled with ``tf.nn.max_pool2d(..., 'SAME')`` as the original pools them."""
    B, H, W, K = query.shape
    if downsample > 1:
        key = tf.nn.max_pool2d(key, downsample, downsample, "SAME")
        mixin = tf.nn.max_pool2d(mixin, downsample, downsample, "SAME")
    C = mixin.shape[-1]
    mask = tf.cast(tf.constant(causal_mask(H, W, downsample)), query.dtype)[None]
    dot = tf.matmul(tf.reshape(query, [-1, H * W, K]), tf.reshape(key, [-1, key.shape[1] * key.shape[2], key.shape[-1]]),
                    transpose_b=True)
    probs = attention_probs(dot, mask, key.shape[-1])
    mixed = tf.matmul(probs, tf.reshape(mixin, [-1, mixin.shape[1] * mixin.shape[2], C]))
    return tf.reshape(mixed, [-1, H, W, C])


def attention_probs(dot: tf.Tensor, mask: tf.Tensor, key_channels: int) -> tf.Tensor:
    """The attention weights from ``q @ k^T`` and the 0/1 mask (twin: ``torch_impl.pixelsnail.attention_probs``)."""
    dot = dot - (1.0 - mask) * MASK_OFFSET
    dot = dot - tf.reduce_max(dot, axis=-1, keepdims=True)
    e = tf.exp(dot / attention_scale(key_channels)) * mask
    return e / (tf.reduce_sum(e, axis=-1, keepdims=True) + PROBS_EPS)


def split_raw(raw: tf.Tensor, key_channels: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The key nin's output split on channels: keys first, then values."""
    return raw[..., :key_channels], raw[..., key_channels:]


def key_content(x: tf.Tensor, ul: tf.Tensor, bg: tf.Tensor) -> tf.Tensor:
    """What the key block reads: ``concat([x, ul, background])``."""
    return tf.concat([x, ul, bg], axis=-1)


def background(x: tf.Tensor) -> tf.Tensor:
    """The 6 coordinate channels ``(i - H/2) / H`` and ``(j - W/2) / W``, each ``+ 0 * x``: (B, H, W, 6)."""
    H, W = x.shape[1], x.shape[2]
    rows = (tf.range(H, dtype=x.dtype) - H / 2) / H
    cols = (tf.range(W, dtype=x.dtype) - W / 2) / W
    return tf.concat([rows[None, :, None, None] + 0.0 * x, cols[None, None, :, None] + 0.0 * x], axis=3)


@_serializable
class PixelSNAIL(PlannedNetwork):
    """The original PixelSNAIL ``spec``: ``x`` (B, H, W, 3) in [-1, 1] -> mixture parameters
    (B, H, W, 10 M). Arguments as ``torch_impl.pixelsnail.PixelSNAIL``; ``dtype`` as any Keras layer's."""

    owner = "PixelSNAIL"

    def __init__(
        self,
        spec: str = "h12_noup_smallkey",
        nr_resnet: int = 4,
        nr_filters: int = 256,
        nr_logistic_mix: int = 10,
        nonlinearity: str = "elu",
        h_channels: int | None = None,
        dropout_p: float = 0.5,
        polyak_decay: float | None = 0.9995,
        attn_rep: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        s = spec_of(spec)
        config = normalize_pixelsnail_config(spec, {
            "nr_resnet": nr_resnet, "nr_filters": nr_filters, "nr_logistic_mix": nr_logistic_mix, "nonlinearity": nonlinearity,
            "h_channels": h_channels, "dropout_p": dropout_p, "polyak_decay": polyak_decay,
            "attn_rep": s.attn_rep if attn_rep is None else attn_rep})
        self.spec = spec
        self.two_streams = s.two_streams
        self.att_downsample = s.att_downsample
        self.key_channels = attention_channels(spec, nr_filters)[0]
        self._build(config, pixelsnail_plan(spec, config))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "spec": self.spec}

    def _run(self, x: tf.Tensor, h: Any, layer: Callable[[Any, tf.Tensor], tf.Tensor], block: Callable[..., tf.Tensor],
             masks: Sequence[Any] | None) -> tf.Tensor:
        """The network once, in call order (twin: ``torch_impl.pixelsnail.PixelSNAIL._run``)."""
        R, K = self.config["nr_resnet"], self.key_channels
        mask_iter = iter(masks) if masks is not None else None

        def run_block(m: Any, t: tf.Tensor, a: Any) -> tf.Tensor:
            return block(m, t, a, h, None if mask_iter is None else next(mask_iter))

        xp, bg = with_ones(x), background(x)
        u = down_shift(layer(self.u_init, xp)) if self.two_streams else None
        ul = down_shift(layer(self.ul_init_down, xp)) + right_shift(layer(self.ul_init_right, xp))
        k = 0
        for r in range(self.config["attn_rep"]):
            for _ in range(R):
                if self.two_streams:
                    u = run_block(self.u[k], u, None)
                ul = run_block(self.ul[k], ul, u)
                k += 1
            raw = layer(self.key_nin[r], run_block(self.key_block[r], key_content(x, ul, bg), None))
            query = layer(self.query_nin[r], run_block(self.query_block[r], tf.concat([ul, bg], axis=-1), None))
            mixed = causal_attention(*split_raw(raw, K), query, self.att_downsample)
            ul = run_block(self.mix_block[r], ul, mixed)
        return layer(self.nin_out, elu(ul))
