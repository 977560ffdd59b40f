"""The discretized logistic mixture of PixelCNN++: loss, bits per dimension and the sampler, NCHW.
Twin: ``tf_impl.mixture``.

The original works on NHWC tensors and splits the last axis; here ``x`` is (B, 3, H, W) and ``l``
(B, 10 M, H, W), moved channels-last inside so that every split, product and reduction is the
original's, formula for formula (docs/model_spec.md). Selections are ``torch.where`` as the
original's ``tf.where``; as there, the unselected branches are computed too, and the clamps keep them
finite. ``log_sum_exp`` and ``log_prob_from_logits`` are written as the original writes them (max,
subtract, ``exp``, ``log`` of the sum), not ``torch.logsumexp``; softplus is TensorFlow's
(``torch_impl.ops.softplus``: its cut-offs and gradient), not ``F.softplus`` (pitfall M9), and so is
the sigmoid of the bins' edges (``torch_impl.ops.sigmoid``: ``e / (1 + e)``), not ``torch.sigmoid``
(pitfall M11).
"""

from __future__ import annotations

import math

import torch

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
from torch_impl.ops import sigmoid, softplus


def _mixtures(l: torch.Tensor) -> int:
    if l.dim() != 4 or l.shape[1] % OUTPUT_PER_MIXTURE:
        raise ValueError(f"expected `l` of shape (B, {OUTPUT_PER_MIXTURE} M, H, W) (NCHW); received shape {tuple(l.shape)}")
    return l.shape[1] // OUTPUT_PER_MIXTURE


def _split(l: torch.Tensor, M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit_probs (B, H, W, M), the rest as (B, H, W, 3, 3M)), as the original reshapes them."""
    l = l.permute(0, 2, 3, 1)
    B, H, W, _ = l.shape
    return l[..., :M], l[..., M:].reshape(B, H, W, IMAGE_CHANNELS, 3 * M)


def log_sum_exp(x: torch.Tensor) -> torch.Tensor:
    """Over the last axis: ``m + log(sum(exp(x - m)))`` with ``m`` the maximum (the original's helper)."""
    m = torch.amax(x, dim=-1)
    return m + torch.log(torch.sum(torch.exp(x - m.unsqueeze(-1)), dim=-1))


def log_prob_from_logits(x: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the last axis: ``x - m - log(sum(exp(x - m)))`` (the original's helper)."""
    m = torch.amax(x, dim=-1, keepdim=True)
    return x - m - torch.log(torch.sum(torch.exp(x - m), dim=-1, keepdim=True))


def select_log_probs(xs: torch.Tensor, cdf_delta: torch.Tensor, log_cdf_plus: torch.Tensor,
                     log_one_minus_cdf_min: torch.Tensor, log_pdf_mid: torch.Tensor) -> torch.Tensor:
    """Each sub-pixel's log probability, by the original's nested ``tf.where``: the lower tail at
    ``x < -0.999``, the upper tail at ``x > 0.999``, else ``log(max(cdf_delta, 1e-12))`` where
    ``cdf_delta > 1e-5`` and the density at the bin's centre times its width otherwise. Every branch is
    computed everywhere; the selection never multiplies one by a mask, so a branch that is infinite
    where it is not selected (``log(0)`` where ``cdf_delta`` underflows) cannot reach the result."""
    inner = torch.where(cdf_delta > CDF_DELTA_MIN, torch.log(torch.clamp(cdf_delta, min=CDF_DELTA_FLOOR)),
                        log_pdf_mid - LOG_BINS_HALF)
    return torch.where(xs < -EDGE, log_cdf_plus, torch.where(xs > EDGE, log_one_minus_cdf_min, inner))


def discretized_mix_logistic_loss(x: torch.Tensor, l: torch.Tensor, sum_all: bool = True) -> torch.Tensor:
    """The negative log-likelihood of ``x`` (B, 3, H, W) in [-1, 1] under the mixture ``l``
    (B, 10 M, H, W), in nats: summed over everything (``sum_all``), or per image (B,)."""
    M = _mixtures(l)
    if x.dim() != 4 or x.shape[1] != IMAGE_CHANNELS or x.shape[0] != l.shape[0] or x.shape[2:] != l.shape[2:]:
        raise ValueError(f"expected `x` of shape {(l.shape[0], IMAGE_CHANNELS, *l.shape[2:])} (NCHW, as l); received shape {tuple(x.shape)}")
    logit_probs, rest = _split(l, M)
    means = rest[..., :M]
    log_scales = torch.clamp(rest[..., M:2 * M], min=LOG_SCALE_MIN)
    coeffs = torch.tanh(rest[..., 2 * M:3 * M])
    xs = x.permute(0, 2, 3, 1).unsqueeze(-1) + torch.zeros_like(means)  # (B, H, W, 3, M)
    m2 = means[..., 1, :] + coeffs[..., 0, :] * xs[..., 0, :]
    m3 = means[..., 2, :] + coeffs[..., 1, :] * xs[..., 0, :] + coeffs[..., 2, :] * xs[..., 1, :]
    means = torch.cat([means[..., 0:1, :], m2.unsqueeze(3), m3.unsqueeze(3)], dim=3)
    centered = xs - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered + HALF_BIN)
    cdf_plus = sigmoid(plus_in)
    min_in = inv_stdv * (centered - HALF_BIN)
    cdf_min = sigmoid(min_in)
    log_cdf_plus = plus_in - softplus(plus_in)  # log probability for the edge case x = -1
    log_one_minus_cdf_min = -softplus(min_in)  # and for x = +1
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_stdv * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * softplus(mid_in)
    log_probs = select_log_probs(xs, cdf_delta, log_cdf_plus, log_one_minus_cdf_min, log_pdf_mid)
    log_probs = torch.sum(log_probs, dim=3) + log_prob_from_logits(logit_probs)
    per_pixel = log_sum_exp(log_probs)
    return -torch.sum(per_pixel) if sum_all else -torch.sum(per_pixel, dim=(1, 2))


def bits_per_dim(loss: torch.Tensor | float, batch: int, height: int, width: int) -> torch.Tensor | float:
    """The trainers' figure: ``loss / (log(2) * B * H * W * 3)``, with ``B`` the images the summed loss covers."""
    return loss / (math.log(2.0) * batch * height * width * IMAGE_CHANNELS)


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return u * (1.0 - 2.0 * SAMPLER_U_MIN) + SAMPLER_U_MIN


def sample_from_discretized_mix_logistic(l: torch.Tensor, u_mix: torch.Tensor | None = None, u_value: torch.Tensor | None = None,
                                         generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of every pixel from the mixture ``l`` (B, 10 M, H, W) -> (B, 3, H, W) in [-1, 1].

    ``u_mix`` (B, H, W, M) picks the component (Gumbel-max), ``u_value`` (B, H, W, 3) the value
    (logistic inverse CDF); both uniform in [1e-5, 1 - 1e-5), NHWC as the original draws them. Drawn
    from ``generator`` (or torch's global RNG) where not given.
    """
    M = _mixtures(l)
    logit_probs, rest = _split(l, M)
    B, H, W, _ = logit_probs.shape
    u_mix = _uniform((B, H, W, M), l, generator) if u_mix is None else _check_noise("u_mix", u_mix, (B, H, W, M), l)
    u_value = _uniform((B, H, W, IMAGE_CHANNELS), l, generator) if u_value is None else _check_noise(
        "u_value", u_value, (B, H, W, IMAGE_CHANNELS), l)
    k = torch.argmax(logit_probs - torch.log(-torch.log(u_mix)), dim=3)  # (B, H, W)
    index = k[..., None, None].expand(B, H, W, IMAGE_CHANNELS, 1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return torch.gather(t, 4, index).squeeze(4)  # (B, H, W, 3)

    means = pick(rest[..., :M])
    log_scales = torch.clamp(pick(rest[..., M:2 * M]), min=LOG_SCALE_MIN)
    coeffs = pick(torch.tanh(rest[..., 2 * M:3 * M]))
    z = means + torch.exp(log_scales) * (torch.log(u_value) - torch.log(1.0 - u_value))
    x0 = torch.clamp(z[..., 0], -1.0, 1.0)
    x1 = torch.clamp(z[..., 1] + coeffs[..., 0] * x0, -1.0, 1.0)
    x2 = torch.clamp(z[..., 2] + coeffs[..., 1] * x0 + coeffs[..., 2] * x1, -1.0, 1.0)
    return torch.stack([x0, x1, x2], dim=1)


def _check_noise(name: str, u: torch.Tensor, shape: tuple[int, ...], l: torch.Tensor) -> torch.Tensor:
    if tuple(u.shape) != shape:
        raise ValueError(f"expected `{name}` of shape {shape} (NHWC, as the original draws it); received shape {tuple(u.shape)}")
    if u.dtype != l.dtype:
        raise ValueError(f"expected `{name}` of dtype {l.dtype} (as l); received {u.dtype}")
    return u.to(l.device)


def sampler_noise(batch: int, height: int, width: int, mixtures: int, like: torch.Tensor, u_mix: torch.Tensor | None,
                  u_value: torch.Tensor | None, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampler's ``u_mix`` (B, H, W, M) and ``u_value`` (B, H, W, 3): checked where given, drawn from
    ``generator`` where not (``u_mix`` first), in ``like``'s dtype and on its device."""
    u_mix = _uniform((batch, height, width, mixtures), like, generator) if u_mix is None else _check_noise(
        "u_mix", u_mix, (batch, height, width, mixtures), like)
    u_value = _uniform((batch, height, width, IMAGE_CHANNELS), like, generator) if u_value is None else _check_noise(
        "u_value", u_value, (batch, height, width, IMAGE_CHANNELS), like)
    return u_mix, u_value


@torch.no_grad()
def sample(model: torch.nn.Module, batch: int, height: int, width: int, h: torch.Tensor | None = None, *,
           u_mix: torch.Tensor | None = None, u_value: torch.Tensor | None = None, use_ema: bool = False,
           generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Draw ``batch`` images (B, 3, H, W) pixel by pixel in raster order, as the trainers do: at step
    ``(i, j)`` run the network on the current image (zeros to start) and keep pixel ``(i, j)`` of a
    draw from its output.

    ``u_mix`` (B, H, W, M) and ``u_value`` (B, H, W, 3): the noise, position ``(i, j)`` used at step
    ``(i, j)``, so both backends fed the same noise draw the same images; without them the noise comes
    from ``generator`` (or torch's RNG). ``progress`` shows a bar (tqdm where installed, else a line
    per row on stderr). The model runs in eval mode (no dropout) and comes back in its former mode.
    """
    param = next(model.parameters())
    u_mix, u_value = sampler_noise(batch, height, width, model.config["nr_logistic_mix"], param, u_mix, u_value, generator)
    x = torch.zeros(batch, IMAGE_CHANNELS, height, width, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        for i, j in raster(height, width, progress):
            l = model(x, h, use_ema=use_ema)
            draw = sample_from_discretized_mix_logistic(l[:, :, i:i + 1, j:j + 1], u_mix[:, i:i + 1, j:j + 1],
                                                        u_value[:, i:i + 1, j:j + 1])
            x[:, :, i, j] = draw[:, :, 0, 0]
    finally:
        model.train(was_training)
    return x
