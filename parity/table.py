"""The table that maps every tensor of a block or a network: TF1 name, Keras path, torch key, layout.

One row per tensor (:class:`WeightRow`). Canonical files name tensors by their original TF1 names
(``conv2d_0/V``, ``dense_0/g``, ``conditional_weights_0/hw``; shadows as
``<name>/ExponentialMovingAverage``) in the original TF layout:

=====================  ======================  ======================  ==============
tensor                 TF (canonical, Keras)   torch                   permutation
=====================  ======================  ======================  ==============
conv ``V``             ``[kh, kw, in, out]``   ``(out, in, kh, kw)``   ``(3, 2, 0, 1)``
dense / nin ``V``      ``[in, out]``           ``(out, in)``           ``(1, 0)``
``g``, ``b``, ``hw``   as is                   as is                   none
=====================  ======================  ======================  ==============

The permutation itself is ``gated_spec``'s (``v_to_torch``, ``v_from_torch``). Original names come from
:class:`TF1Namer`, which walks layers in the original's call order with one counter per layer kind
(docs/spec.md "Names in an original checkpoint"), so a whole network reuses the block's table.
Which table a config gets is :mod:`parity.kinds`' business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from gated_spec import CHANNEL_MULTIPLIER, CONV_PERM, DENSE_PERM, LAYER_KINDS, SHADOW_SUFFIX, v_from_torch, v_tf_shape, v_to_torch
from gated_spec import TF1_SHADOW_SUFFIX as EMA_SUFFIX
from parity.configs import DEFAULT_FILTER, MODEL_KEY, model_args, normalize_config
from parity.errors import WeightError

__all__ = ["EMA_SUFFIX", "TF1Namer", "WeightError", "WeightRow", "block_layers", "cast_problems", "check_tensors", "dtype_of",
           "model_weight_table", "pixelsnail_weight_table", "plan_weight_table", "tensor_summary", "tf_layout_shape", "weight_table"]


class TF1Namer:
    """Names layers as the original does: ``<kind>_<k>`` with one counter per kind across the model.

    ``conv2d`` also names the shifted convs, ``dense`` also names ``nin``, ``deconv2d`` the transposed
    convs and ``conditional_weights`` holds ``hw``. Call :meth:`next` in the original's call order.
    """

    KIND_OF = {
        "conv2d": "conv2d",
        "down_shifted_conv2d": "conv2d",
        "down_right_shifted_conv2d": "conv2d",
        "nin": "dense",
        "dense": "dense",
        "deconv2d": "deconv2d",
        "down_shifted_deconv2d": "deconv2d",
        "down_right_shifted_deconv2d": "deconv2d",
        "conditional_weights": "conditional_weights",
    }

    def __init__(self, counters: Mapping[str, int] | None = None, named: bool = False) -> None:
        self.counters: dict[str, int] = dict(counters or {})
        # Whether the counters were named by a user (``--counters``): then a kind left out is not
        # taken as 0 where the checkpoint holds more layers of it than the block uses.
        self.named = named

    def next(self, layer_kind: str) -> str:
        kind = self.KIND_OF[layer_kind]
        k = self.counters.get(kind, 0)
        self.counters[kind] = k + 1
        return f"{kind}_{k}"


@dataclass(frozen=True)
class WeightRow:
    """One tensor: its original name, Keras path and torch key, TF shape and TF -> torch permutation
    (``None`` for tensors torch keeps as they are)."""

    tf1_name: str
    keras_path: str
    torch_key: str
    shape: tuple[int, ...]
    torch_perm: tuple[int, ...] | None

    @property
    def torch_shape(self) -> tuple[int, ...]:
        return self.shape if self.torch_perm is None else tuple(self.shape[i] for i in self.torch_perm)

    def to_torch_layout(self, value: np.ndarray) -> np.ndarray:
        return value if self.torch_perm is None else v_to_torch(value)

    def from_torch_layout(self, value: np.ndarray) -> np.ndarray:
        return value if self.torch_perm is None else v_from_torch(value)


def block_layers(config: Mapping[str, Any], namer: TF1Namer | None = None) -> list[tuple[str, str, tuple[int, ...], int, int]]:
    """(attribute, TF1 name, filter size or (), in, out) for each weight-normalised layer, in call order."""
    c = normalize_config(config)
    namer = namer or TF1Namer()
    mult = CHANNEL_MULTIPLIER[c["nonlinearity"]]
    F_ = c["num_filters"]
    filt = DEFAULT_FILTER.get(c["conv"], ())
    layers = [("conv_input", namer.next(c["conv"]), filt, mult * F_, F_)]
    if c["a_channels"]:
        layers.append(("nin_skip", namer.next("nin"), (), mult * c["a_channels"], F_))
    layers.append(("conv_output", namer.next(c["conv"]), filt, mult * F_, 2 * F_))
    return layers


def weight_table(
    config: Mapping[str, Any], shadows: bool | None = None, namer: TF1Namer | None = None
) -> list[WeightRow]:
    """Every tensor of a ``GatedResnet`` with this config, one row each (shadows after the raw weights).

    ``shadows`` defaults to whether the config has a ``polyak_decay``.
    """
    c = normalize_config(config)
    namer = namer or TF1Namer()
    raw: list[WeightRow] = []
    for attr, name, filt, cin, cout in block_layers(c, namer):
        if filt:
            v_shape, perm = (*filt, cin, cout), CONV_PERM
        else:
            v_shape, perm = (cin, cout), DENSE_PERM
        raw += _wn_rows(name, attr, attr, v_shape, perm, cout)
    if c["h_channels"]:
        name = namer.next("conditional_weights")
        raw.append(WeightRow(f"{name}/hw", "hw", "hw", (c["h_channels"], 2 * c["num_filters"]), None))
    return _with_shadows(raw, c["polyak_decay"] is not None if shadows is None else shadows)


def _wn_rows(tf1: str, keras: str, torch: str, v_shape: tuple[int, ...], perm: tuple[int, ...], cout: int) -> list[WeightRow]:
    """A weight-normalised layer's V, g and b: ``<tf1>/V``, ``<keras>/V``, ``<torch>.V``, ..."""
    return [WeightRow(f"{tf1}/{leaf}", f"{keras}/{leaf}", f"{torch}.{leaf}", shape, p)
            for leaf, shape, p in (("V", v_shape, perm), ("g", (cout,), None), ("b", (cout,), None))]


def _with_shadows(raw: list[WeightRow], shadows: bool) -> list[WeightRow]:
    """The raw rows, then (with ``shadows``) one shadow row per raw row, in the same order."""
    if not shadows:
        return raw
    return raw + [
        WeightRow(r.tf1_name + EMA_SUFFIX, r.keras_path + SHADOW_SUFFIX, r.torch_key + SHADOW_SUFFIX, r.shape, r.torch_perm) for r in raw
    ]


def model_weight_table(config: Mapping[str, Any], shadows: bool | None = None) -> list[WeightRow]:
    """Every tensor of a ``PixelCNNpp`` (``gated_spec.model``), in call order, shadows after the raw
    weights; TF1 names relative to the ``model`` scope with the model-wide counters (``conv2d_17/V``,
    ``deconv2d_1/g``, ``dense_40/b``, ``conditional_weights_11/hw``), Keras paths ``<layer>/<var>``
    (``up_u_3/conv_input/V``), torch keys ``<path>.<var>`` (``up_u.3.conv_input.V``)."""
    from gated_spec.model import normalize_model_config, pixelcnn_pp_plan

    c = normalize_model_config(model_args(config))
    return plan_weight_table(pixelcnn_pp_plan(c), c, shadows)


def pixelsnail_weight_table(config: Mapping[str, Any], shadows: bool | None = None) -> list[WeightRow]:
    """Every tensor of a ``PixelSNAIL`` whose spec is the config's ``model`` (``gated_spec.pixelsnail``),
    named as :func:`model_weight_table` names PixelCNN++'s (``key_block_0/conv_input/V``,
    ``key_block.0.conv_input.V``; the attention's nins and blocks are ``dense_<k>`` in TF1)."""
    from gated_spec.pixelsnail import normalize_pixelsnail_config, pixelsnail_plan

    spec = config[MODEL_KEY]
    c = normalize_pixelsnail_config(spec, model_args(config))
    return plan_weight_table(pixelsnail_plan(spec, c), c, shadows)


def plan_weight_table(plan: list, c: Mapping[str, Any], shadows: bool | None = None) -> list[WeightRow]:
    """The rows of a network's ``plan`` (``gated_spec.model.PlanEntry`` in call order) with config ``c``:
    one :class:`TF1Namer` walks it, so every name carries the model-wide counter the original gives it."""
    namer = TF1Namer()
    raw: list[WeightRow] = []
    for e in plan:
        if e.kind == "gated_resnet":
            block = {"num_filters": e.in_channels, "a_channels": e.a_channels or None, "h_channels": c["h_channels"],
                     "conv": e.conv, "nonlinearity": c["nonlinearity"]}
            raw += [WeightRow(r.tf1_name, f"{e.keras_name}/{r.keras_path}", f"{e.path}.{r.torch_key}", r.shape, r.torch_perm)
                    for r in weight_table(block, shadows=False, namer=namer)]
            continue
        name = namer.next(e.kind)
        if e.kind == "nin":
            v_shape: tuple[int, ...] = (e.in_channels, e.out_channels)
            perm = DENSE_PERM
        elif LAYER_KINDS[e.kind][2]:  # transposed: [kh, kw, out, in]
            v_shape, perm = (*e.filter_size, e.out_channels, e.in_channels), CONV_PERM
        else:
            v_shape, perm = (*e.filter_size, e.in_channels, e.out_channels), CONV_PERM
        raw += _wn_rows(name, e.keras_name, e.path, v_shape, perm, e.out_channels)
    return _with_shadows(raw, c["polyak_decay"] is not None if shadows is None else shadows)


def tf_layout_shape(torch_key: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """A torch ``state_dict`` entry's (Keras path, TF-layout shape): ``V`` by the inverse of the table's
    permutation (``gated_spec.v_tf_shape``); ``hw`` and vectors keep their shape."""
    path = torch_key.replace(".", "/")
    if torch_key.split(".")[-1].startswith("V"):
        shape = v_tf_shape(tuple(shape))
    return path, tuple(shape)


def check_tensors(
    table: Iterable[WeightRow], tensors: Mapping[str, np.ndarray], key: str = "tf1_name", layout: str = "tf",
    where: str = "weights", allow_missing_shadows: bool = False, target_dtype: str | None = None,
    values: bool = True, what: str = "block",
) -> None:
    """Raise one :class:`WeightError` listing every missing, unexpected, mis-shaped or non-float tensor,
    and, with ``target_dtype``, every value that the cast to it would change beyond rounding.
    ``values=False`` checks names, shapes and dtypes only (a header's placeholders hold no values,
    and a pass over one declared huge would allocate what the header check exists to avoid)."""
    table = list(table)
    expected = {getattr(r, key): r for r in table}
    problems = []
    missing = [k for k in expected if k not in tensors]
    if allow_missing_shadows:
        missing = [k for k in missing if not (k.endswith(EMA_SUFFIX) or k.endswith(SHADOW_SUFFIX))]
    problems += [f"missing tensor {k!r} (expected shape {expected[k].shape if layout == 'tf' else expected[k].torch_shape})" for k in missing]
    problems += [f"unexpected tensor {k!r} with shape {tuple(np.shape(v))}" for k, v in tensors.items() if k not in expected]
    dtypes = set()
    for k, v in tensors.items():
        if k not in expected:
            continue
        row = expected[k]
        want = row.shape if layout == "tf" else row.torch_shape
        if tuple(np.shape(v)) != tuple(want):
            problems.append(f"tensor {k!r} has shape {tuple(np.shape(v))}; expected {tuple(want)} ({layout} layout)")
        dt = np.asarray(v).dtype
        if dt not in (np.float32, np.float64):
            problems.append(f"tensor {k!r} has dtype {dt}; expected float32 or float64")
        else:
            dtypes.add(dt.name)
            if not values:
                continue
            if not np.all(np.isfinite(v)):
                problems.append(f"tensor {k!r} holds NaN or Inf values")
            elif target_dtype is not None:
                problems += cast_problems(k, np.asarray(v), target_dtype)
    if len(dtypes) > 1:
        problems.append(f"tensors mix dtypes {sorted(dtypes)}; expected one")
    if problems:
        raise WeightError(problems, where, what)


def dtype_of(tensors: Mapping[str, Any]) -> str:
    """The dtype name of a set of tensors (the first one's; :func:`check_tensors` makes them agree)."""
    return np.asarray(next(iter(tensors.values()))).dtype.name


def tensor_summary(tensors: Mapping[str, Any]) -> str:
    """``"<n> weights, <m> shadows"`` for canonical tensors."""
    n_shadow = sum(k.endswith(EMA_SUFFIX) for k in tensors)
    return f"{len(tensors) - n_shadow} weights, {n_shadow} shadows"


def cast_problems(name: str, value: np.ndarray, dtype: str) -> list[str]:
    """Values that the cast to ``dtype`` would change beyond rounding: beyond its range (they would
    load as Inf) or nonzero below its smallest normal number (subnormal or 0 after the cast)."""
    target = np.dtype(dtype)
    if value.dtype.itemsize <= target.itemsize:
        return []
    info = np.finfo(target)
    magnitude = np.abs(value)
    problems = []
    if np.any(magnitude > info.max):
        problems.append(f"tensor {name!r} holds values beyond {target.name}'s range (|v| up to {magnitude.max():.3e}); "
                        f"they would load as Inf")
    if np.any((magnitude < info.tiny) & (magnitude > 0)):
        problems.append(f"tensor {name!r} holds nonzero values below {target.name}'s smallest normal number "
                        f"({info.tiny:.3e}); they would load as subnormals or 0")
    return problems
