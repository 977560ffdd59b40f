"""The PixelCNN++ network, loss and sampler facts both twins and the parity tools share (docs/model_spec.md).

Framework-free. :func:`pixelcnn_pp_plan` lists every layer and block of the network in the original's
call order, with the attribute path both twins give it (``up_u.3`` is ``up_u[3]`` in torch and the
Keras layer named ``up_u_3``); the twins build their modules from it, and ``parity.table`` derives
the original's TF1 names from the same order. The forward itself is written in each twin.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Iterator

from gated_spec import CHANNEL_MULTIPLIER, LAYER_KINDS, NONLINEARITIES
from gated_spec.checks import check_choice, check_positive

# -- the network (docs/model_spec.md "PixelCNN++ network") ----------------------------------------
IMAGE_CHANNELS = 3
RESOLUTIONS = 3  # the up and the down pass each run at H, H/2, H/4
SPATIAL_MULTIPLE = 2 ** (RESOLUTIONS - 1)  # H and W must be multiples of this
DEFAULT_MODEL = {"nr_resnet": 5, "nr_filters": 160, "nr_logistic_mix": 10, "nonlinearity": "concat_elu",
                 "h_channels": None, "dropout_p": 0.5, "polyak_decay": None}  # the CIFAR-10 settings
COUNT_KEYS = ("attn_rep",)  # further positive counts a network's config may hold (PixelSNAIL's)
OUTPUT_PER_MIXTURE = 10  # logit, and for each of 3 channels: mean, log scale, coefficient
MIXTURE_PARTS = ("means", "log_scales", "coeffs")  # per channel, each M wide, after the M logits


def output_channels(nr_logistic_mix: int, part: str, channel: int) -> slice:
    """The output channels holding ``part`` (one of ``MIXTURE_PARTS``) of image channel ``channel``:
    the output is ``M`` logits, then for R, G, B in turn ``M`` means, ``M`` log scales, ``M``
    coefficients (the original's reshape of ``l[..., M:]`` to ``[..., 3, 3 M]``)."""
    M = nr_logistic_mix
    start = M + channel * 3 * M + MIXTURE_PARTS.index(part) * M
    return slice(start, start + M)


FIRST_FILTERS = {"u_init": (2, 3), "ul_init_down": (1, 3), "ul_init_right": (2, 1)}

# -- the discretized logistic mixture (docs/model_spec.md "Discretized logistic mixture") ----------
LOG_SCALE_MIN = -7.0  # log scales are clamped from below here
EDGE = 0.999  # x below -EDGE uses the left tail (cdf), above +EDGE the right tail
HALF_BIN = 1.0 / 255.0  # half the width of one of 256 bins over [-1, 1]
CDF_DELTA_MIN = 1e-5  # below this, the bin's mass comes from the density at its centre
CDF_DELTA_FLOOR = 1e-12  # clamp inside the log of the bin's mass
LOG_BINS_HALF = math.log(127.5)  # log(255 / 2): the density times the bin width, in log space
SAMPLER_U_MIN = 1e-5  # the sampler's uniforms lie in [SAMPLER_U_MIN, 1 - SAMPLER_U_MIN)


@dataclass(frozen=True)
class PlanEntry:
    """One layer or block of the network, in call order.

    ``kind`` is a layer kind of ``LAYER_KINDS`` or ``"nin"``, or ``"gated_resnet"`` (then ``conv`` is
    its conv kind and ``a_channels`` the channel count of its ``a``, 0 for none).
    """

    path: str
    kind: str
    in_channels: int
    out_channels: int
    filter_size: tuple[int, int] | None = None
    stride: tuple[int, int] = (1, 1)
    conv: str | None = None
    a_channels: int = 0

    @property
    def keras_name(self) -> str:
        return self.path.replace(".", "_")


def normalize_model_config(config: dict, defaults: dict | None = None) -> dict:
    """The full model config (``defaults`` filled in: PixelCNN++'s unless given), checked; raises
    ``ValueError`` naming the field. Every key of ``defaults`` that counts something must be positive."""
    defaults = DEFAULT_MODEL if defaults is None else defaults
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"expected model config keys among {sorted(defaults)}; received also {unknown}")
    c = {**defaults, **config}
    for key in ("nr_resnet", "nr_filters", "nr_logistic_mix", *(k for k in COUNT_KEYS if k in defaults)):
        check_positive(key, c[key])
    check_choice("nonlinearity", c["nonlinearity"], list(NONLINEARITIES))
    if c["h_channels"] is not None:
        check_positive("h_channels", c["h_channels"])
    if isinstance(c["dropout_p"], bool) or not isinstance(c["dropout_p"], (int, float)) or not 0.0 <= c["dropout_p"] < 1.0:
        raise ValueError(f"Expected dropout_p in [0, 1). Received: dropout_p={c['dropout_p']!r}")
    c["dropout_p"] = float(c["dropout_p"])
    decay = c["polyak_decay"]
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0):
        raise ValueError(f"Expected polyak_decay in [0, 1) or None. Received: polyak_decay={decay!r}")
    return c


def pixelcnn_pp_plan(config: dict) -> list[PlanEntry]:
    """Every layer and block of PixelCNN++ in the original's call order (``pxpp_spec``)."""
    c = normalize_model_config(config)
    R, F_ = c["nr_resnet"], c["nr_filters"]
    inp = IMAGE_CHANNELS + 1  # x and the ones channel
    plan = [
        PlanEntry("u_init", "down_shifted_conv2d", inp, F_, FIRST_FILTERS["u_init"]),
        PlanEntry("ul_init_down", "down_shifted_conv2d", inp, F_, FIRST_FILTERS["ul_init_down"]),
        PlanEntry("ul_init_right", "down_right_shifted_conv2d", inp, F_, FIRST_FILTERS["ul_init_right"]),
    ]

    def pair(stream: str, k: int, a_u: int, a_ul: int) -> list[PlanEntry]:
        return [PlanEntry(f"{stream}_u.{k}", "gated_resnet", F_, F_, conv="down_shifted_conv2d", a_channels=a_u),
                PlanEntry(f"{stream}_ul.{k}", "gated_resnet", F_, F_, conv="down_right_shifted_conv2d", a_channels=a_ul)]

    k = 0
    for res in range(RESOLUTIONS):
        for _ in range(R):
            plan += pair("up", k, 0, F_)
            k += 1
        if res < RESOLUTIONS - 1:
            for stream, kind in (("u", "down_shifted_conv2d"), ("ul", "down_right_shifted_conv2d")):
                plan.append(PlanEntry(f"downsample_{stream}.{res}", kind, F_, F_, LAYER_KINDS[kind][1], (2, 2)))
    k = 0
    for res in range(RESOLUTIONS):
        for _ in range(R if res == 0 else R + 1):
            plan += pair("down", k, F_, 2 * F_)
            k += 1
        if res < RESOLUTIONS - 1:
            for stream, kind in (("u", "down_shifted_deconv2d"), ("ul", "down_right_shifted_deconv2d")):
                plan.append(PlanEntry(f"upsample_{stream}.{res}", kind, F_, F_, LAYER_KINDS[kind][1], (2, 2)))
    plan.append(PlanEntry("nin_out", "nin", F_, OUTPUT_PER_MIXTURE * c["nr_logistic_mix"]))
    return plan


def block_count(config: dict) -> int:
    """How many gated_resnet blocks the network has (one dropout mask each): ``6R`` up, ``6R + 4`` down."""
    return sum(e.kind == "gated_resnet" for e in pixelcnn_pp_plan(config))


def dropout_mask_shapes(config: dict, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """The NHWC shape of each block's dropout keep-mask (the shape of its ``c1``), in call order."""
    c = normalize_model_config(config)
    return plan_dropout_mask_shapes(pixelcnn_pp_plan(c), c["nonlinearity"], batch, height, width)


def plan_dropout_mask_shapes(plan: list[PlanEntry], nonlinearity: str, batch: int, height: int,
                             width: int) -> list[tuple[int, int, int, int]]:
    """Each block's keep-mask shape for a network's ``plan``: the resolution halves after each
    ``downsample_ul`` layer and doubles after each ``upsample_ul`` one."""
    mult = CHANNEL_MULTIPLIER[nonlinearity]
    shapes = []
    scale = 1
    for e in plan:
        if e.kind == "gated_resnet":
            shapes.append((batch, height // scale, width // scale, mult * e.in_channels))
        elif e.path.startswith("downsample_ul"):
            scale *= 2
        elif e.path.startswith("upsample_ul"):
            scale //= 2
    return shapes


def check_image_size(owner: str, height: int | None, width: int | None) -> None:
    """Raise unless H and W are positive multiples of 4 (two stride-2 levels)."""
    for name, size in (("H", height), ("W", width)):
        if size is not None and (size <= 0 or size % SPATIAL_MULTIPLE):
            raise ValueError(f"{owner}: expected {name} a positive multiple of {SPATIAL_MULTIPLE} (two stride-2 levels); "
                             f"received {name}={size}")


def raster(height: int, width: int, progress: bool = False) -> Iterator[tuple[int, int]]:
    """The sampler's steps ``(i, j)`` in raster order, with a progress bar on stderr when asked (tqdm
    where installed, else a bar redrawn once per row)."""
    steps = ((i, j) for i in range(height) for j in range(width))
    if not progress:
        return steps
    try:
        from tqdm import tqdm
    except ImportError:
        def rows() -> Iterator[tuple[int, int]]:
            for i, j in steps:
                if j == 0:
                    done = 30 * i // height
                    print(f"\rsampling [{'#' * done}{'.' * (30 - done)}] row {i + 1}/{height}", end="", file=sys.stderr,
                          flush=True)
                yield i, j
            print(f"\rsampling [{'#' * 30}] {height} rows", file=sys.stderr, flush=True)

        return rows()
    return iter(tqdm(steps, total=height * width, desc="sampling", unit="px"))
