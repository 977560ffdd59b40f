"""Configs of the things a weight file can hold, validated, and read back from a file's shapes.

A *block* config is the keyword arguments of ``GatedResnet`` (:data:`CONFIG_KEYS`); a *model* config
carries its kind under ``model`` (``{"model": "pixelcnn_pp", "nr_resnet": 5, ...}``) and the rest are
the keyword arguments of the twin's network class (``gated_spec.model``). :mod:`parity.kinds` ties
each kind to its config, weight table and twin class.

Formats that do not store the config (torch ``state_dict`` files without metadata, Keras weight
files, TF1 checkpoints) get it from their shapes here, by one set of rules per kind; what the shapes
cannot tell (elu vs relu, a 2x3 ``conv2d`` vs a down-shifted conv) comes from the options given.
"""

from __future__ import annotations

from typing import Any, Mapping

from gated_spec import CHANNEL_MULTIPLIER, CONV_KINDS, DEFAULT_POLYAK_DECAY, NONLINEARITIES, SHADOW_SUFFIX
from gated_spec import TF1_SHADOW_SUFFIX as EMA_SUFFIX
from gated_spec.checks import check_positive
from parity.errors import WeightError

CONFIG_KEYS = ("num_filters", "a_channels", "h_channels", "conv", "nonlinearity", "dropout_p", "polyak_decay")
DEFAULT_FILTER = {kind: f for kind, f in CONV_KINDS.items() if f is not None}
MODEL_KEY = "model"  # a config with {"model": "pixelcnn_pp", ...} describes a whole network


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


def model_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model config without its ``model`` key: the keyword arguments of ``PixelCNNpp`` and
    ``gated_spec.model``."""
    return {k: v for k, v in config.items() if k != MODEL_KEY}


def normalize_pixelcnn_pp(config: Mapping[str, Any]) -> dict[str, Any]:
    """A PixelCNN++ config (``gated_spec.model.normalize_model_config``) with its ``model`` key."""
    from gated_spec.model import normalize_model_config

    return {MODEL_KEY: "pixelcnn_pp", **normalize_model_config(model_args(config))}


def normalize_pixelsnail(config: Mapping[str, Any]) -> dict[str, Any]:
    """A PixelSNAIL config (``gated_spec.pixelsnail``; its spec under ``model``) with its ``model`` key."""
    from gated_spec.pixelsnail import normalize_pixelsnail_config

    return {MODEL_KEY: config[MODEL_KEY], **normalize_pixelsnail_config(config[MODEL_KEY], model_args(config))}


def pixelsnail_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """A PixelSNAIL config as ``PixelSNAIL``'s keyword arguments: its ``model`` is the ``spec``."""
    return {"spec": config[MODEL_KEY], **model_args(config)}


def shadow_decay(has_shadows: bool, polyak_decay: float | None) -> float | None:
    """The decay a file's shadows were made with: the one given, else the original scripts' where the
    file has shadows (no file format stores it), else none."""
    return polyak_decay if polyak_decay is not None else (DEFAULT_POLYAK_DECAY if has_shadows else None)


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
    decay = shadow_decay(any(k.endswith(SHADOW_SUFFIX) for k in shapes), polyak_decay)
    return normalize_config({"num_filters": F_, "a_channels": a, "h_channels": h, "conv": conv, "nonlinearity": nl, "polyak_decay": decay})


def infer_model_config(shapes: Mapping[str, tuple[int, ...]], overrides: Mapping[str, Any] | None = None,
                       polyak_decay: float | None = None) -> dict[str, Any]:
    """A PixelCNN++ config from TF1-named shapes (model scope): ``F`` from ``conv2d_0/V``, ``R`` from
    the number of convs (``24 R + 15``), ``M`` from the output nin, ``h_channels`` from
    ``conditional_weights_0/hw``, ``concat_elu`` from the first block's input (elu vs relu: ``overrides``)."""
    from gated_spec.model import OUTPUT_PER_MIXTURE

    if (overrides or {}).get(MODEL_KEY, "pixelcnn_pp") != "pixelcnn_pp":
        return infer_pixelsnail_config(overrides[MODEL_KEY], shapes, overrides, polyak_decay)
    if "conv2d_0/V" not in shapes:
        raise WeightError(["missing tensor 'conv2d_0/V' (the network's first conv; cannot infer the model config)"], "tensors", "model")
    ranks = {"conv2d_0/V": 4, "conv2d_3/V": 4, "conditional_weights_0/hw": 2}
    ranks.update({k: 2 for k in shapes if k.startswith("dense_") and k.endswith("/V")})
    wrong = [f"tensor {k!r} has shape {tuple(shapes[k])}; expected a {r}-D one" for k, r in ranks.items()
             if k in shapes and len(shapes[k]) != r]
    if wrong:
        raise WeightError(wrong, "tensors", "model")
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


def infer_pixelsnail_config(spec: str, shapes: Mapping[str, tuple[int, ...]], overrides: Mapping[str, Any] | None = None,
                            polyak_decay: float | None = None) -> dict[str, Any]:
    """A PixelSNAIL ``spec``'s config from TF1-named shapes (model scope), checked against the options:
    ``F`` from ``conv2d_0/V``; with ``A`` attention blocks the smallkey family has ``2 + 2 R A`` convs
    and ``9 A + 1`` denses, ``model_spec`` ``3 + 4 R A`` convs and ``9 A + R A + 1`` denses; ``M``
    from the output nin; ``concat_elu`` from the first block's input (elu vs relu: the options);
    ``h_channels`` from ``conditional_weights_0/hw``. Shapes cannot tell ``h12_noup_smallkey`` from
    ``h12_pool2_smallkey``: ``spec`` (``--model``) does."""
    from gated_spec.model import OUTPUT_PER_MIXTURE
    from gated_spec.pixelsnail import normalize_pixelsnail_config, spec_of

    two = spec_of(spec).two_streams
    if "conv2d_0/V" not in shapes:
        raise WeightError(["missing tensor 'conv2d_0/V' (the network's first conv; cannot infer the model config)"], "tensors", "model")
    F_ = shapes["conv2d_0/V"][-1]
    count = lambda kind: len({k.split("/")[0] for k in shapes if k.startswith(kind + "_") and k.endswith("/V")})  # noqa: E731
    n_conv, n_dense = count("conv2d"), count("dense")
    if two:
        ra, left = divmod(n_conv - 3, 4)
        A, left2 = divmod(n_dense - 1 - ra, 9)
    else:
        A, left2 = divmod(n_dense - 1, 9)
        ra, left = divmod(n_conv - 2, 2)
    R, left3 = divmod(ra, A) if A > 0 else (0, 1)
    if left or left2 or left3 or R < 1:
        rule = "3 + 4 R A convs and 9 A + R A + 1 denses" if two else "2 + 2 R A convs and 9 A + 1 denses"
        raise WeightError([f"{n_conv} conv2d and {n_dense} dense layers; a {spec} with R blocks per attention block and A "
                           f"attention blocks has {rule}"], "tensors", "model")
    last = shapes.get(f"dense_{n_dense - 1}/V")
    if last is None or last[-1] % OUTPUT_PER_MIXTURE:
        raise WeightError([f"the output nin dense_{n_dense - 1}/V has shape {last}; expected [F, 10 M]"], "tensors", "model")
    first = shapes.get("conv2d_3/V" if two else "conv2d_2/V")  # the first ul block's first conv: 2 F inputs after concat_elu
    over = {k: v for k, v in dict(overrides or {}).items() if v is not None and k != MODEL_KEY}
    nl = over.get("nonlinearity")
    if nl is None:
        if first is None or first[2] != 2 * F_:
            raise ValueError("cannot tell elu from relu by the shapes; pass --nonlinearity (the released runs: elu)")
        nl = "concat_elu"
    hw = shapes.get("conditional_weights_0/hw")
    inferred = {"nr_resnet": R, "nr_filters": F_, "nr_logistic_mix": last[-1] // OUTPUT_PER_MIXTURE, "attn_rep": A,
                "nonlinearity": nl, "h_channels": None if hw is None else hw[0],
                "polyak_decay": shadow_decay(any(k.endswith(EMA_SUFFIX) for k in shapes), polyak_decay)}
    differ = [k for k in ("nr_resnet", "nr_filters", "nr_logistic_mix", "attn_rep") if k in over and over[k] != inferred[k]]
    if differ:
        raise ValueError("the shapes say " + ", ".join(f"{k}={inferred[k]}" for k in differ) + "; the options say "
                         + ", ".join(f"{k}={over[k]}" for k in differ))
    return {MODEL_KEY: spec, **normalize_pixelsnail_config(spec, {**inferred, "dropout_p": over.get("dropout_p", 0.0)})}


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
    inferred = {"nr_resnet": nr_resnet, "nr_filters": nr_filters, "nr_logistic_mix": nr_logistic_mix, "nonlinearity": nl,
                "h_channels": h_channels, "polyak_decay": shadow_decay(has_shadows, polyak_decay)}
    differ = [k for k in ("nr_resnet", "nr_filters", "nr_logistic_mix") if k in over and over[k] != inferred[k]]
    if differ:
        raise ValueError("the shapes say " + ", ".join(f"{k}={inferred[k]}" for k in differ) + "; the options say "
                         + ", ".join(f"{k}={over[k]}" for k in differ))
    return normalize_pixelcnn_pp({**inferred, "dropout_p": 0.0, **{k: v for k, v in over.items() if k == "dropout_p"}})
