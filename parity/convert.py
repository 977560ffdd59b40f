"""Moving weights between the canonical file, a torch ``state_dict`` file and a Keras weights file,
and applying a block from a weight file to inputs.

Formats, told apart by name and metadata:

* canonical: ``*.safetensors`` with ``format=gated-resnet-parity/1`` metadata (TF1 names, TF layout);
* torch ``state_dict``: ``*.safetensors`` with ``torch_impl`` keys (``conv_input.V``, ...) in torch
  layout; written with the config in its metadata, read with it or with the config inferred from the
  shapes (``--conv`` / ``--nonlinearity`` where shapes cannot tell);
* Keras: ``*.weights.h5`` as ``save_weights`` writes it for a one-layer Keras model holding the block
  or a whole ``PixelCNNpp`` (needs TensorFlow), read with the config inferred from its shapes
  (``--conv``/``--nonlinearity`` where shapes cannot tell; ``--polyak-decay`` for the shadows' decay,
  which the file does not store);
* an original TF1 checkpoint prefix (``PREFIX.index`` + ``PREFIX.data-*``), read only (see
  :mod:`parity.tf1`): the block under ``--scope`` (``model``), optimiser slots skipped and counted.

Pickle files (``torch.save``: ``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are refused, never unpickled.

Each format has one reader in :data:`READERS`, chosen by :func:`detect_format`; every reader returns
:class:`Loaded` (canonical tensors, config, ``initialized``, a summary), and the config comes from
``parity.weights.infer_config`` on TF-layout shapes where the file does not store it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from gated_spec import SHADOW_SUFFIX
from parity.atomic import atomic_path
from parity.weights import (
    EMA_SUFFIX,
    FORMAT,
    WeightError,
    check_tensors,
    infer_config,
    is_model,
    kind_of,
    model_args,
    model_config_from_shapes,
    normalize_any,
    table_for,
    tensor_summary,
    tf_layout_shape,
    load_canonical,
    normalize_config,
    read_safetensors,
    read_safetensors_header,
    save_canonical,
)

TORCH_FORMAT = "torch_impl-state-dict/1"
TORCH_FORMATS = (TORCH_FORMAT, "pt", "np", None)  # ours; what safetensors' torch/numpy helpers write; none
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle")


def _kind(path: str) -> str:
    """The file kind by name: ``keras``, ``safetensors`` or ``tf1`` (pickles refused)."""
    p = path.lower()
    if p.endswith(PICKLE_SUFFIXES):
        raise ValueError(f"{path}: pickle files are refused (never unpickled); save a torch state_dict with safetensors instead")
    if p.endswith(".weights.h5"):
        return "keras"
    if p.endswith(".safetensors"):
        return "safetensors"
    from parity.tf1 import is_checkpoint

    if is_checkpoint(path):
        return "tf1"
    raise ValueError(f"{path}: expected a .safetensors, .weights.h5 file or a TF1 checkpoint prefix; received an unknown kind")


def detect_format(path: str) -> str:
    """The key of :data:`READERS` that reads ``path``: by name, and for safetensors by the metadata's
    ``format`` (the header only)."""
    kind = _kind(path)
    if kind != "safetensors":
        return kind
    fmt = read_safetensors_header(path)[1].get("format")
    if fmt == FORMAT:
        return "canonical"
    if fmt not in TORCH_FORMATS:
        raise ValueError(f"{path}: expected metadata format {FORMAT!r} (canonical) or one of {list(TORCH_FORMATS[:-1])} or "
                         f"none (torch state_dict); received format={fmt!r}")
    return "torch"


@dataclass(frozen=True)
class Loaded:
    """What a reader returns: canonical tensors (TF1 names, TF layout), the block config, whether the
    init has run, and a one-line account of what was read."""

    tensors: dict[str, np.ndarray]
    config: dict[str, Any]
    initialized: bool
    summary: str


def read_torch_file(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None, **_: Any) -> Loaded:
    """A torch ``state_dict`` safetensors file (config from its metadata, or inferred from the shapes)."""
    header, metadata = read_safetensors_header(path)
    if header and all(k.startswith("module.") for k in header):
        raise WeightError(["every key starts with 'module.': a state_dict saved from nn.DataParallel or "
                           "DistributedDataParallel; save model.module.state_dict() instead, or strip the prefix"], path)
    shadows = any(k.endswith(SHADOW_SUFFIX) for k in header)
    if "config" in metadata:
        try:
            stored = json.loads(metadata["config"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: expected a JSON block config in the metadata; received {metadata['config'][:60]!r} ({exc})") from exc
        config = normalize_any({**stored, **{k: v for k, v in (overrides or {}).items() if k in stored}})
    else:
        if shadows and polyak_decay is None:
            raise ValueError(f"{path}: holds Polyak shadows (*{SHADOW_SUFFIX}) but no config, so their decay is not "
                             f"known; pass --polyak-decay (polyak_decay=...) with the decay the block was built with")
        tf_shapes = {k: tf_layout_shape(k, tuple(np.shape(v))) for k, v in header.items()}
        config = infer_config(dict(tf_shapes.values()), overrides, polyak_decay, names={p: k for k, (p, _) in tf_shapes.items()})
    table = table_for(config, shadows=shadows)
    layers = {r.torch_key.rsplit(".", 1)[0] for r in table if "." in r.torch_key}
    flag_names = {k for k in header if k.endswith(".initialized") and k.rsplit(".", 1)[0] in layers}
    check_tensors(table, {k: v for k, v in header.items() if k not in flag_names}, key="torch_key", layout="torch", where=path,
                  values=False, what=kind_of(config))
    tensors, _ = read_safetensors(path)
    flags = {k: tensors[k] for k in flag_names}
    weights = {k: v for k, v in tensors.items() if k not in flag_names}
    check_tensors(table, weights, key="torch_key", layout="torch", where=path, what=kind_of(config))
    initialized = bool(flags) and all(bool(np.asarray(v)) for v in flags.values())
    tensors = {r.tf1_name: r.from_torch_layout(weights[r.torch_key]) for r in table}
    return Loaded(tensors, config, initialized, tensor_summary(tensors))


def write_torch_file(path: str, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool) -> None:
    """A torch ``state_dict`` as safetensors (loadable by ``safetensors.torch.load_file`` + ``load_state_dict``)."""
    from safetensors.numpy import save_file

    config = normalize_any(config)
    table = table_for(config, shadows=any(k.endswith(EMA_SUFFIX) for k in tensors))
    check_tensors(table, tensors, where="tensors to save", what=kind_of(config))
    state = {r.torch_key: r.to_torch_layout(np.asarray(tensors[r.tf1_name])) for r in table}
    for layer in dict.fromkeys(r.torch_key.rsplit(".", 1)[0] for r in table if r.torch_key.endswith(".V")):
        state[f"{layer}.initialized"] = np.array(bool(initialized))
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": TORCH_FORMAT, "config": json.dumps(config)})


def read_tf1_checkpoint(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None,
                        scope: str = "model", counters: str | None = None) -> Loaded:
    """An original TF1 checkpoint mapped onto one block, or with ``model`` in ``overrides`` onto a
    whole network (``parity.tf1.CheckpointMap``)."""
    from parity.tf1 import parse_counters, read_tf1, read_tf1_model

    if overrides and is_model(overrides):
        if counters:
            raise ValueError("--counters places one block inside a model; a whole-model conversion (--model) takes none")
        mapped = read_tf1_model(path, overrides, scope=scope, polyak_decay=polyak_decay)
        return Loaded(mapped.tensors, mapped.config, True, mapped.summary())
    mapped = read_tf1(path, overrides, scope=scope, namer=parse_counters(counters), polyak_decay=polyak_decay)
    return Loaded(mapped.tensors, mapped.config, True, mapped.summary())


def read_canonical(path: str, **_: Any) -> Loaded:
    """The canonical file (config and ``initialized`` in its metadata)."""
    tensors, config, initialized = load_canonical(path)
    return Loaded(tensors, config, initialized, tensor_summary(tensors))


def read_any(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None,
             scope: str = "model", counters: str | None = None) -> Loaded:
    """Any supported weight file, by its reader in :data:`READERS`."""
    return READERS[detect_format(path)](path, overrides=overrides, polyak_decay=polyak_decay, scope=scope, counters=counters)


def _h5_stores(path: str) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """One pass over a ``.weights.h5``: the one layer under ``layers/`` and every ``vars`` group under
    it, keyed by its group path relative to that layer (``""`` for the layer's own), values by index."""
    import h5py

    stores: dict[str, dict[str, np.ndarray]] = {}

    def visit(group: Any, rel: str) -> None:
        for name, item in group.items():
            where = f"{rel}/{name}" if rel else name
            if not isinstance(item, h5py.Group):
                raise ValueError(f"{path}: expected a group at layers/{top}/{where}; found a dataset")
            if name == "vars":
                stores[rel] = {k: np.asarray(v) for k, v in item.items()}
            else:
                visit(item, where)

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: expected a Keras .weights.h5 (HDF5) file; could not read it ({exc})") from None
    with f:
        tops = list(f.get("layers", {}))
        if len(tops) != 1:
            raise ValueError(f"{path}: expected one GatedResnet or PixelCNNpp under layers/; found {tops}")
        top = tops[0]
        visit(f["layers"][top], "")
    return top, stores


BLOCK_SUBLAYERS = ("conv_input", "nin_skip", "conv_output")  # a block's weight-normalised layers, by attribute


def _keras_groups(layer: Any, at: str = "") -> dict[str, Any]:
    """``layer`` under the group path ``at`` and, for a block, each of its sublayers under
    ``<at>/<attribute>``: where Keras stores their variables."""
    groups = {at: layer}
    for attr in BLOCK_SUBLAYERS:
        if getattr(layer, attr, None) is not None:
            groups[f"{at}/{attr}" if at else attr] = getattr(layer, attr)
    return groups


def _load_layers(path: str, what: str, config: Mapping[str, Any], layers: Mapping[str, Any],
                 stores: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Each layer's stored values into it through Keras' own ``load_own_variables`` (the layers are
    fresh: nothing to undo if one refuses); a group no layer claims is an error."""
    extra = sorted(k for k in set(stores) - set(layers) if stores[k])
    if extra:
        raise ValueError(f"{path}: holds layers {extra[:4]}{' ...' if len(extra) > 4 else ''} that a {what} with config "
                         f"{json.dumps(config)} does not have")
    for name, layer in layers.items():
        try:
            layer.load_own_variables(stores.get(name, {}))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}: layer {name or what!r} does not fit a {what} with config {json.dumps(config)}: "
                             + " ".join(str(exc).split())) from None


def read_keras_file(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None, **_: Any) -> Loaded:
    """Read a ``.weights.h5`` of a one-layer Keras model holding the block or a ``PixelCNNpp`` (as
    :func:`write_any` writes it), in one pass over the file; the config from its shapes."""
    top, stores = _h5_stores(path)
    if "u_init" in stores:
        return _read_keras_model(path, stores, overrides, polyak_decay)
    # Keras stores each layer's own variables as layers/<block>/<sublayer>/vars/<i>, in creation
    # order: V, g, b, initialized, then the shadows; the block's own hw (and hw_ema) as layers/<block>/vars/<i>.
    shapes: dict[str, tuple[int, ...]] = {}  # TF layout, by Keras path
    for attr in BLOCK_SUBLAYERS:
        if "0" in stores.get(attr, {}):
            v = stores[attr]["0"].shape
            if len(v) not in (2, 4):
                raise ValueError(f"{path}: {attr}'s V has shape {v}; expected a 2-D (nin) or 4-D (conv) V")
            shapes[f"{attr}/V"] = v
            if "4" in stores[attr]:
                shapes[f"{attr}/V{SHADOW_SUFFIX}"] = v
    if "0" in stores.get("", {}):
        shapes["hw"] = stores[""]["0"].shape
    config = infer_config(shapes, overrides, polyak_decay)
    from parity.backends import get_backend

    tfb = get_backend("tf")
    block = tfb.build(config)
    _load_layers(path, "block", config, _keras_groups(block), stores)
    tensors = tfb.export_weights(block)
    return Loaded(tensors, config, block.initialized, tensor_summary(tensors))


def _keras_list_index(name: str) -> int:
    """Keras names the layers of a list attribute by class, counting from the second:
    ``gated_resnet``, ``gated_resnet_1``, ...; the position in the list."""
    base, _, last = name.rpartition("_")
    return int(last) if base and last.isdigit() else 0


def _read_keras_model(path: str, stores: dict[str, dict[str, np.ndarray]], overrides: Mapping[str, Any] | None,
                      polyak_decay: float | None) -> Loaded:
    """A whole ``PixelCNNpp``: groups ``<attr>/vars`` for single layers (``u_init``, ``nin_out``) and
    ``<attr>/<class>[_<k>]/[<sublayer>/]vars`` for the k-th layer of a list (``up_u``, ...); the
    config from ``u_init``'s V (F), the number of ``up_u`` blocks (3 R), ``nin_out``'s V (10 M), the
    first block's ``hw`` (K) and first conv (2 F for concat_elu), and whether ``u_init`` holds shadows."""
    from gated_spec.model import OUTPUT_PER_MIXTURE

    by_path: dict[str, dict[str, np.ndarray]] = {}  # "up_u.1/conv_input" -> values
    for key, values in stores.items():
        parts = key.split("/") if key else []
        if len(parts) >= 2 and parts[0] not in stores:  # a list attribute: no vars of its own, one group per layer
            parts = [f"{parts[0]}.{_keras_list_index(parts[1])}", *parts[2:]]
        name = "/".join(parts)
        if name in by_path:
            raise ValueError(f"{path}: two groups hold layer {name} (Keras numbers a list's layers name, name_1, name_2, ...)")
        by_path[name] = values

    def shape(key: str, index: str = "0") -> tuple[int, ...] | None:
        v = by_path.get(key, {}).get(index)
        return None if v is None else tuple(v.shape)

    first, out = shape("u_init"), shape("nin_out")
    if first is None or len(first) != 4 or out is None or len(out) != 2:
        raise ValueError(f"{path}: expected u_init's V [2, 3, 4, F] and nin_out's V [F, 10 M]; found {first} and {out}")
    n_up = len({k.split("/")[0] for k in by_path if k.startswith("up_u.")})
    R, left = divmod(n_up, 3)
    if left or R < 1 or out[-1] % OUTPUT_PER_MIXTURE:
        raise ValueError(f"{path}: {n_up} up_u blocks and an output of {out[-1]} channels; a PixelCNN++ has 3 R blocks and 10 M")
    conv = shape("up_u.0/conv_input")
    hw = shape("up_u.0")
    config = model_config_from_shapes(R, first[-1], out[-1] // OUTPUT_PER_MIXTURE, None if conv is None or len(conv) != 4 else conv[2],
                                      None if hw is None else hw[0], len(by_path["u_init"]) > 4, overrides, polyak_decay)
    from parity.backends import get_backend

    tfb = get_backend("tf")
    model = tfb.build_model(model_args(config), np.asarray(by_path["u_init"]["0"]).dtype.name)  # u_init's V
    layers: dict[str, Any] = {"": model}
    for e, layer in zip(model.plan, model.layers_in_call_order()):
        layers.update(_keras_groups(layer, e.path))
    _load_layers(path, "model", config, layers, by_path)
    tensors = tfb.export_model_weights(model)
    return Loaded(tensors, config, model.initialized, tensor_summary(tensors))


# One reader per format, keyed as detect_format names them; each takes the path and the keyword
# options overrides, polyak_decay, scope, counters (a reader ignores those its format does not need).
READERS: dict[str, Callable[..., Loaded]] = {
    "canonical": read_canonical,
    "torch": read_torch_file,
    "keras": read_keras_file,
    "tf1": read_tf1_checkpoint,
}


def _keras_holder(layer: Any) -> Any:
    """A Keras model around a built block or ``PixelCNNpp`` for ``save_weights`` (Keras 3 saves built
    models only, and a ``Sequential`` cannot be built through an ``Input`` for a model that also takes
    ``h``; the layer is built, so the holder is marked built). The file holds ``layers/<layer>/...``."""
    import keras

    holder = keras.Sequential([layer])
    holder.built = True
    return holder


def _dtype_of(tensors: Mapping[str, np.ndarray]) -> str:
    return np.asarray(next(iter(tensors.values()))).dtype.name


def build_loaded(module: Any, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool,
                 device: str = "cpu") -> Any:
    """A backend's block or ``PixelCNNpp`` (by ``config``) in the tensors' dtype, holding ``tensors``."""
    dtype = _dtype_of(tensors)
    if is_model(config):
        model = module.build_model(model_args(config), dtype, device)
        module.import_model_weights(model, tensors, initialized)
        return model
    block = module.build(config, dtype, device)
    module.import_weights(block, tensors, initialized)
    return block


def _check_ema(weights: str, tensors: Mapping[str, np.ndarray]) -> None:
    if not any(k.endswith(EMA_SUFFIX) for k in tensors):
        raise ValueError(f"--ema: {weights} holds no averaged weights (no {EMA_SUFFIX} tensors); run without --ema")


def write_any(path: str, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool) -> None:
    kind = _kind(path)
    if kind == "keras":
        from parity.backends import get_backend

        layer = build_loaded(get_backend("tf"), tensors, config, initialized)
        with atomic_path(path) as tmp:
            _keras_holder(layer).save_weights(tmp)
    elif kind == "tf1":
        raise ValueError(f"{path}: writing TF1 checkpoints is not supported; convert to .safetensors or .weights.h5")
    elif path.lower().endswith(".torch.safetensors"):
        write_torch_file(path, tensors, config, initialized)
    else:
        save_canonical(path, tensors, config, initialized)


def convert(src: str, dst: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None,
            scope: str = "model", counters: str | None = None) -> str:
    """Convert ``src`` to ``dst`` (kinds by name: ``*.torch.safetensors`` is a torch state_dict,
    other ``*.safetensors`` canonical, ``*.weights.h5`` Keras, a TF1 checkpoint prefix as source);
    returns a one-line summary."""
    loaded = read_any(src, overrides, polyak_decay, scope=scope, counters=counters)
    write_any(dst, loaded.tensors, loaded.config, loaded.initialized)
    return f"converted {src} -> {dst}: {loaded.summary}, config {json.dumps(loaded.config)}, initialized={loaded.initialized}"


def apply_block(weights: str, inputs: Mapping[str, np.ndarray], backend: str = "torch", use_ema: bool = False,
                init: bool = False, save_weights: str | None = None, device: str = "cpu") -> dict[str, np.ndarray]:
    """Apply the block in ``weights`` to NHWC ``inputs`` (``x``, optional ``a``, ``h``); returns ``{'out': ...}``."""
    from parity.backends import get_backend

    if "x" not in inputs:
        raise ValueError(f"expected inputs to contain 'x'; received {sorted(inputs)}")
    loaded = read_any(weights)
    names = {"x", "h"} if is_model(loaded.config) else {"x", "a", "h"}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise ValueError(f"expected inputs named {', '.join(sorted(names, key='xah'.index))}; received also {unknown}")
    for k, v in inputs.items():
        if np.asarray(v).dtype not in (np.float32, np.float64):
            raise ValueError(f"expected `{k}` of dtype float32 or float64 (no silent casts); received dtype {np.asarray(v).dtype}")
    tensors, config, initialized = loaded.tensors, loaded.config, loaded.initialized
    if use_ema:
        _check_ema(weights, tensors)
    if init and initialized:
        raise ValueError(f"{weights}: the weights are already initialised; --init runs the data-dependent init once")
    if save_weights and not init:
        raise ValueError("--save-weights goes with --init")
    module = get_backend(backend)
    with module.parity_mode(device):  # TF32 off, as in the parity check; a missing CUDA device is named here
        built = build_loaded(module, tensors, config, initialized, device)
        if is_model(config):
            outputs = module.apply_model(built, inputs, use_ema=use_ema, init=init)
            exported = module.export_model_weights(built) if save_weights else None
        else:
            outputs = {"out": module.apply(built, inputs, use_ema=use_ema, init=init)}
            exported = module.export_weights(built) if save_weights else None
        if save_weights:
            write_any(save_weights, exported, config, True)
    return outputs


def sample_file(weights: str, noise: Mapping[str, np.ndarray], backend: str = "torch", use_ema: bool = False,
                h: np.ndarray | None = None, device: str = "cpu", progress: bool = False) -> dict[str, np.ndarray]:
    """Draw images from the model in ``weights`` with the noise ``u_mix`` [B, H, W, M] and ``u_value``
    [B, H, W, 3] (position (i, j) used at step (i, j)); returns ``{'x': [B, H, W, 3]}``."""
    from gated_spec.model import IMAGE_CHANNELS, check_image_size
    from parity.backends import get_backend

    loaded = read_any(weights)
    if not is_model(loaded.config):
        raise ValueError(f"{weights}: holds one block; sampling needs a model file (convert ... --model pixelcnn_pp)")
    M = loaded.config["nr_logistic_mix"]
    missing = sorted({"u_mix", "u_value"} - set(noise))
    if missing:
        raise ValueError(f"expected the noise file to hold u_mix [B, H, W, {M}] and u_value [B, H, W, 3]; missing {missing}")
    u_mix, u_value = np.asarray(noise["u_mix"]), np.asarray(noise["u_value"])
    if u_mix.ndim != 4 or u_mix.shape[-1] != M or u_value.shape != (*u_mix.shape[:3], IMAGE_CHANNELS):
        raise ValueError(f"expected u_mix [B, H, W, {M}] and u_value [B, H, W, 3] with the same B, H, W; received "
                         f"{u_mix.shape} and {u_value.shape}")
    check_image_size("sample", u_mix.shape[1], u_mix.shape[2])
    for name, u in (("u_mix", u_mix), ("u_value", u_value)):
        if not (np.all(u > 0) and np.all(u < 1)):
            raise ValueError(f"expected {name} strictly inside (0, 1) (the original draws from [1e-5, 1 - 1e-5)); "
                             f"received values in [{u.min()}, {u.max()}]")
    if use_ema:
        _check_ema(weights, loaded.tensors)
    module = get_backend(backend)
    dtype = _dtype_of(loaded.tensors)
    with module.parity_mode(device):
        model = build_loaded(module, loaded.tensors, loaded.config, loaded.initialized, device)
        noise = {"u_mix": u_mix.astype(dtype), "u_value": u_value.astype(dtype)}
        return {"x": module.sample_model(model, noise, None if h is None else np.asarray(h, dtype), use_ema, progress)}


def load_into(block: Any, path: str, overrides: Mapping[str, Any] | None = None, scope: str = "model",
              counters: str | None = None) -> None:
    """Load any supported weight file (canonical, torch, Keras, TF1 checkpoint) into an existing
    ``tf_impl`` or ``torch_impl`` ``GatedResnet``; all or nothing.

    The file's block config must match the block's (``dropout_p`` aside, which no file stores);
    shadows missing from the file restart as copies of the raw weights. On any error the block is
    left exactly as it was.
    """
    from parity.backends import get_backend

    backend = "torch" if type(block).__module__.startswith("torch_impl") else "tf"
    module = get_backend(backend)
    loaded = read_any(path, overrides, scope=scope, counters=counters)
    tensors, config, initialized = loaded.tensors, loaded.config, loaded.initialized
    own = normalize_config(module._config(block))
    differ = [k for k in own if k not in ("dropout_p", "polyak_decay") and own[k] != config[k]]
    if differ:
        raise ValueError(f"{path}: holds a block with " + ", ".join(f"{k}={config[k]!r}" for k in differ)
                         + "; the target block has " + ", ".join(f"{k}={own[k]!r}" for k in differ))
    module.import_weights(block, tensors, initialized)
