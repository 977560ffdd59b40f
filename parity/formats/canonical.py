"""The canonical weight file: safetensors, original TF1 names, TF layout, config in the metadata.

Keys are the original names relative to the block or the network (``conv2d_0/V``, ``dense_0/g``,
``conditional_weights_0/hw``), shadows as ``<name>/ExponentialMovingAverage``; values in the original
TF layout (:mod:`parity.table`); the metadata holds ``format``, the config (JSON, with ``model`` for a
network) and the initialised flag. Reading checks names, shapes and dtypes against the config's table
from the header before any tensor is read, and never unpickles.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from parity.errors import WeightError
from parity.formats.base import Format, Loaded
from parity.formats.safetensors_io import loads_metadata, read_safetensors, read_safetensors_header, write_safetensors
from parity.kinds import check_declared, kind_of, normalize, table_for
from parity.table import EMA_SUFFIX, check_tensors, tensor_summary

FORMAT_TAG = "gated-resnet-parity/1"  # the metadata's ``format``


def save_canonical(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool
) -> None:
    """Write the canonical safetensors file (checked against the table first)."""
    c = normalize(config)
    check_tensors(table_for(c, shadows=any(k.endswith(EMA_SUFFIX) for k in tensors)), tensors, where="tensors to save",
                  what=kind_of(c).what)
    metadata = {"format": FORMAT_TAG, "config": json.dumps(c), "initialized": json.dumps(bool(initialized))}
    write_safetensors(path, tensors, metadata)


def load_canonical(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """(tensors, config, initialized) from a canonical file; names, shapes and dtypes are checked
    against the table before any tensor is read, values after."""
    header, metadata = read_safetensors_header(path)
    if metadata.get("format") != FORMAT_TAG:
        raise ValueError(f"{path}: expected metadata format={FORMAT_TAG!r}; received {metadata.get('format')!r}")
    try:
        config = normalize(loads_metadata(metadata["config"]))
        initialized = loads_metadata(metadata["initialized"])
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: expected metadata 'config' (JSON) and 'initialized' (true/false); received {metadata}") from exc
    if not isinstance(initialized, bool):
        raise ValueError(f"{path}: expected metadata initialized to be true or false; received {initialized!r}")
    what = kind_of(config).what
    shadows = any(k.endswith(EMA_SUFFIX) for k in header)
    if shadows and config["polyak_decay"] is None:
        raise WeightError([f"holds Polyak shadows (*{EMA_SUFFIX}) but its config has polyak_decay=None"], str(path), what)
    check_declared(config, len(header), str(path), shadows)
    table = table_for(config, shadows=shadows)
    where = f"{path} (tensors against the config in its metadata: {json.dumps(config)})"
    check_tensors(table, header, where=where, values=False, what=what)
    tensors, _ = read_safetensors(path)
    check_tensors(table, tensors, where=where, what=what)
    return tensors, config, initialized


def read_canonical(path: str, **_: Any) -> Loaded:
    """The canonical file (config and ``initialized`` in its metadata)."""
    tensors, config, initialized = load_canonical(path)
    return Loaded(tensors, config, initialized, tensor_summary(tensors))


def write_canonical(path: str, loaded: Loaded) -> None:
    save_canonical(path, loaded.tensors, loaded.config, loaded.initialized)


FORMAT = Format("canonical", read_canonical, write_canonical)
