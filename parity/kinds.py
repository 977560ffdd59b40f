"""The registry of what a weight file, a case or a backend can hold: one :class:`Kind` per thing.

A config names its kind under ``model`` (``{"model": "pixelcnn_pp", ...}``); a config without it is
one gated residual block. For each kind the registry holds its config validation, its weight table
(TF1 names, Keras paths, torch keys) and the class both twins build it from, so the formats, the
runner and the backends ask the kind instead of branching on it. Adding a network (the PixelSNAIL
family next): its config rules in :mod:`parity.configs`, its table in :mod:`parity.table`, its twin
classes, and one entry in :data:`KINDS`; a format that needs per-kind reading registers it by
``Kind.name`` in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from parity.configs import MODEL_KEY, model_args, normalize_config, normalize_pixelcnn_pp
from parity.table import WeightRow, model_weight_table, weight_table


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
    depth: str | None = None  # the config key each unit of which adds the same layers (the table grows linearly in it)
    channels: Callable[[Mapping[str, Any]], dict[str, tuple[str, int | None]]] | None = None  # input -> (config key, C)


def _block_channels(config: Mapping[str, Any]) -> dict[str, tuple[str, int | None]]:
    c = normalize_config(config)
    return {"x": ("num_filters", c["num_filters"]), "a": ("a_channels", c["a_channels"]), "h": ("h_channels", c["h_channels"])}


def _model_channels(config: Mapping[str, Any]) -> dict[str, tuple[str, int | None]]:
    from gated_spec.model import IMAGE_CHANNELS

    return {"x": ("image channels", IMAGE_CHANNELS), "h": ("h_channels", normalize_pixelcnn_pp(config)["h_channels"])}


KINDS: dict[str, Kind] = {
    "block": Kind("block", "block", "GatedResnet", ("x", "a", "h"), False, normalize_config, weight_table, normalize_config,
                  channels=_block_channels),
    "pixelcnn_pp": Kind("pixelcnn_pp", "model", "PixelCNNpp", ("x", "h"), True, normalize_pixelcnn_pp, model_weight_table,
                        model_args, depth="nr_resnet", channels=_model_channels),
}
MODELS = tuple(k for k, kind in KINDS.items() if kind.network)  # the values ``model`` takes


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
    one, two = (len(kind.table({**c, kind.depth: d}, shadows)) for d in (1, 2))
    return one + (c[kind.depth] - 1) * (two - one)


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
                         + (f" ({kind.depth}={normalize(config)[kind.depth]})" if kind.depth else "")
                         + f"; the file holds {held}")


def with_kind(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A network's config as the registry reads it: ``config`` (the twin's arguments, e.g. ``PixelCNNpp.config``)
    with its ``model`` key."""
    return {MODEL_KEY: kind, **model_args(config)} if KINDS[kind].network else dict(config)


def kind_of_net(net: object) -> Kind:
    """The kind of a twin's block or network: the first class in its MRO named as a kind's twin class
    (``GatedResnet``, ``PixelCNNpp``), so subclasses count as what they extend."""
    by_class = {kind.twin_class: kind for kind in KINDS.values()}
    for cls in type(net).__mro__:
        if cls.__name__ in by_class:
            return by_class[cls.__name__]
    raise ValueError(f"expected a twin's {' or '.join(by_class)}; received a {type(net).__name__}")
