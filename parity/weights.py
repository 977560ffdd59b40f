"""One weight file for both backends, and the table that maps every tensor.

The canonical file is safetensors. Keys are the original TF1 names relative to the block
(``conv2d_0/V``, ``dense_0/g``, ``conditional_weights_0/hw``), shadows as
``<name>/ExponentialMovingAverage``; values are in the original TF layout; the metadata holds the
block config (JSON) and the initialised flag. Reading it never unpickles.

The map is a table, one row per tensor (:func:`weight_table`): TF1 name, Keras path, torch
``state_dict`` key, and the permutation that takes the TF layout to torch's:

=====================  ======================  ======================  ==============
tensor                 TF (canonical, Keras)   torch                   permutation
=====================  ======================  ======================  ==============
conv ``V``             ``[kh, kw, in, out]``   ``(out, in, kh, kw)``   ``(3, 2, 0, 1)``
dense / nin ``V``      ``[in, out]``           ``(out, in)``           ``(1, 0)``
``g``, ``b``, ``hw``   as is                   as is                   none
=====================  ======================  ======================  ==============

Original names come from :class:`TF1Namer`, which walks layers in the original's call order with
one counter per layer kind (docs/spec.md "Names in an original checkpoint"), so a whole-model port can reuse it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from gated_spec import CHANNEL_MULTIPLIER, CONV_KINDS as _CONV_FILTERS, CONV_PERM, DEFAULT_POLYAK_DECAY, DENSE_PERM, LAYER_KINDS, NONLINEARITIES, SHADOW_SUFFIX, TORCH_PERM
from gated_spec import TF1_SHADOW_SUFFIX as EMA_SUFFIX
from gated_spec.checks import check_positive
from parity.atomic import atomic_path

FORMAT = "gated-resnet-parity/1"
CONV_KINDS = tuple(_CONV_FILTERS)
DEFAULT_FILTER = {kind: f for kind, f in _CONV_FILTERS.items() if f is not None}
CONFIG_KEYS = ("num_filters", "a_channels", "h_channels", "conv", "nonlinearity", "dropout_p", "polyak_decay")


class WeightError(ValueError):
    """A weight file or mapping that does not fit the block (or the model, ``what``); lists every
    problem at once."""

    def __init__(self, problems: list[str], where: str = "weights", what: str = "block") -> None:
        self.problems = problems
        super().__init__(f"{where} do not fit the {what} ({len(problems)} problem(s)):\n  - " + "\n  - ".join(problems))


def normalize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The block config with every key, defaults filled in, unknown keys refused."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"Expected block config keys {list(CONFIG_KEYS)}. Received unknown keys: {unknown}")
    if "num_filters" not in config:
        raise ValueError("Expected block config to contain num_filters. Received: no num_filters")
    out = {"a_channels": None, "h_channels": None, "conv": "conv2d", "nonlinearity": "concat_elu", "dropout_p": 0.0, "polyak_decay": None}
    out.update(config)
    if out["conv"] not in CONV_KINDS:
        raise ValueError(f"Expected conv to be one of {list(CONV_KINDS)}. Received: conv={out['conv']!r}")
    if out["nonlinearity"] not in NONLINEARITIES:
        raise ValueError(
            f"Expected nonlinearity to be one of {list(NONLINEARITIES)}. Received: nonlinearity={out['nonlinearity']!r}"
        )
    check_positive("num_filters", out["num_filters"])
    for key in ("a_channels", "h_channels"):
        if out[key] is not None:
            check_positive(key, out[key])
    _check_fraction("dropout_p", out["dropout_p"], upper_open=True)
    if out["polyak_decay"] is not None:
        _check_fraction("polyak_decay", out["polyak_decay"], upper_open=False)
    return {k: out[k] for k in CONFIG_KEYS}


def _check_fraction(name: str, value: Any, upper_open: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value and (
        value < 1.0 if upper_open else value <= 1.0)
    if not ok:
        raise ValueError(f"Expected {name} to be a number in [0, 1{')' if upper_open else ']'}. Received: {name}={value!r}")


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
    """One tensor: its original name, Keras path and torch key, TF shape and TF -> torch permutation."""

    tf1_name: str
    keras_path: str
    torch_key: str
    shape: tuple[int, ...]
    torch_perm: tuple[int, ...] | None

    @property
    def torch_shape(self) -> tuple[int, ...]:
        return self.shape if self.torch_perm is None else tuple(self.shape[i] for i in self.torch_perm)

    def to_torch_layout(self, value: np.ndarray) -> np.ndarray:
        return value if self.torch_perm is None else np.ascontiguousarray(np.transpose(value, self.torch_perm))

    def from_torch_layout(self, value: np.ndarray) -> np.ndarray:
        return value if self.torch_perm is None else np.ascontiguousarray(np.transpose(value, np.argsort(self.torch_perm)))


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


MODEL_KEY = "model"  # a config with {"model": "pixelcnn_pp", ...} describes a whole network
MODELS = ("pixelcnn_pp",)


def is_model(config: Mapping[str, Any]) -> bool:
    return MODEL_KEY in config


def model_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model config without its ``model`` key: the keyword arguments of ``PixelCNNpp`` and
    ``gated_spec.model``."""
    return {k: v for k, v in config.items() if k != MODEL_KEY}


def kind_of(config: Mapping[str, Any]) -> str:
    """``"model"`` or ``"block"``: what a config describes, as error messages name it."""
    return "model" if is_model(config) else "block"


def normalize_any(config: Mapping[str, Any]) -> dict[str, Any]:
    """A block config (:func:`normalize_config`) or a model config (``gated_spec.model``), by its ``model`` key."""
    if not is_model(config):
        return normalize_config(config)
    from gated_spec.model import normalize_model_config

    kind = config[MODEL_KEY]
    if kind not in MODELS:
        raise ValueError(f"expected model one of {list(MODELS)}; received model={kind!r}")
    return {MODEL_KEY: kind, **normalize_model_config(model_args(config))}


def table_for(config: Mapping[str, Any], shadows: bool | None = None) -> list[WeightRow]:
    """The weight table of a block or of a model config."""
    return model_weight_table(config, shadows) if is_model(config) else weight_table(config, shadows)


def infer_model_config(shapes: Mapping[str, tuple[int, ...]], overrides: Mapping[str, Any] | None = None,
                       polyak_decay: float | None = None) -> dict[str, Any]:
    """A PixelCNN++ config from TF1-named shapes (model scope): ``F`` from ``conv2d_0/V``, ``R`` from
    the number of convs (``24 R + 15``), ``M`` from the output nin, ``h_channels`` from
    ``conditional_weights_0/hw``, ``concat_elu`` from the first block's input (elu vs relu: ``overrides``)."""
    from gated_spec.model import OUTPUT_PER_MIXTURE

    if "conv2d_0/V" not in shapes:
        raise WeightError(["missing tensor 'conv2d_0/V' (the network's first conv; cannot infer the model config)"], "tensors", "model")
    F_ = shapes["conv2d_0/V"][-1]
    n_conv = len({k.split("/")[0] for k in shapes if k.startswith("conv2d_") and k.endswith("/V")})
    R, left = divmod(n_conv - 15, 24)
    if left or R < 1:
        raise WeightError([f"{n_conv} conv2d layers; a PixelCNN++ has 24 R + 15 (135 for R = 5)"], "tensors", "model")
    n_dense = len({k.split("/")[0] for k in shapes if k.startswith("dense_") and k.endswith("/V")})
    last = shapes.get(f"dense_{n_dense - 1}/V")
    if last is None or last[-1] % OUTPUT_PER_MIXTURE:
        raise WeightError([f"the output nin dense_{n_dense - 1}/V has shape {last}; expected [F, 10 M]"], "tensors", "model")
    first = shapes.get("conv2d_3/V")  # the first block's first conv: 2 F inputs after concat_elu
    hw = shapes.get("conditional_weights_0/hw")
    return model_config_from_shapes(R, F_, last[-1] // OUTPUT_PER_MIXTURE, None if first is None else first[2],
                                    None if hw is None else hw[0], any(k.endswith(EMA_SUFFIX) for k in shapes),
                                    overrides, polyak_decay)


def model_config_from_shapes(nr_resnet: int, nr_filters: int, nr_logistic_mix: int, block_input_channels: int | None,
                             h_channels: int | None, has_shadows: bool, overrides: Mapping[str, Any] | None = None,
                             polyak_decay: float | None = None) -> dict[str, Any]:
    """A PixelCNN++ config from what a file's shapes say (``block_input_channels``: the first block's
    first conv's inputs, 2 F for concat_elu; elu and relu keep F and need ``overrides``), checked
    against the options given. The same rules for every format that does not store the config."""
    over = {k: v for k, v in dict(overrides or {}).items() if v is not None and k != MODEL_KEY}
    nl = over.get("nonlinearity")
    if nl is None:
        if block_input_channels != 2 * nr_filters:
            raise ValueError("cannot tell elu from relu by the shapes; pass --nonlinearity")
        nl = "concat_elu"
    decay = polyak_decay if polyak_decay is not None else (DEFAULT_POLYAK_DECAY if has_shadows else None)
    inferred = {"nr_resnet": nr_resnet, "nr_filters": nr_filters, "nr_logistic_mix": nr_logistic_mix, "nonlinearity": nl,
                "h_channels": h_channels, "polyak_decay": decay}
    differ = [k for k in ("nr_resnet", "nr_filters", "nr_logistic_mix") if k in over and over[k] != inferred[k]]
    if differ:
        raise ValueError("the shapes say " + ", ".join(f"{k}={inferred[k]}" for k in differ) + "; the options say "
                         + ", ".join(f"{k}={over[k]}" for k in differ))
    return normalize_any({MODEL_KEY: "pixelcnn_pp", **inferred, "dropout_p": 0.0, **{k: v for k, v in over.items() if k == "dropout_p"}})


def model_weight_table(config: Mapping[str, Any], shadows: bool | None = None) -> list[WeightRow]:
    """Every tensor of a ``PixelCNNpp`` (``gated_spec.model``), in call order, shadows after the raw
    weights; TF1 names relative to the ``model`` scope with the model-wide counters (``conv2d_17/V``,
    ``deconv2d_1/g``, ``dense_40/b``, ``conditional_weights_11/hw``), Keras paths ``<layer>/<var>``
    (``up_u_3/conv_input/V``), torch keys ``<path>.<var>`` (``up_u.3.conv_input.V``)."""
    from gated_spec.model import normalize_model_config, pixelcnn_pp_plan

    c = normalize_model_config(model_args(config))
    namer = TF1Namer()
    raw: list[WeightRow] = []
    for e in pixelcnn_pp_plan(c):
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


def infer_config(shapes: Mapping[str, tuple[int, ...]], overrides: Mapping[str, Any] | None = None,
                 polyak_decay: float | None = None, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A block config from tensor shapes in the TF layout, keyed by the weight table's Keras paths
    (``conv_input/V``, ``nin_skip/V``, ``hw``; a key ending in ``_ema`` says the file has shadows).

    The conv kind follows from the filter size (3x3 conv2d, 2x3 down-shifted, 2x2 down-right-shifted,
    2-D nin); ``concat_elu`` from an input twice the filters; ``elu`` vs ``relu`` cannot be told and
    needs ``nonlinearity`` in ``overrides``. ``names`` gives the file's own name of a path, for messages.
    """
    overrides = dict(overrides or {})
    first = (names or {}).get("conv_input/V", "conv_input/V")
    if "conv_input/V" not in shapes:
        raise WeightError([f"missing tensor {first!r} (cannot infer the block config)"], "tensors")
    v = tuple(shapes["conv_input/V"])
    if len(v) not in (2, 4):
        raise WeightError([f"tensor {first!r} has shape {v}; expected a 2-D (nin) or 4-D (conv) V"], "tensors")
    cin, F_ = v[-2], v[-1]
    conv = overrides.get("conv")
    if conv is None:
        by_filter = {f: k for k, f in DEFAULT_FILTER.items()}
        conv = "nin" if len(v) == 2 else by_filter.get(tuple(v[:2]))
        if conv is None:
            raise ValueError(f"cannot tell the conv kind of filter {tuple(v[:2])}; pass --conv")
    nl = overrides.get("nonlinearity")
    if nl is None:
        if cin == 2 * F_:
            nl = "concat_elu"
        else:
            raise ValueError("cannot tell elu from relu by the shapes; pass --nonlinearity")
    mult = CHANNEL_MULTIPLIER[nl]
    a = shapes["nin_skip/V"][0] // mult if "nin_skip/V" in shapes else None
    h = shapes["hw"][0] if "hw" in shapes else None
    has_shadows = any(k.endswith(SHADOW_SUFFIX) for k in shapes)
    decay = polyak_decay if polyak_decay is not None else (DEFAULT_POLYAK_DECAY if has_shadows else None)
    return normalize_config({"num_filters": F_, "a_channels": a, "h_channels": h, "conv": conv, "nonlinearity": nl, "polyak_decay": decay})


def tf_layout_shape(torch_key: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """A torch ``state_dict`` entry's (Keras path, TF-layout shape): the inverse of the table's
    permutation by rank (``gated_spec.TORCH_PERM``); ``hw`` and vectors keep their shape."""
    path = torch_key.replace(".", "/")
    if torch_key.split(".")[-1].startswith("V") and len(shape) in TORCH_PERM:
        shape = tuple(shape[i] for i in np.argsort(TORCH_PERM[len(shape)]))
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


def save_canonical(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool
) -> None:
    """Write the canonical safetensors file (checked against the table first)."""
    from safetensors.numpy import save_file

    c = normalize_any(config)
    check_tensors(table_for(c, shadows=any(k.endswith(EMA_SUFFIX) for k in tensors)), tensors, where="tensors to save",
                  what=kind_of(c))
    metadata = {"format": FORMAT, "config": json.dumps(c), "initialized": json.dumps(bool(initialized))}
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=metadata)


# safetensors dtype names -> NumPy (others, e.g. BF16, come back as raw 2-byte records and are refused as non-float)
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _refuse_pickles(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(16)
    # safetensors: an 8-byte little-endian header length, then the JSON header ("{"). A torch.save
    # file is a zip ("PK\x03\x04") or, in the legacy format, a pickle (protocol 2-5: "\x80\x02".."\x80\x05").
    if head[8:9] != b"{" and (head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))):
        raise ValueError(f"{path}: expected a safetensors file; received a pickle/zip file (a torch.save file?), refused: it is never unpickled")


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor's declared dtype and shape, and the metadata, without reading any tensor data.

    Each tensor comes back as a placeholder of its dtype and shape that takes no memory (a
    broadcast view of one zero), so names, shapes and dtypes can be checked (e.g. by
    :func:`check_tensors`) before a file that declares a huge tensor costs any RAM."""
    from safetensors import safe_open

    path = str(path)
    _refuse_pickles(path)
    try:
        with safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            header = {}
            for k in f.keys():
                piece = f.get_slice(k)
                dtype = np.dtype(_SAFETENSORS_DTYPES.get(piece.get_dtype(), "V2"))
                header[k] = np.broadcast_to(np.zeros((), dtype), tuple(piece.get_shape()))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ...
        raise ValueError(f"{path}: expected a safetensors file; could not read it ({type(exc).__name__}: {exc})") from None
    return header, metadata


def read_safetensors(path: str | os.PathLike, names: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (all, or ``names`` only) and metadata of a safetensors file, with a clear error for
    anything else (never unpickles). Check the header first (:func:`read_safetensors_header`)."""
    from safetensors import safe_open

    path = str(path)
    _refuse_pickles(path)
    try:
        with safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in (f.keys() if names is None else names)}
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ...
        raise ValueError(f"{path}: expected a safetensors file; could not read it ({type(exc).__name__}: {exc})") from None
    return tensors, metadata


def load_canonical(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """(tensors, config, initialized) from a canonical file; names, shapes and dtypes are checked
    against the table before any tensor is read, values after."""
    header, metadata = read_safetensors_header(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: expected metadata format={FORMAT!r}; received {metadata.get('format')!r}")
    try:
        config = normalize_any(json.loads(metadata["config"]))
        initialized = json.loads(metadata["initialized"])
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: expected metadata 'config' (JSON) and 'initialized' (true/false); received {metadata}") from exc
    if not isinstance(initialized, bool):
        raise ValueError(f"{path}: expected metadata initialized to be true or false; received {initialized!r}")
    shadows = any(k.endswith(EMA_SUFFIX) for k in header)
    if shadows and config["polyak_decay"] is None:
        raise WeightError([f"holds Polyak shadows (*{EMA_SUFFIX}) but its config has polyak_decay=None"], str(path), kind_of(config))
    table = table_for(config, shadows=shadows)
    where = f"{path} (tensors against the config in its metadata: {json.dumps(config)})"
    check_tensors(table, header, where=where, values=False, what=kind_of(config))
    tensors, _ = read_safetensors(path)
    check_tensors(table, tensors, where=where, what=kind_of(config))
    return tensors, config, initialized


def random_weights(config: Mapping[str, Any], seed: int, shadows: bool = False, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """A set of canonical weights made in NumPy: V ~ N(0, 0.05), g ~ U(0.5, 1.5), b, hw ~ N(0, 0.05)..N(0, 0.1).

    Values are float32-representable whatever ``dtype``, so float32 and float64 runs start equal.
    Shadows (if asked) are the raw weights plus a small perturbation, so reading them is visible.
    """
    return _random_tensors(weight_table(config, shadows=False), seed, shadows, dtype)


def random_model_weights(config: Mapping[str, Any], seed: int, shadows: bool = False, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """:func:`random_weights` for a whole ``PixelCNNpp`` (``model_weight_table``)."""
    return _random_tensors(model_weight_table(config, shadows=False), seed, shadows, dtype)


def _random_tensors(table: list[WeightRow], seed: int, shadows: bool, dtype: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for row in table:
        leaf = row.tf1_name.rsplit("/", 1)[1]
        if leaf == "g":
            v = rng.uniform(0.5, 1.5, row.shape)
        elif leaf == "b":
            v = rng.normal(0.0, 0.1, row.shape)
        else:
            v = rng.normal(0.0, 0.05, row.shape)
        out[row.tf1_name] = v.astype(np.float32).astype(dtype)
    if shadows:
        for row in table:
            base = out[row.tf1_name]
            out[row.tf1_name + EMA_SUFFIX] = (base + rng.normal(0.0, 0.01, base.shape)).astype(np.float32).astype(dtype)
    return out
