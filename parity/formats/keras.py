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
from parity.table import EMA_SUFFIX, tensor_summary

Stores = dict[str, dict[str, np.ndarray]]
BLOCK_SUBLAYERS = ("conv_input", "nin_skip", "conv_output")  # a block's weight-normalised layers, by attribute


def _h5_stores(path: str, f: Any) -> tuple[str, Stores]:
    """One pass over an open ``.weights.h5``'s groups: the one layer under ``layers/`` and every ``vars``
    group under it, keyed by its group path relative to that layer (``""`` for the layer's own), the
    datasets by index, *not read* (h5py handles: shapes and dtypes are checked before any value is read,
    so a small file declaring a huge compressed dataset costs nothing). What Keras' ``save_weights``
    never writes is refused: soft and external links (a link loop, or another file's content), and
    datasets stored outside the file (external or virtual storage: bytes of any local file)."""
    import h5py

    stores: Stores = {}

    def visit(group: Any, rel: str) -> None:
        for name in group:
            where = f"{rel}/{name}" if rel else name
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise ValueError(f"{path}: holds a {type(link).__name__} at layers/{top}/{where}; expected groups and "
                                 f"datasets only (as Keras writes them), refused")
            item = group[name]
            if not isinstance(item, h5py.Group):
                raise ValueError(f"{path}: expected a group at layers/{top}/{where}; found a dataset")
            if name == "vars":
                for k in item:
                    if not isinstance(item.get(k, getlink=True), h5py.HardLink) or not isinstance(item[k], h5py.Dataset):
                        raise ValueError(f"{path}: expected a dataset at layers/{top}/{where}/{k}; found a link or a group, refused")
                    if item[k].external or item[k].is_virtual:
                        raise ValueError(f"{path}: dataset layers/{top}/{where}/{k} is stored outside the file "
                                         f"({'virtual' if item[k].is_virtual else 'external'} storage), refused")
                stores[rel] = {k: item[k] for k in item}
            else:
                visit(item, where)

    layers = f.get("layers", getlink=True)
    if layers is not None and not isinstance(layers, h5py.HardLink):
        raise ValueError(f"{path}: holds a {type(layers).__name__} at layers; expected a group, refused")
    tops = list(f.get("layers", {}))
    if len(tops) != 1:
        raise ValueError(f"{path}: expected one GatedResnet or PixelCNNpp under layers/; found {tops}")
    top = tops[0]
    top_link = f["layers"].get(top, getlink=True)
    if not isinstance(top_link, h5py.HardLink):
        raise ValueError(f"{path}: holds a {type(top_link).__name__} at layers/{top}; expected a group, refused")
    visit(f["layers"][top], "")
    return top, stores


def _open_h5(path: str) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: expected a Keras .weights.h5 (HDF5) file; could not read it ({exc})") from None


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
    for name, layer in layers.items():  # every dataset's shape and dtype first: nothing is read before they fit
        store = stores.get(name, {})
        variables = layer._trainable_variables + layer._non_trainable_variables  # Keras' load_own_variables order
        problem = _misfit(store, variables)
        if problem:
            raise ValueError(f"{path}: layer {name or what!r} does not fit a {what} with config {json.dumps(config)}: {problem}")
    for name, layer in layers.items():
        layer.load_own_variables({k: v[()] for k, v in stores.get(name, {}).items()})


def _misfit(store: Mapping[str, Any], variables: list[Any]) -> str:
    """Why the datasets of a ``vars`` group cannot be a layer's variables (by index: count, shape, dtype;
    no casts: an int dataset into a float variable, or float64 values into float32 ones, are refused as
    the safetensors readers refuse them), or ``""``."""
    if sorted(store) != sorted(str(i) for i in range(len(variables))):
        return f"expected {len(variables)} variables (vars/0 .. vars/{len(variables) - 1}); found {sorted(store)[:8]}"
    for i, v in enumerate(variables):
        d = store[str(i)]
        if tuple(d.shape) != tuple(v.shape):
            return f"vars/{i} has shape {tuple(d.shape)}; expected {tuple(v.shape)}"
        if np.dtype(d.dtype) != np.dtype(v.dtype):
            return f"vars/{i} has dtype {np.dtype(d.dtype).name}; expected {np.dtype(v.dtype).name} (no silent casts)"
    return ""


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
    _check_shapes(path, config, stores)
    from parity.backends import get_backend

    tfb = get_backend("tf")
    block = tfb.build(config, _file_dtype(path, stores["conv_input"]["0"]))
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
    """Check the groups' shapes against ``config`` (nothing read before they fit), build the network in
    ``tf_impl`` in the dtype of ``first``'s V and load every group into it."""
    _check_shapes(path, config, by_path)
    from parity.backends import get_backend

    tfb = get_backend("tf")
    model = tfb.build(config, _file_dtype(path, by_path[first]["0"]))
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


def _file_dtype(path: str, first_v: Any) -> str:
    """The dtype of the first layer's V (float32 or float64): the twin is built in it, and every other
    dataset must have its variable's dtype (:func:`_misfit`), so no value is cast on the way in."""
    dtype = np.dtype(first_v.dtype).name
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{path}: its first V has dtype {dtype}; expected float32 or float64 (no silent casts)")
    return dtype


def _group_of(torch_key: str) -> str:
    """The ``vars`` group (as :func:`_h5_stores` keys them, lists as ``up_u.3``) of a table row."""
    parts = torch_key.split(".")[:-1]
    if len(parts) >= 2 and parts[1].isdigit():
        parts = [f"{parts[0]}.{parts[1]}", *parts[2:]]
    return "/".join(parts)


def _check_shapes(path: str, config: Mapping[str, Any], stores: Stores) -> None:
    """Before the twin is built from a config inferred from some shapes and a count of groups: every
    group the config's table names holds exactly its datasets, each of its shape (Keras' order: V, g,
    b, the ``initialized`` flag, then the shadows), and no depth beyond twice the file's datasets
    (``parity.kinds.check_declared``): empty groups or one huge dataset cannot make a huge twin out of
    a small file, and nothing is read before it fits."""
    from parity.kinds import check_declared, table_for

    what = kind_of(config).what
    shadows = config.get("polyak_decay") is not None
    check_declared(config, sum(len(store) for store in stores.values()), path, shadows)
    expected: dict[str, list[tuple[int, ...]]] = {}
    table = table_for(config, shadows)
    for row in table:
        if not row.tf1_name.endswith(EMA_SUFFIX):
            expected.setdefault(_group_of(row.torch_key), []).append(row.shape)
    for group, shapes in expected.items():
        if len(shapes) == 3:  # a weight-normalised layer: V, g, b, then its initialized flag
            shapes.append(())
    for row in table:
        if row.tf1_name.endswith(EMA_SUFFIX):
            expected[_group_of(row.torch_key)].append(row.shape)
    for group, shapes in expected.items():
        store = stores.get(group, {})
        found = [tuple(store[str(i)].shape) if str(i) in store else None for i in range(len(shapes))]
        if len(store) != len(shapes) or found != shapes:
            raise ValueError(f"{path}: layer {group or what!r} does not fit a {what} with config {json.dumps(config)}: "
                             f"expected datasets of shapes {shapes}; found {[tuple(store[k].shape) for k in sorted(store, key=lambda k: (len(k), k))][:8]}")


def read_keras_file(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None, **_: Any) -> Loaded:
    """Read a ``.weights.h5`` of a one-layer Keras model holding a block or a network (as
    :func:`write_keras_file` writes it), in one pass over the file; the config from its shapes, each
    dataset read only once its shape and dtype fit the twin built from them."""
    with _open_h5(path) as f:
        _, stores = _h5_stores(path, f)
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
