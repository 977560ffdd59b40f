"""The discretized logistic mixture of PixelCNN++: loss, bits per dimension and the sampler, NHWC.
Twin: ``torch_impl.mixture``.

The original's ``discretized_mix_logistic_loss``, ``sample_from_discretized_mix_logistic`` and their
helpers, formula for formula (docs/model_spec.md); the sampler takes its uniforms as arguments.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from gated_spec.model import (
    CDF_DELTA_FLOOR,
    CDF_DELTA_MIN,
    EDGE,
    HALF_BIN,
    IMAGE_CHANNELS,
    LOG_BINS_HALF,
    LOG_SCALE_MIN,
    OUTPUT_PER_MIXTURE,
    SAMPLER_U_MIN,
    raster,
)
from tf_impl.ops import sigmoid, softplus


def _mixtures(l: tf.Tensor) -> int:
    if l.shape.rank != 4 or l.shape[-1] % OUTPUT_PER_MIXTURE:
        raise ValueError(f"expected `l` of shape (B, H, W, {OUTPUT_PER_MIXTURE} M) (NHWC); received shape {tuple(l.shape)}")
    return l.shape[-1] // OUTPUT_PER_MIXTURE


def _split(l: tf.Tensor, M: int) -> tuple[tf.Tensor, tf.Tensor]:
    B, H, W, _ = l.shape
    return l[..., :M], tf.reshape(l[..., M:], [B, H, W, IMAGE_CHANNELS, 3 * M])


def log_sum_exp(x: tf.Tensor) -> tf.Tensor:
    """Over the last axis: ``m + log(sum(exp(x - m)))`` (the original's helper)."""
    m = tf.reduce_max(x, axis=-1)
    m2 = tf.reduce_max(x, axis=-1, keepdims=True)
    return m + tf.math.log(tf.reduce_sum(tf.exp(x - m2), axis=-1))


def log_prob_from_logits(x: tf.Tensor) -> tf.Tensor:
    """Log-softmax over the last axis (the original's helper)."""
    m = tf.reduce_max(x, axis=-1, keepdims=True)
    return x - m - tf.math.log(tf.reduce_sum(tf.exp(x - m), axis=-1, keepdims=True))


def select_log_probs(xs: tf.Tensor, cdf_delta: tf.Tensor, log_cdf_plus: tf.Tensor, log_one_minus_cdf_min: tf.Tensor,
                     log_pdf_mid: tf.Tensor) -> tf.Tensor:
    """Each sub-pixel's log probability, by the original's nested ``tf.where`` (the lower tail at
    ``x < -0.999``, the upper at ``x > 0.999``, else ``log(max(cdf_delta, 1e-12))`` where
    ``cdf_delta > 1e-5``, else the density at the bin's centre times its width)."""
    inner = tf.where(cdf_delta > CDF_DELTA_MIN, tf.math.log(tf.maximum(cdf_delta, CDF_DELTA_FLOOR)), log_pdf_mid - LOG_BINS_HALF)
    return tf.where(xs < -EDGE, log_cdf_plus, tf.where(xs > EDGE, log_one_minus_cdf_min, inner))


def discretized_mix_logistic_loss(x: Any, l: Any, sum_all: bool = True) -> tf.Tensor:
    """The negative log-likelihood of ``x`` (B, H, W, 3) in [-1, 1] under ``l`` (B, H, W, 10 M), in
    nats: summed over everything (``sum_all``), or per image (B,)."""
    l = tf.convert_to_tensor(l)
    x = tf.convert_to_tensor(x)
    M = _mixtures(l)
    if tuple(x.shape) != (*l.shape[:-1], IMAGE_CHANNELS):
        raise ValueError(f"expected `x` of shape {(*l.shape[:-1], IMAGE_CHANNELS)} (NHWC, as l); received shape {tuple(x.shape)}")
    logit_probs, rest = _split(l, M)
    means = rest[..., :M]
    log_scales = tf.maximum(rest[..., M:2 * M], LOG_SCALE_MIN)
    coeffs = tf.tanh(rest[..., 2 * M:3 * M])
    xs = tf.expand_dims(x, -1) + tf.zeros_like(means)  # (B, H, W, 3, M)
    m2 = means[..., 1, :] + coeffs[..., 0, :] * xs[..., 0, :]
    m3 = means[..., 2, :] + coeffs[..., 1, :] * xs[..., 0, :] + coeffs[..., 2, :] * xs[..., 1, :]
    means = tf.concat([means[..., 0:1, :], m2[..., None, :], m3[..., None, :]], axis=3)
    centered = xs - means
    inv_stdv = tf.exp(-log_scales)
    plus_in = inv_stdv * (centered + HALF_BIN)
    cdf_plus = sigmoid(plus_in)
    min_in = inv_stdv * (centered - HALF_BIN)
    cdf_min = sigmoid(min_in)
    log_cdf_plus = plus_in - softplus(plus_in)
    log_one_minus_cdf_min = -softplus(min_in)
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_stdv * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * softplus(mid_in)
    log_probs = select_log_probs(xs, cdf_delta, log_cdf_plus, log_one_minus_cdf_min, log_pdf_mid)
    log_probs = tf.reduce_sum(log_probs, axis=3) + log_prob_from_logits(logit_probs)
    per_pixel = log_sum_exp(log_probs)
    return -tf.reduce_sum(per_pixel) if sum_all else -tf.reduce_sum(per_pixel, axis=[1, 2])


def bits_per_dim(loss: Any, batch: int, height: int, width: int) -> Any:
    """The trainers' figure: ``loss / (log(2) * B * H * W * 3)``."""
    return loss / (math.log(2.0) * batch * height * width * IMAGE_CHANNELS)


def _uniform(shape: tuple[int, ...], dtype: Any, generator: tf.random.Generator | None) -> tf.Tensor:
    gen = generator or tf.random.get_global_generator()
    return gen.uniform(shape, minval=SAMPLER_U_MIN, maxval=1.0 - SAMPLER_U_MIN, dtype=dtype)


def _check_noise(name: str, u: Any, shape: tuple[int, ...], dtype: tf.DType) -> tf.Tensor:
    u = tf.convert_to_tensor(u)
    if tuple(u.shape) != shape:
        raise ValueError(f"expected `{name}` of shape {shape} (NHWC); received shape {tuple(u.shape)}")
    if u.dtype != dtype:
        raise ValueError(f"expected `{name}` of dtype {dtype.name} (as l); received {u.dtype.name}")
    return u


def sample_from_discretized_mix_logistic(l: Any, u_mix: Any = None, u_value: Any = None,
                                         generator: tf.random.Generator | None = None) -> tf.Tensor:
    """One draw of every pixel from ``l`` (B, H, W, 10 M) -> (B, H, W, 3) in [-1, 1]; ``u_mix``
    (B, H, W, M) and ``u_value`` (B, H, W, 3) uniform in [1e-5, 1 - 1e-5), drawn where not given."""
    l = tf.convert_to_tensor(l)
    M = _mixtures(l)
    logit_probs, rest = _split(l, M)
    B, H, W, _ = logit_probs.shape
    u_mix = _uniform((B, H, W, M), l.dtype, generator) if u_mix is None else _check_noise("u_mix", u_mix, (B, H, W, M), l.dtype)
    u_value = (_uniform((B, H, W, IMAGE_CHANNELS), l.dtype, generator) if u_value is None
               else _check_noise("u_value", u_value, (B, H, W, IMAGE_CHANNELS), l.dtype))
    sel = tf.one_hot(tf.argmax(logit_probs - tf.math.log(-tf.math.log(u_mix)), axis=3), depth=M, dtype=l.dtype)
    sel = sel[..., None, :]  # (B, H, W, 1, M)
    means = tf.reduce_sum(rest[..., :M] * sel, axis=4)
    log_scales = tf.maximum(tf.reduce_sum(rest[..., M:2 * M] * sel, axis=4), LOG_SCALE_MIN)
    coeffs = tf.reduce_sum(tf.tanh(rest[..., 2 * M:3 * M]) * sel, axis=4)
    z = means + tf.exp(log_scales) * (tf.math.log(u_value) - tf.math.log(1.0 - u_value))
    x0 = tf.minimum(tf.maximum(z[..., 0], -1.0), 1.0)
    x1 = tf.minimum(tf.maximum(z[..., 1] + coeffs[..., 0] * x0, -1.0), 1.0)
    x2 = tf.minimum(tf.maximum(z[..., 2] + coeffs[..., 1] * x0 + coeffs[..., 2] * x1, -1.0), 1.0)
    return tf.stack([x0, x1, x2], axis=-1)


def sampler_noise(batch: int, height: int, width: int, mixtures: int, dtype: tf.DType, u_mix: Any, u_value: Any,
                  generator: tf.random.Generator | None) -> tuple[tf.Tensor, tf.Tensor]:
    """A sampler's ``u_mix`` (B, H, W, M) and ``u_value`` (B, H, W, 3): checked where given, drawn from
    ``generator`` where not (``u_mix`` first). Twin: ``torch_impl.mixture.sampler_noise``."""
    u_mix = _uniform((batch, height, width, mixtures), dtype, generator) if u_mix is None else _check_noise(
        "u_mix", u_mix, (batch, height, width, mixtures), dtype)
    u_value = _uniform((batch, height, width, IMAGE_CHANNELS), dtype, generator) if u_value is None else _check_noise(
        "u_value", u_value, (batch, height, width, IMAGE_CHANNELS), dtype)
    return u_mix, u_value


def sample(model: Any, batch: int, height: int, width: int, h: Any = None, *, u_mix: Any = None, u_value: Any = None,
           use_ema: bool = False, generator: tf.random.Generator | None = None, progress: bool = False) -> tf.Tensor:
    """Draw ``batch`` images (B, H, W, 3) pixel by pixel in raster order (twin:
    ``torch_impl.mixture.sample``): at step ``(i, j)`` the network runs on the current image and pixel
    ``(i, j)`` of a draw with the noise at ``(i, j)`` is kept. The network runs as one ``tf.function``
    (no dropout)."""
    param = model.weights[0] if model.built else None
    dtype = tf.as_dtype(param.dtype if param is not None else model.variable_dtype)
    u_mix, u_value = sampler_noise(batch, height, width, model.config["nr_logistic_mix"], dtype, u_mix, u_value, generator)
    h = None if h is None else tf.convert_to_tensor(h)
    network = tf.function(lambda x: model(x, h, use_ema=use_ema), autograph=False)
    x = np.zeros((batch, height, width, IMAGE_CHANNELS), dtype.as_numpy_dtype)
    for i, j in raster(height, width, progress):
        l = network(tf.constant(x))
        draw = sample_from_discretized_mix_logistic(l[:, i:i + 1, j:j + 1], u_mix[:, i:i + 1, j:j + 1], u_value[:, i:i + 1, j:j + 1])
        x[:, i, j] = draw.numpy()[:, 0, 0]
    return tf.constant(x)
