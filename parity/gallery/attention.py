"""PixelSNAIL entries S1..S7 (``docs/pixelsnail.md`` "Pitfalls a translator meets here"): naive
translations of the causal attention and what feeds it, and :data:`ATTENTION_PITFALLS`.

Every entry runs on the same tiny ``h12_pool2_smallkey`` network (R = 1, F = 8, one attention block,
one 4x4 image), so they share one TensorFlow reference and one run of the real translation; its keys
and values are pooled by 2, which S3 needs. 4x4 rather than 8x8: the case's sampler runs the network
once per pixel, in each dtype and each of the reference's perturbed re-runs, and on 8x8 the seven
entries cost about twice as much CPU time; every entry is caught on either size. A naive translator writes its own plan where its widths differ
from the original's (S4, S7): the original's weights then cannot load.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

from gated_spec.model import IMAGE_CHANNELS
from gated_spec.pixelsnail import BACKGROUND_CHANNELS
from parity.case import ModelCase
from parity.gallery.base import Pitfall, _hooks


def _snail_case(name: str) -> Callable[[], ModelCase]:
    return lambda: ModelCase(f"pitfall-{name}", {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "dropout_p": 0.5,
                                                 "attn_rep": 1}, batch=1, height=4, width=4, seed=5,
                                             model="h12_pool2_smallkey")


def _narrower_plan(drop: dict[str, int]) -> Callable[..., Any]:
    """The real plan with ``drop[prefix]`` fewer input channels for each layer whose path starts with
    ``prefix`` (and fewer outputs for a block, whose output width is its input's)."""
    import torch_impl.pixelsnail as tp

    real = tp.pixelsnail_plan

    def plan(spec: str, config: dict) -> list:
        out = []
        for e in real(spec, config):
            d = next((n for prefix, n in drop.items() if e.path.startswith(prefix)), 0)
            block = e.kind == "gated_resnet"
            out.append(dataclasses.replace(e, in_channels=e.in_channels - d, out_channels=e.out_channels - d * block))
        return out

    return plan


def _softmax() -> contextlib.AbstractContextManager:
    import torch

    from gated_spec.pixelsnail import MASK_OFFSET, attention_scale

    def naive(dot: Any, mask: Any, key_channels: int) -> Any:
        return torch.softmax((dot - (1.0 - mask) * MASK_OFFSET) / attention_scale(key_channels), dim=-1)

    return _hooks({"pixelsnail.attention_probs": naive})


def _diagonal() -> contextlib.AbstractContextManager:
    import numpy as np

    from gated_spec.pixelsnail import pooled_size

    def naive(height: int, width: int, downsample: int = 1) -> Any:
        n = height * width
        mask = np.tril(np.ones((n, n), dtype=bool))  # tril(k=0): j <= i
        grid = mask.reshape(n, height // downsample, downsample, width // downsample, downsample)  # the case's sizes divide
        return grid.all(axis=(2, 4)).reshape(n, pooled_size(height, downsample) * pooled_size(width, downsample))

    return _hooks({"pixelsnail.causal_mask": naive})


def _mask_max_pooled() -> contextlib.AbstractContextManager:
    import torch
    import torch.nn.functional as F

    def naive(height: int, width: int, downsample: int = 1) -> Any:
        n = height * width
        mask = torch.tril(torch.ones(n, n), diagonal=-1).reshape(n, 1, height, width)
        return F.max_pool2d(mask, downsample, downsample).reshape(n, -1).bool().numpy()  # max, where the original takes -max(-mask)

    return _hooks({"pixelsnail.causal_mask": naive})


def _two_background_channels() -> contextlib.AbstractContextManager:
    import torch

    def naive(x: Any) -> Any:
        B, _, H, W = x.shape
        rows = ((torch.arange(H, dtype=x.dtype) - H / 2) / H).view(1, 1, H, 1).expand(B, 1, H, W)
        cols = ((torch.arange(W, dtype=x.dtype) - W / 2) / W).view(1, 1, 1, W).expand(B, 1, H, W)
        return torch.cat([rows, cols], dim=1)  # one channel per map, not broadcast over x's 3

    fewer = BACKGROUND_CHANNELS - 2
    return _hooks({"pixelsnail.background": naive,
                   "pixelsnail.plan": _narrower_plan({"key_block": fewer, "key_nin": fewer, "query_block": fewer, "query_nin": fewer})})


def _background_over_2() -> contextlib.AbstractContextManager:
    import torch

    def naive(x: Any) -> Any:
        H, W = x.shape[2], x.shape[3]
        rows = (torch.arange(H, dtype=x.dtype) - H / 2) / 2
        cols = (torch.arange(W, dtype=x.dtype) - W / 2) / 2
        return torch.cat([rows.view(1, 1, H, 1) + 0.0 * x, cols.view(1, 1, 1, W) + 0.0 * x], dim=1)

    return _hooks({"pixelsnail.background": naive})


def _keys_values_swapped() -> contextlib.AbstractContextManager:
    def naive(raw: Any, key_channels: int) -> tuple[Any, Any]:
        values = raw.shape[1] - key_channels
        return raw[:, values:], raw[:, :values]  # values first, keys last: the widths right, the channels not

    return _hooks({"pixelsnail.split_raw": naive})


def _keys_without_pixels() -> contextlib.AbstractContextManager:
    import torch

    return _hooks({"pixelsnail.key_content": lambda x, ul, bg: torch.cat([ul, bg], dim=1),
                   "pixelsnail.plan": _narrower_plan({"key_block": IMAGE_CHANNELS, "key_nin": IMAGE_CHANNELS})})


ATTENTION_PITFALLS: list[Pitfall] = [
    Pitfall("S1", "softmax for the masked exp", "normalises the attention with softmax(masked dot / sqrt(K)) instead of "
            "exp(...) * mask / (sum + 1e-6): a pixel with no earlier key block (the first six here) gets the uniform "
            "average of all values, the future included, instead of 0", "forward/out", _snail_case("S1"), _softmax),
    Pitfall("S2", "the diagonal in the mask", "masks with tril(k=0) (j <= i) instead of j < i: a query counts a key "
            "block that ends at itself", "forward/out", _snail_case("S2"), _diagonal),
    Pitfall("S3", "the mask pooled with max_pool", "pools the mask with max_pool instead of -max_pool(-mask): a key block "
            "counts once any pixel in it precedes the query, its later pixels included", "forward/out", _snail_case("S3"),
            _mask_max_pooled),
    Pitfall("S4", "two background channels", "builds the background from the two coordinate maps alone, not each "
            "broadcast over x's 3 channels: the key and query blocks are 4 channels narrower", "load", _snail_case("S4"),
            _two_background_channels),
    Pitfall("S5", "the background over 2", "divides the coordinates by 2 instead of by H and W: (i - H/2) / 2",
            "forward/out", _snail_case("S5"), _background_over_2),
    Pitfall("S6", "keys and values swapped", "takes the values from the front of the key nin's output and the keys from "
            "its end; the original's 16 keys come first", "forward/out", _snail_case("S6"), _keys_values_swapped),
    Pitfall("S7", "keys without the raw pixels", "feeds the key block concat([ul, background]), the query's input, "
            "instead of concat([x, ul, background]): the key block is 3 channels narrower", "load", _snail_case("S7"),
            _keys_without_pixels),
]
