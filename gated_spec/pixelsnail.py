"""The PixelSNAIL networks' facts both twins and the parity tools share (docs/pixelsnail.md).

Framework-free. The original repository's ``pixel_cnn_pp/model.py`` defines the released family as
``_base_noup_smallkey_spec(x, h, init, ema, dropout_p, nr_resnet, nr_filters, attn_rep,
nr_logistic_mix, att_downsample, resnet_nonlinearity)`` with three named partials, and the first
PixelSNAIL as ``model_spec``; :data:`SPECS` holds what tells them apart. :func:`pixelsnail_plan`
lists every layer and block in the original's call order, with the attribute path both twins give it
(as ``gated_spec.model.pixelcnn_pp_plan`` does for PixelCNN++, so ``parity.table`` derives the TF1
names from the same order); :func:`causal_mask` is the attention's mask, written once in NumPy
(exact 0/1 values, so both twins and both dtypes use the same constant).

Where the translation differs from the original: ``attn_rep`` is a config key (the family's count by
default) so that tests can run a network with one or two attention blocks; with ``att_downsample > 1``
the original lays each mask row out as a ``sqrt(HW) x sqrt(HW)`` image, so it runs on square images
only; here the row is laid out ``H x W`` (the same for square images).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gated_spec.model import IMAGE_CHANNELS, OUTPUT_PER_MIXTURE, PlanEntry, normalize_model_config, plan_dropout_mask_shapes

# -- the family (docs/pixelsnail.md "Networks") --------------------------------------------------------


@dataclass(frozen=True)
class SnailSpec:
    """One of the original's PixelSNAIL spec functions: ``attn_rep`` attention blocks (the default of
    the config key), keys and values max-pooled by ``att_downsample`` before the attention,
    ``two_streams`` (``model_spec``: the ``u`` stream too, and keys/values/queries ``F`` wide) or only
    ``ul`` with 16-channel keys and queries (``smallkey``)."""

    name: str
    attn_rep: int
    att_downsample: int
    two_streams: bool


SPECS: dict[str, SnailSpec] = {
    "h12_noup_smallkey": SnailSpec("h12_noup_smallkey", 12, 1, False),  # the released CIFAR-10 / ImageNet-32 model
    "h8_noup_smallkey": SnailSpec("h8_noup_smallkey", 8, 1, False),
    "h12_pool2_smallkey": SnailSpec("h12_pool2_smallkey", 12, 2, False),
    "model_spec": SnailSpec("model_spec", 6, 1, True),  # train.py --model model
}
SMALL_KEY = 16  # q_size: the smallkey family's key and query channels
BACKGROUND_CHANNELS = 2 * IMAGE_CHANNELS  # the row and the column coordinate, each broadcast over x's channels
# The released runs (the repository's README and train.py's defaults): CIFAR-10's settings.
# ImageNet-32: nr_logistic_mix 32, dropout_p 0.0, polyak_decay 0.9997.
RELEASED = {"nr_resnet": 4, "nr_filters": 256, "nr_logistic_mix": 10, "nonlinearity": "elu", "h_channels": None,
            "dropout_p": 0.5, "polyak_decay": 0.9995}

# -- the attention (docs/pixelsnail.md "Causal attention") ------------------------------------------------
MASK_OFFSET = 1e10  # dot - (1 - mask) * 1e10 (exact in float32: 9765625 * 2**10)
PROBS_EPS = 1e-6  # probs = e / (sum(e) + 1e-6): a row with nothing to attend to gives exactly 0


def spec_of(name: str) -> SnailSpec:
    if name not in SPECS:
        raise ValueError(f"expected a PixelSNAIL spec among {list(SPECS)}; received {name!r}")
    return SPECS[name]


def defaults(spec: str) -> dict:
    """The config keys of ``spec`` and their defaults: the released settings and the spec's ``attn_rep``."""
    return {**RELEASED, "attn_rep": spec_of(spec).attn_rep}


def normalize_pixelsnail_config(spec: str, config: dict) -> dict:
    """The full config of a ``spec`` network (defaults filled in), checked; ``ValueError`` names the field."""
    return normalize_model_config(config, defaults(spec))


def attention_channels(spec: str, nr_filters: int) -> tuple[int, int, int]:
    """(key, value, query) channels: ``model_spec`` splits a ``2F`` nin into ``F`` keys and ``F``
    values and has ``F`` queries; the smallkey family's nin gives ``F // 2 + 16``: 16 keys first,
    ``F // 2`` values, and 16 queries."""
    if spec_of(spec).two_streams:
        return nr_filters, nr_filters, nr_filters
    return SMALL_KEY, nr_filters // 2, SMALL_KEY


def attention_scale(key_channels: int) -> float:
    """The divisor of the dot products: ``np.sqrt(C_key).astype(np.float32)`` as the original writes
    it (the float32 value, also in float64; exact for 16 and 256)."""
    return float(np.float32(np.sqrt(key_channels)))


def pixelsnail_plan(spec: str, config: dict) -> list[PlanEntry]:
    """Every layer and block of ``spec`` in the original's call order::

        [u_init]  ul_init_down  ul_init_right                      # u_init: model_spec only
        attn_rep times:  R x ([u.k]  ul.k)                         # ul.k gets a = u.k in model_spec
                         key_block.r  key_nin.r  query_block.r  query_nin.r  mix_block.r
        nin_out
    """
    s = spec_of(spec)
    c = normalize_pixelsnail_config(spec, config)
    R, F_ = c["nr_resnet"], c["nr_filters"]
    inp = IMAGE_CHANNELS + 1
    key, value, query = attention_channels(spec, F_)
    plan = [PlanEntry("u_init", "down_shifted_conv2d", inp, F_, (2, 3))] if s.two_streams else []
    plan += [PlanEntry("ul_init_down", "down_shifted_conv2d", inp, F_, (1, 3)),
             PlanEntry("ul_init_right", "down_right_shifted_conv2d", inp, F_, (2, 1))]
    k = 0
    content = IMAGE_CHANNELS + F_ + BACKGROUND_CHANNELS  # concat([x, ul, background])
    for r in range(c["attn_rep"]):
        for _ in range(R):
            if s.two_streams:
                plan.append(PlanEntry(f"u.{k}", "gated_resnet", F_, F_, conv="down_shifted_conv2d"))
            plan.append(PlanEntry(f"ul.{k}", "gated_resnet", F_, F_, conv="down_right_shifted_conv2d",
                                  a_channels=F_ if s.two_streams else 0))
            k += 1
        plan += [PlanEntry(f"key_block.{r}", "gated_resnet", content, content, conv="nin"),
                 PlanEntry(f"key_nin.{r}", "nin", content, key + value),
                 PlanEntry(f"query_block.{r}", "gated_resnet", F_ + BACKGROUND_CHANNELS, F_ + BACKGROUND_CHANNELS, conv="nin"),
                 PlanEntry(f"query_nin.{r}", "nin", F_ + BACKGROUND_CHANNELS, query),
                 PlanEntry(f"mix_block.{r}", "gated_resnet", F_, F_, conv="nin", a_channels=value)]
    plan.append(PlanEntry("nin_out", "nin", F_, OUTPUT_PER_MIXTURE * c["nr_logistic_mix"]))
    return plan


def pixelsnail_dropout_mask_shapes(spec: str, config: dict, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """The NHWC shape of each block's dropout keep-mask, in call order (all at full resolution)."""
    c = normalize_pixelsnail_config(spec, config)
    return plan_dropout_mask_shapes(pixelsnail_plan(spec, c), c["nonlinearity"], batch, height, width)


def background(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The two coordinate maps before broadcasting, float64: ``(i - H/2) / H`` per row ``i`` and
    ``(j - W/2) / W`` per column ``j`` (each twin computes them in its dtype the same way)."""
    return (np.arange(height) - height / 2) / height, (np.arange(width) - width / 2) / width


def pooled_size(size: int, downsample: int) -> int:
    """``SAME`` pooling's output size: ``ceil(size / downsample)``."""
    return -(-size // downsample)


def same_pool_pads(size: int, downsample: int) -> tuple[int, int]:
    """``SAME`` pooling's (before, after) padding with window = stride = ``downsample``."""
    total = max(pooled_size(size, downsample) * downsample - size, 0)
    return total // 2, total - total // 2


def pooled_blocks(height: int, width: int, downsample: int) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """The image pixels of each ``SAME`` max-pooling block, ``(row0, row1, col0, col1)`` (ranges, the
    padding left out), keyed by the block's last pixel in raster order and listed in the pooled map's
    raster order: :func:`causal_mask` lets a query attend to a block once that pixel is before it
    (the cached sampler appends the block's pooled key then; docs/sampler.md "PixelSNAIL")."""
    (t, _), (l, _) = same_pool_pads(height, downsample), same_pool_pads(width, downsample)
    rows = [(max(b * downsample - t, 0), min(b * downsample - t + downsample, height)) for b in range(pooled_size(height, downsample))]
    cols = [(max(b * downsample - l, 0), min(b * downsample - l + downsample, width)) for b in range(pooled_size(width, downsample))]
    return {(r1 - 1, c1 - 1): (r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols}


@lru_cache(maxsize=32)
def causal_mask(height: int, width: int, downsample: int = 1) -> np.ndarray:
    """The attention mask ``[H W, H' W']`` (bool, read-only; ``(H W)^2`` bytes, cached): query pixel ``i`` (raster order)
    may attend to key ``j`` only if ``j < i``. With ``downsample > 1`` the keys are ``SAME``
    max-pooled blocks and the mask is pooled as ``-max_pool(-mask)``: a block counts only if every
    pixel in it comes strictly before the query (padding ignored, as ``max_pool`` ignores it)."""
    n = height * width
    mask = np.tri(n, n, k=-1, dtype=bool)
    if downsample > 1:
        grid = mask.reshape(n, height, width)
        (t, b), (l, r) = same_pool_pads(height, downsample), same_pool_pads(width, downsample)
        grid = np.pad(grid, ((0, 0), (t, b), (l, r)), constant_values=True)  # the min (all) ignores the padding
        hp, wp = pooled_size(height, downsample), pooled_size(width, downsample)
        mask = grid.reshape(n, hp, downsample, wp, downsample).all(axis=(2, 4)).reshape(n, hp * wp)
    mask.setflags(write=False)
    return mask
