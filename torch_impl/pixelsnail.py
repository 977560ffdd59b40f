"""PixelSNAIL (the original ``_base_noup_smallkey_spec`` family and ``model_spec``) as a PyTorch module,
NCHW, and its causal attention. Twin: ``tf_impl.pixelsnail``.

The networks of docs/pixelsnail.md, built from ``gated_spec.pixelsnail.pixelsnail_plan`` with the
existing layers and ``GatedResnet`` (checks, forward, EMA, dropout masks and the all-or-nothing init
come from ``torch_impl.model.PlannedNetwork``)::

    xp = concat([x, ones]);  bg = background(x)               # (B, 4, H, W), (B, 6, H, W)
    [u = down_shift(u_init(xp))]                               # model_spec only
    ul = down_shift(ul_init_down(xp)) + right_shift(ul_init_right(xp))
    attn_rep times:
        R times: [u = u_blocks(u)]; ul = ul_blocks(ul[, a=u])
        raw   = key_nin(key_block(concat([x, ul, bg])))        # keys first, then values
        query = query_nin(query_block(concat([ul, bg])))
        ul    = mix_block(ul, a=causal_attention(raw[:, :K], raw[:, K:], query, att_downsample))
    out = nin_out(elu(ul))
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gated_spec.pixelsnail import (
    MASK_OFFSET,
    PROBS_EPS,
    attention_channels,
    attention_scale,
    causal_mask,
    normalize_pixelsnail_config,
    pixelsnail_plan,
    same_pool_pads,
    spec_of,
)
from torch_impl.model import PlannedNetwork, with_ones
from torch_impl.ops import down_shift, elu, right_shift


def max_pool_same(x: torch.Tensor, size: int) -> torch.Tensor:
    """``tf.nn.max_pool(x, size, size, 'SAME')`` on NCHW: the padding never wins a maximum."""
    (t, b), (l, r) = same_pool_pads(x.shape[2], size), same_pool_pads(x.shape[3], size)
    if t or b or l or r:
        x = F.pad(x, (l, r, t, b), value=float("-inf"))
    return F.max_pool2d(x, size, size)


def causal_attention(key: torch.Tensor, mixin: torch.Tensor, query: torch.Tensor, downsample: int = 1) -> torch.Tensor:
    """The original ``nn.causal_attention``: ``key`` (B, K, H, W), ``mixin`` (B, C, H, W), ``query``
    (B, K, H, W) -> (B, C, H, W). Pixels flattened in raster order; with ``downsample > 1`` keys and
    values are max-pooled (``SAME``) and the mask pooled with them (``gated_spec.pixelsnail.causal_mask``)::

        dot = q @ k^T - (1 - mask) * 1e10;  dot -= max over keys
        e = exp(dot / sqrt(K)) * mask;  probs = e / (sum(e) + 1e-6);  mixed = probs @ v

    Not a softmax: a pixel with no earlier key (the first) gets exactly 0.
    """
    B, K, H, W = query.shape
    if downsample > 1:
        key, mixin = max_pool_same(key, downsample), max_pool_same(mixin, downsample)
    C = mixin.shape[1]
    mask = torch.tensor(causal_mask(H, W, downsample), dtype=query.dtype, device=query.device)
    probs = attention_probs(torch.matmul(query.reshape(B, K, H * W).transpose(1, 2), key.reshape(B, K, -1)), mask, key.shape[1])
    mixed = torch.matmul(probs, mixin.reshape(B, C, -1).transpose(1, 2))
    return mixed.transpose(1, 2).reshape(B, C, H, W)


def attention_probs(dot: torch.Tensor, mask: torch.Tensor, key_channels: int) -> torch.Tensor:
    """The attention weights from the raw dot products ``q @ k^T`` (B, HW, H'W') and the 0/1 ``mask``:
    ``exp`` of the masked, max-shifted, scaled dots times the mask, over ``sum + 1e-6``."""
    dot = dot - (1.0 - mask) * MASK_OFFSET
    dot = dot - torch.amax(dot, dim=-1, keepdim=True)
    e = torch.exp(dot / attention_scale(key_channels)) * mask
    return e / (torch.sum(e, dim=-1, keepdim=True) + PROBS_EPS)


def split_raw(raw: torch.Tensor, key_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The key nin's output split on channels: the first ``key_channels`` are the keys, the rest the values."""
    return raw[:, :key_channels], raw[:, key_channels:]


def key_content(x: torch.Tensor, ul: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """What the key block reads: ``concat([x, ul, background])`` (the raw pixels first)."""
    return torch.cat([x, ul, bg], dim=1)


def background(x: torch.Tensor) -> torch.Tensor:
    """The 6 coordinate channels: ``(i - H/2) / H`` and ``(j - W/2) / W``, each ``+ 0 * x`` (so
    broadcast over x's 3 channels), concatenated: (B, 6, H, W) in x's dtype."""
    H, W = x.shape[2], x.shape[3]
    rows = (torch.arange(H, dtype=x.dtype, device=x.device) - H / 2) / H
    cols = (torch.arange(W, dtype=x.dtype, device=x.device) - W / 2) / W
    return torch.cat([rows.view(1, 1, H, 1) + 0.0 * x, cols.view(1, 1, 1, W) + 0.0 * x], dim=1)


class PixelSNAIL(PlannedNetwork):
    """The original PixelSNAIL ``spec`` (``'h12_noup_smallkey'``, ``'h8_noup_smallkey'``,
    ``'h12_pool2_smallkey'`` or ``'model_spec'``): ``x`` (B, 3, H, W) in [-1, 1] -> mixture
    parameters (B, 10 M, H, W). Defaults are the released CIFAR-10 run's (``gated_spec.pixelsnail.RELEASED``:
    R 4, F 256, M 10, elu, dropout 0.5, Polyak 0.9995).

    Args:
        spec: which of the original's spec functions.
        nr_resnet: ``R``, blocks before each attention block.
        nr_filters: ``F``, the channel count of the streams.
        nr_logistic_mix: ``M``, mixture components of the output distribution.
        nonlinearity: the blocks' nonlinearity (train.py's default ``elu``; the output uses plain ``elu``).
        h_channels: size of the conditioning vector ``h``; ``None`` for an unconditional model.
        dropout_p: every block's dropout; active in ``train()``.
        polyak_decay: keep Polyak shadows of every weight with this decay; ``None`` for none.
        attn_rep: attention blocks; ``None`` for the spec's own (12, 8, 12, 6).
    """

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
        *,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        s = spec_of(spec)
        config = normalize_pixelsnail_config(spec, {
            "nr_resnet": nr_resnet, "nr_filters": nr_filters, "nr_logistic_mix": nr_logistic_mix, "nonlinearity": nonlinearity,
            "h_channels": h_channels, "dropout_p": dropout_p, "polyak_decay": polyak_decay,
            "attn_rep": s.attn_rep if attn_rep is None else attn_rep})
        self.spec = spec
        self.two_streams = s.two_streams
        self.att_downsample = s.att_downsample
        self.key_channels = attention_channels(spec, nr_filters)[0]
        self._build(config, pixelsnail_plan(spec, config), device, dtype)

    def get_config(self) -> dict[str, Any]:
        return {"spec": self.spec, **self.config}

    def _run(self, x: torch.Tensor, h: torch.Tensor | None, layer: Callable[[nn.Module, torch.Tensor], torch.Tensor],
             block: Callable[..., torch.Tensor], masks: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """The network once, in call order; ``layer(m, t)`` runs a layer, ``block(m, x, a, h, mask)`` a block."""
        R, K = self.config["nr_resnet"], self.key_channels
        mask_iter = iter(masks) if masks is not None else None

        def run_block(m: nn.Module, t: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
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
            query = layer(self.query_nin[r], run_block(self.query_block[r], torch.cat([ul, bg], dim=1), None))
            mixed = causal_attention(*split_raw(raw, K), query, self.att_downsample)
            ul = run_block(self.mix_block[r], ul, mixed)
        return layer(self.nin_out, elu(ul))
