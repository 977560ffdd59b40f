"""Keras ``.weights.h5`` files, as ``save_weights`` writes them for a one-layer Keras model holding a
``tf_impl`` ``GatedResnet`` or ``PixelCNNpp`` (needs TensorFlow).

Read in one pass over the HDF5 file; the config comes from the shapes by the rules of
:mod:`parity.configs` (``--conv`` / ``--nonlinearity`` where shapes cannot tell; ``--polyak-decay`` for
the shadows' decay, which the file does not store), and each layer's values go in through Keras' own
``load_own_variables``. Which kind a file holds is told by its groups (:data:`READERS`, by kind name).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import numpy as np

from gated_spec import SHADOW_SUFFIX
from parity.atomic import atomic_path
from parity.configs import infer_config, model_config_from_shapes, shadow_decay
from parity.formats.base import Format, Loaded
from parity.kinds import kind_of
from parity.table import tensor_summary

Stores = dict[str, dict[str, np.ndarray]]
BLOCK_SUBLAYERS = ("conv_input", "nin_skip", "conv_output")  # a block's weight-normalised layers, by attribute


def _h5_stores(path: str) -> tuple[str, Stores]:
    """One pass over a ``.weights.h5``: the one layer under ``layers/`` and every ``vars`` group under
    it, keyed by its group path relative to that layer (``""`` for the layer's own), values by index."""
    import h5py

    stores: Stores = {}

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


def _keras_groups(layer: Any, at: str = "") -> dict[str, Any]:
    """``layer`` under the group path ``at`` and, for a block, each of its sublayers under
    ``<at>/<attribute>``: where Keras stores their variables."""
    groups = {at: layer}
    for attr in BLOCK_SUBLAYERS:
        if getattr(layer, attr, None) is not None:
            groups[f"{at}/{attr}" if at else attr] = getattr(layer, attr)
    return groups


def _load_layers(path: str, what: str, config: Mapping[str, Any], layers: Mapping[str, Any], stores: Stores) -> None:
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


def _read_block(path: str, stores: Stores, overrides: Mapping[str, Any] | None, polyak_decay: float | None) -> Loaded:
    """A ``GatedResnet``: Keras stores each sublayer's variables as ``<sublayer>/vars/<i>`` in creation
    order (V, g, b, initialized, then the shadows) and the block's own ``hw`` (and ``hw_ema``) as ``vars/<i>``."""
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
    _load_layers(path, kind_of(config).what, config, _keras_groups(block), stores)
    tensors = tfb.export_weights(block)
    return Loaded(tensors, config, block.initialized, tensor_summary(tensors))


def _keras_list_index(name: str) -> int:
    """Keras names the layers of a list attribute by class, counting from the second:
    ``gated_resnet``, ``gated_resnet_1``, ...; the position in the list."""
    base, _, last = name.rpartition("_")
    return int(last) if base and last.isdigit() else 0


def _by_path(path: str, stores: Stores) -> Stores:
    """A network's groups keyed by plan path: ``<attr>/vars`` for single layers (``u_init``, ``nin_out``)
    and ``<attr>/<class>[_<k>]/[<sublayer>/]vars`` for the k-th layer of a list (``up_u.1/conv_input``)."""
    by_path: Stores = {}
    for key, values in stores.items():
        parts = key.split("/") if key else []
        if len(parts) >= 2 and parts[0] not in stores:  # a list attribute: no vars of its own, one group per layer
            parts = [f"{parts[0]}.{_keras_list_index(parts[1])}", *parts[2:]]
        name = "/".join(parts)
        if name in by_path:
            raise ValueError(f"{path}: two groups hold layer {name} (Keras numbers a list's layers name, name_1, name_2, ...)")
        by_path[name] = values
    return by_path


def _shape(by_path: Stores, key: str, index: str = "0") -> tuple[int, ...] | None:
    v = by_path.get(key, {}).get(index)
    return None if v is None else tuple(v.shape)


def _load_network(path: str, config: Mapping[str, Any], by_path: Stores, first: str) -> Loaded:
    """Build the network of ``config`` in ``tf_impl`` in the dtype of ``first``'s V and load every group into it."""
    from parity.backends import get_backend

    tfb = get_backend("tf")
    model = tfb.build(config, np.asarray(by_path[first]["0"]).dtype.name)
    layers: dict[str, Any] = {"": model}
    for e, layer in zip(model.plan, model.layers_in_call_order()):
        layers.update(_keras_groups(layer, e.path))
    _load_layers(path, kind_of(config).what, config, layers, by_path)
    tensors = tfb.export_weights(model)
    return Loaded(tensors, config, model.initialized, tensor_summary(tensors))


def _read_pixelcnn_pp(path: str, stores: Stores, overrides: Mapping[str, Any] | None, polyak_decay: float | None) -> Loaded:
    """A whole ``PixelCNNpp`` (groups as :func:`_by_path` reads them); the config from ``u_init``'s V
    (F), the number of ``up_u`` blocks (3 R), ``nin_out``'s V (10 M), the first block's ``hw`` (K) and
    first conv (2 F for concat_elu), and whether ``u_init`` holds shadows."""
    from gated_spec.model import OUTPUT_PER_MIXTURE

    by_path = _by_path(path, stores)
    first, out = _shape(by_path, "u_init"), _shape(by_path, "nin_out")
    if first is None or len(first) != 4 or out is None or len(out) != 2:
        raise ValueError(f"{path}: expected u_init's V [2, 3, 4, F] and nin_out's V [F, 10 M]; found {first} and {out}")
    n_up = len({k.split("/")[0] for k in by_path if k.startswith("up_u.")})
    R, left = divmod(n_up, 3)
    if left or R < 1 or out[-1] % OUTPUT_PER_MIXTURE:
        raise ValueError(f"{path}: {n_up} up_u blocks and an output of {out[-1]} channels; a PixelCNN++ has 3 R blocks and 10 M")
    conv = _shape(by_path, "up_u.0/conv_input")
    hw = _shape(by_path, "up_u.0")
    config = model_config_from_shapes(R, first[-1], out[-1] // OUTPUT_PER_MIXTURE, None if conv is None or len(conv) != 4 else conv[2],
                                      None if hw is None else hw[0], len(by_path["u_init"]) > 4, overrides, polyak_decay)
    return _load_network(path, config, by_path, "u_init")


def _read_pixelsnail(path: str, stores: Stores, overrides: Mapping[str, Any] | None, polyak_decay: float | None) -> Loaded:
    """A whole ``PixelSNAIL``; its spec from ``overrides['model']`` (the shapes cannot tell a pooled
    spec from an unpooled one). The config from ``ul_init_down``'s V (F), the numbers of ``key_block``
    (A) and ``ul`` blocks (R A), ``nin_out``'s V (10 M), the first ``ul`` block's ``hw`` (K) and first
    conv (2 F for concat_elu), and whether ``ul_init_down`` holds shadows."""
    from gated_spec.model import OUTPUT_PER_MIXTURE
    from gated_spec.pixelsnail import SPECS, normalize_pixelsnail_config

    spec = (overrides or {}).get("model")
    if spec not in SPECS:
        raise ValueError(f"{path}: holds a PixelSNAIL (key_block layers); name its spec with --model, one of {list(SPECS)}")
    by_path = _by_path(path, stores)
    first, out = _shape(by_path, "ul_init_down"), _shape(by_path, "nin_out")
    A = len({k.split("/")[0] for k in by_path if k.startswith("key_block.")})
    n_ul = len({k.split("/")[0] for k in by_path if k.startswith("ul.")})
    R, left = divmod(n_ul, A) if A else (0, 1)
    if first is None or out is None or len(out) != 2 or left or R < 1 or out[-1] % OUTPUT_PER_MIXTURE:
        raise ValueError(f"{path}: ul_init_down's V {first}, {A} key blocks, {n_ul} ul blocks, nin_out's V {out}; a {spec} "
                         f"has [1, 3, 4, F], A, R A and [F, 10 M]")
    F_ = first[-1]
    over = {k: v for k, v in dict(overrides or {}).items() if v is not None and k != "model"}
    conv = _shape(by_path, "ul.0/conv_input")
    nl = over.get("nonlinearity") or ("concat_elu" if conv is not None and conv[2] == 2 * F_ else None)
    if nl is None:
        raise ValueError("cannot tell elu from relu by the shapes; pass --nonlinearity (the released runs: elu)")
    hw = _shape(by_path, "ul.0")
    inferred = {"nr_resnet": R, "nr_filters": F_, "nr_logistic_mix": out[-1] // OUTPUT_PER_MIXTURE, "attn_rep": A,
                "nonlinearity": nl, "h_channels": None if hw is None else hw[0],
                "polyak_decay": shadow_decay(len(by_path["ul_init_down"]) > 4, polyak_decay)}
    differ = [k for k in ("nr_resnet", "nr_filters", "nr_logistic_mix", "attn_rep") if k in over and over[k] != inferred[k]]
    if differ:
        raise ValueError("the shapes say " + ", ".join(f"{k}={inferred[k]}" for k in differ) + "; the options say "
                         + ", ".join(f"{k}={over[k]}" for k in differ))
    config = {"model": spec, **normalize_pixelsnail_config(spec, {**inferred, "dropout_p": over.get("dropout_p", 0.0)})}
    return _load_network(path, config, by_path, "ul_init_down")


# By kind name (parity.kinds): how a file of that kind is read, and how its groups say which kind it holds.
READERS: dict[str, Callable[[str, Stores, Mapping[str, Any] | None, float | None], Loaded]] = {
    "block": _read_block,
    "pixelcnn_pp": _read_pixelcnn_pp,
    "pixelsnail": _read_pixelsnail,  # the four PixelSNAIL kinds: the spec comes from --model
}


def _stored_kind(stores: Stores) -> str:
    if any(k.startswith("key_block") for k in stores):
        return "pixelsnail"
    return "pixelcnn_pp" if "u_init" in stores else "block"


def read_keras_file(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None, **_: Any) -> Loaded:
    """Read a ``.weights.h5`` of a one-layer Keras model holding a block or a network (as
    :func:`write_keras_file` writes it), in one pass over the file; the config from its shapes."""
    _, stores = _h5_stores(path)
    return READERS[_stored_kind(stores)](path, stores, overrides, polyak_decay)


def _keras_holder(layer: Any) -> Any:
    """A Keras model around a built block or ``PixelCNNpp`` for ``save_weights`` (Keras 3 saves built
    models only, and a ``Sequential`` cannot be built through an ``Input`` for a model that also takes
    ``h``; the layer is built, so the holder is marked built). The file holds ``layers/<layer>/...``."""
    import keras

    holder = keras.Sequential([layer])
    holder.built = True
    return holder


def write_keras_file(path: str, loaded: Loaded) -> None:
    """Keras' own ``save_weights`` around the ``tf_impl`` block or network holding the tensors."""
    from parity.backends import build_loaded, get_backend

    layer = build_loaded(get_backend("tf"), loaded.tensors, loaded.config, loaded.initialized)
    with atomic_path(path) as tmp:
        _keras_holder(layer).save_weights(tmp)


FORMAT = Format("keras", read_keras_file, write_keras_file)
