"""A torch ``state_dict`` as safetensors: ``torch_impl`` keys (``conv_input.V``, ``up_u.3.conv_input.V``)
in torch's layout, loadable with ``safetensors.torch.load_file`` + ``load_state_dict``.

Written with the config in its metadata (``format=torch_impl-state-dict/1``); read with it, or from
files that ``safetensors.torch.save_file(model.state_dict(), ...)`` wrote (no config: a block's is
inferred from the shapes, ``--conv`` / ``--nonlinearity`` where shapes cannot tell, ``--polyak-decay``
for shadows). The per-layer ``initialized`` flags travel as ``<layer>.initialized``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from gated_spec import SHADOW_SUFFIX
from parity.configs import infer_config
from parity.errors import WeightError
from parity.formats.base import Format, Loaded
from parity.formats.safetensors_io import loads_metadata, read_safetensors, read_safetensors_header, write_safetensors
from parity.kinds import check_declared, kind_of, normalize, table_for
from parity.table import EMA_SUFFIX, check_tensors, tensor_summary, tf_layout_shape

TORCH_FORMAT = "torch_impl-state-dict/1"
TORCH_FORMATS = (TORCH_FORMAT, "pt", "np", None)  # ours; what safetensors' torch/numpy helpers write; none


def read_torch_file(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None, **_: Any) -> Loaded:
    """A torch ``state_dict`` safetensors file (config from its metadata, or inferred from the shapes)."""
    header, metadata = read_safetensors_header(path)
    if header and all(k.startswith("module.") for k in header):
        raise WeightError(["every key starts with 'module.': a state_dict saved from nn.DataParallel or "
                           "DistributedDataParallel; save model.module.state_dict() instead, or strip the prefix"], path)
    shadows = any(k.endswith(SHADOW_SUFFIX) for k in header)
    if "config" in metadata:
        try:
            stored = loads_metadata(metadata["config"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: expected a JSON block config in the metadata; received {metadata['config'][:60]!r} ({exc})") from exc
        config = normalize(stored)  # options given must agree with it (parity.formats.read_any checks)
    else:
        if shadows and polyak_decay is None:
            raise ValueError(f"{path}: holds Polyak shadows (*{SHADOW_SUFFIX}) but no config, so their decay is not "
                             f"known; pass --polyak-decay (polyak_decay=...) with the decay the block was built with")
        tf_shapes = {k: tf_layout_shape(k, tuple(np.shape(v))) for k, v in header.items()}
        config = infer_config(dict(tf_shapes.values()), overrides, polyak_decay, names={p: k for k, (p, _) in tf_shapes.items()})
    what = kind_of(config).what
    check_declared(config, len(header), path, shadows)
    table = table_for(config, shadows=shadows)
    layers = {r.torch_key.rsplit(".", 1)[0] for r in table if "." in r.torch_key}
    flag_names = {k for k in header if k.endswith(".initialized") and k.rsplit(".", 1)[0] in layers}
    check_tensors(table, {k: v for k, v in header.items() if k not in flag_names}, key="torch_key", layout="torch", where=path,
                  values=False, what=what)
    tensors, _ = read_safetensors(path)
    flags = {k: tensors[k] for k in flag_names}
    weights = {k: v for k, v in tensors.items() if k not in flag_names}
    check_tensors(table, weights, key="torch_key", layout="torch", where=path, what=what)
    initialized = bool(flags) and all(bool(np.asarray(v)) for v in flags.values())
    tensors = {r.tf1_name: r.from_torch_layout(weights[r.torch_key]) for r in table}
    return Loaded(tensors, config, initialized, tensor_summary(tensors))


def write_torch_file(path: str, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool) -> None:
    """A torch ``state_dict`` as safetensors (loadable by ``safetensors.torch.load_file`` + ``load_state_dict``)."""
    config = normalize(config)
    table = table_for(config, shadows=any(k.endswith(EMA_SUFFIX) for k in tensors))
    check_tensors(table, tensors, where="tensors to save", what=kind_of(config).what)
    state = {r.torch_key: r.to_torch_layout(np.asarray(tensors[r.tf1_name])) for r in table}
    for layer in dict.fromkeys(r.torch_key.rsplit(".", 1)[0] for r in table if r.torch_key.endswith(".V")):
        state[f"{layer}.initialized"] = np.array(bool(initialized))
    write_safetensors(path, state, {"format": TORCH_FORMAT, "config": json.dumps(config)})


FORMAT = Format("torch", read_torch_file, lambda path, loaded: write_torch_file(path, loaded.tensors, loaded.config, loaded.initialized))
