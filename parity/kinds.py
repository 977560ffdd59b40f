"""The registry of what a weight file, a case or a backend can hold: one :class:`Kind` per thing.

A config names its kind under ``model`` (``{"model": "pixelcnn_pp", ...}``); a config without it is
one gated residual block. For each kind the registry holds its config validation, its weight table
(TF1 names, Keras paths, torch keys) and the class both twins build it from, so the formats, the
runner and the backends ask the kind instead of branching on it. The networks: PixelCNN++
(``pixelcnn_pp``) and the four PixelSNAIL specs (``h12_noup_smallkey``, ``h8_noup_smallkey``,
``h12_pool2_smallkey``, ``model_spec``: one twin class, the spec its argument and the net's ``spec``
attribute). Adding a network: its config rules in :mod:`parity.configs`, its table in
:mod:`parity.table`, its twin classes, and one entry in :data:`KINDS`; a format that needs per-kind
reading registers it in its own module.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from gated_spec.pixelsnail import SPECS as PIXELSNAIL_SPECS
from parity.configs import MODEL_KEY, model_args, normalize_config, normalize_pixelcnn_pp, normalize_pixelsnail, pixelsnail_args
from parity.table import WeightRow, model_weight_table, pixelsnail_weight_table, weight_table


@dataclass(frozen=True)
class Kind:
    """One kind of thing a weight file holds.

    ``what`` is how messages name it (``"block"``, ``"model"``); ``twin_class`` the class of that name
    in ``tf_impl`` and ``torch_impl``, built with ``args(config)``; ``inputs`` the NHWC arrays its
    forward takes, in order; ``network`` whether it is a whole network (with a loss and a sampler)."""

    name: str
    what: str
    twin_class: str
    inputs: tuple[str, ...]
    network: bool
    normalize: Callable[[Mapping[str, Any]], dict[str, Any]]
    table: Callable[..., list[WeightRow]]  # (config, shadows=None) -> rows, shadows after the raw weights
    args: Callable[[Mapping[str, Any]], dict[str, Any]]  # config -> the twin class's keyword arguments
    depth: str | tuple[str, ...] | None = None  # config keys each unit of which adds the same layers (the table is multilinear in them)
    channels: Callable[[Mapping[str, Any]], dict[str, tuple[str, int | None]]] | None = None  # input -> (config key, C)
    plan: Callable[[Mapping[str, Any]], list] | None = None  # a network's config -> its layers in call order


def _block_channels(config: Mapping[str, Any]) -> dict[str, tuple[str, int | None]]:
    c = normalize_config(config)
    return {"x": ("num_filters", c["num_filters"]), "a": ("a_channels", c["a_channels"]), "h": ("h_channels", c["h_channels"])}


def _model_channels(config: Mapping[str, Any]) -> dict[str, tuple[str, int | None]]:
    from gated_spec.model import IMAGE_CHANNELS

    return {"x": ("image channels", IMAGE_CHANNELS), "h": ("h_channels", normalize(config)["h_channels"])}


def _pixelcnn_pp_plan(config: Mapping[str, Any]) -> list:
    from gated_spec.model import normalize_model_config, pixelcnn_pp_plan

    return pixelcnn_pp_plan(normalize_model_config(model_args(config)))


def _pixelsnail_plan(config: Mapping[str, Any]) -> list:
    from gated_spec.pixelsnail import pixelsnail_plan

    return pixelsnail_plan(config[MODEL_KEY], model_args(config))


KINDS: dict[str, Kind] = {
    "block": Kind("block", "block", "GatedResnet", ("x", "a", "h"), False, normalize_config, weight_table, normalize_config,
                  channels=_block_channels),
    "pixelcnn_pp": Kind("pixelcnn_pp", "model", "PixelCNNpp", ("x", "h"), True, normalize_pixelcnn_pp, model_weight_table,
                        model_args, depth="nr_resnet", channels=_model_channels, plan=_pixelcnn_pp_plan),
    # the PixelSNAIL specs (train.py's --model names; "model_spec" is its "model"): one class, the spec an argument
    **{spec: Kind(spec, "model", "PixelSNAIL", ("x", "h"), True, normalize_pixelsnail, pixelsnail_weight_table, pixelsnail_args,
                  depth=("nr_resnet", "attn_rep"), channels=_model_channels, plan=_pixelsnail_plan)
       for spec in PIXELSNAIL_SPECS},
}
MODELS = tuple(k for k, kind in KINDS.items() if kind.network)  # the values ``model`` takes
# ``--model`` also takes the original train.py's names: pxpp (PixelCNN++), model (model_spec), and pixelsnail
# for the released h12_noup_smallkey
MODEL_ALIASES = {"pxpp": "pixelcnn_pp", "model": "model_spec", "pixelsnail": "h12_noup_smallkey"}
MODEL_NAMES = (*MODELS, *MODEL_ALIASES)


def model_name(name: str) -> str:
    """The kind a ``--model`` value names (an alias resolved); ``ValueError`` for any other value."""
    if name in MODELS:
        return name
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    raise ValueError(f"expected --model one of {list(MODEL_NAMES)}; received {name!r}")


def kind_of(config: Mapping[str, Any]) -> Kind:
    """The kind a config describes: by its ``model`` key, a block without one."""
    if MODEL_KEY not in config:
        return KINDS["block"]
    name = config[MODEL_KEY]
    if name not in MODELS:
        raise ValueError(f"expected model one of {list(MODELS)}; received model={name!r}")
    return KINDS[name]


def normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config of its kind with every key, defaults filled in, checked (a model keeps its ``model`` key)."""
    return kind_of(config).normalize(config)


def table_for(config: Mapping[str, Any], shadows: bool | None = None) -> list[WeightRow]:
    """The weight table of the config's kind."""
    return kind_of(config).table(config, shadows)


def dropout_mask_shapes(config: Mapping[str, Any], batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """A network's dropout keep-mask shapes (NHWC, one per block in call order), from its kind's plan."""
    from gated_spec.model import plan_dropout_mask_shapes

    kind = kind_of(config)
    c = kind.normalize(config)
    return plan_dropout_mask_shapes(kind.plan(c), c["nonlinearity"], batch, height, width)


def check_input_shapes(config: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """NHWC arrays from files against the kind's inputs (``x`` and ``a`` [B, H, W, C], ``h`` [B, K]),
    before either backend sees them: the messages name the files' layout whatever the backend (torch
    named its internal NCHW, Keras wrapped the message in a call report)."""
    from gated_spec.checks import check_channels, check_given, check_rank, check_same_dims

    kind = kind_of(config)
    owner, x = kind.twin_class, inputs["x"]
    check_rank(owner, "x", x, "NHWC")
    for name, (key, channels) in (kind.channels(config) if kind.channels else {}).items():
        value = inputs.get(name)
        if name != "x":
            check_given(owner, name, value, key, channels)
        if value is None:
            continue
        rank = 2 if name == "h" else 4
        check_rank(owner, name, value, "NHWC", rank)
        if name != "x":
            check_same_dims(owner, name, value, x, (0,) if rank == 2 else (0, 1, 2), "x", ("B",) if rank == 2 else ("B", "H", "W"))
        check_channels(owner, name, value, channels, -1 if rank == 4 else 1, "NHWC")


def table_rows(config: Mapping[str, Any], shadows: bool | None = None) -> int:
    """How many rows ``table_for(config, shadows)`` has, without building it: a network's table at
    depth 1 and 2 (``Kind.depth``, e.g. ``nr_resnet``), extrapolated (each unit adds the same blocks),
    so a config that declares a huge network costs nothing to size."""
    kind = kind_of(config)
    if kind.depth is None:
        return len(kind.table(config, shadows))
    c = kind.normalize(config)
    keys = (kind.depth,) if isinstance(kind.depth, str) else kind.depth
    # multilinear in the depth keys (PixelSNAIL: R blocks in each of attn_rep groups): interpolate the
    # tables at every corner of {1, 2}^keys; with one key, one + (n - 1) (two - one)
    total = 0
    for corner in itertools.product((1, 2), repeat=len(keys)):
        weight = 1
        for key, d in zip(keys, corner):
            weight *= (2 - c[key]) if d == 1 else (c[key] - 1)
        if weight:
            total += weight * len(kind.table({**c, **dict(zip(keys, corner))}, shadows))
    return total


def check_declared(config: Mapping[str, Any], held: int, where: str, shadows: bool | None = None) -> None:
    """Before a table is built from a config a file declares (its metadata, or shapes counted in it):
    a kind that grows with its config (``Kind.depth``) must not declare more than twice the tensors
    the file lists (``held``, from its header), so ``nr_resnet: 1000000`` in a small file is one line,
    not gigabytes of table and a line per missing tensor. Within that, the table check names each
    missing or extra tensor (a block's table has a fixed size: always left to it)."""
    kind = kind_of(config)
    if kind.depth is None:
        return
    rows = table_rows(config, shadows)
    if rows > 2 * held:
        raise ValueError(f"{where}: its config declares a {kind.what} of {rows} tensors"
                         + " (" + ", ".join(f"{k}={normalize(config)[k]}" for k in
                                            ((kind.depth,) if isinstance(kind.depth, str) else kind.depth)) + ")"
                         + f"; the file holds {held}")


def with_kind(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A network's config as the registry reads it: ``config`` (the twin's arguments, e.g. ``PixelCNNpp.config``)
    with its ``model`` key."""
    return {MODEL_KEY: kind, **model_args(config)} if KINDS[kind].network else dict(config)


def kind_of_net(net: object) -> Kind:
    """The kind of a twin's block or network: the first class in its MRO named as a kind's twin class
    (``GatedResnet``, ``PixelCNNpp``), so subclasses count as what they extend."""
    spec = getattr(net, "spec", None)  # a PixelSNAIL names its kind
    if isinstance(spec, str) and spec in KINDS:
        return KINDS[spec]
    by_class = {kind.twin_class: kind for kind in KINDS.values()}
    for cls in type(net).__mro__:
        if cls.__name__ in by_class:
            return by_class[cls.__name__]
    raise ValueError(f"expected a twin's {' or '.join(by_class)}; received a {type(net).__name__}")
