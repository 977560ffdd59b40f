"""Weight formats, one module each, and moving weights between them.

* canonical (:mod:`.canonical`): ``*.safetensors`` with ``format=gated-resnet-parity/1`` metadata
  (TF1 names, TF layout, config in the metadata);
* torch ``state_dict`` (:mod:`.torch_file`): ``*.safetensors`` with ``torch_impl`` keys in torch
  layout; written as ``*.torch.safetensors``;
* Keras (:mod:`.keras`): ``*.weights.h5`` as ``save_weights`` writes it (needs TensorFlow);
* a training checkpoint (:mod:`.training`, written by ``train``), read as the network's tensors;
* an original TF1 checkpoint prefix (:mod:`.tf1`, ``PREFIX.index`` + ``PREFIX.data-*``):
  one block under ``--scope`` (``model``) or, with ``--model``, the whole network; optimiser slots
  skipped and counted, except the original trainer's Adam state (``Variable_k``), which a network's
  read carries (:func:`.tf1.map_adam_slots`); written to ``*.ckpt`` / ``*.ckpt-N`` prefixes as the
  original's Saver writes.

Pickle files (``torch.save``: ``.pt``, ``.pth``, ``.bin``, ``.pkl``, ``.pickle``) are refused, never unpickled.
:func:`detect_format` names the format that reads a path (by name, and for safetensors by the
metadata's ``format``, from the header only); every reader returns :class:`~.base.Loaded`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import numpy as np

from parity.atomic import check_outputs
from parity.formats import canonical, keras, tf1, torch_file, training
from parity.formats.base import Format, Loaded, file_kind
from parity.formats.safetensors_io import read_safetensors_header
from parity.kinds import kind_of

FORMATS: dict[str, Format] = {f.name: f for f in (canonical.FORMAT, torch_file.FORMAT, keras.FORMAT, tf1.FORMAT, training.FORMAT)}

__all__ = ["FORMATS", "Format", "Loaded", "convert", "detect_format", "read_any", "write_any"]


def detect_format(path: str) -> str:
    """The key of :data:`FORMATS` that reads ``path``: by name, and for safetensors by the metadata's
    ``format`` (the header only)."""
    kind = file_kind(path)
    if kind != "safetensors":
        return kind
    fmt = read_safetensors_header(path)[1].get("format")
    if fmt == canonical.FORMAT_TAG:
        return "canonical"
    if fmt == training.TRAIN_TAG:
        return "training"
    if fmt not in torch_file.TORCH_FORMATS:
        raise ValueError(f"{path}: expected metadata format {canonical.FORMAT_TAG!r} (canonical) or one of "
                         f"{list(torch_file.TORCH_FORMATS[:-1])} or none (torch state_dict); received format={fmt!r}")
    return "torch"


def read_any(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None,
             scope: str = "model", counters: str | None = None) -> Loaded:
    """Any supported weight file, by its format's reader; options given (``overrides``: ``model``,
    ``nr_resnet``, ``conv``, ...) must agree with what the file holds, whatever its format (a reader
    that infers the config uses them where shapes cannot tell; one that stores it is checked here)."""
    loaded = FORMATS[detect_format(path)].read(path, overrides=overrides, polyak_decay=polyak_decay, scope=scope, counters=counters)
    check_agrees(path, overrides or {}, loaded.config)
    return loaded


def check_agrees(path: str, options: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Each option given must agree with the file's config: its kind (``model``) and each key it has."""
    from parity.configs import MODEL_KEY

    held = kind_of(config)
    if MODEL_KEY in options and options[MODEL_KEY] != held.name:
        raise ValueError(f"{path}: holds a {held.what} ({held.name}); the options name {MODEL_KEY}={options[MODEL_KEY]!r}")
    differ = [k for k, v in options.items() if k != MODEL_KEY and k in config and config[k] != v]
    if differ:
        raise ValueError(f"{path}: holds a {held.what} with " + ", ".join(f"{k}={config[k]!r}" for k in differ)
                         + "; the options say " + ", ".join(f"{k}={options[k]!r}" for k in differ))


TF1_PREFIX = re.compile(r"\.ckpt(-\d+)?$")  # model.ckpt, model.ckpt-42: a TF1 Saver prefix to write


def format_for_writing(path: str) -> Format:
    """The format a path is written in, by its name: ``*.weights.h5`` Keras, ``*.torch.safetensors`` a
    torch ``state_dict``, other ``*.safetensors`` canonical, ``*.ckpt`` / ``*.ckpt-N`` (or an existing
    prefix) an original TF1 checkpoint."""
    kind = "tf1" if TF1_PREFIX.search(path) else file_kind(path)
    if kind in ("keras", "tf1"):
        fmt = FORMATS[kind]
    else:
        fmt = FORMATS["torch" if path.lower().endswith(".torch.safetensors") else "canonical"]
    if fmt.write is None:
        raise ValueError(f"{path}: {fmt.cannot_write}")
    return fmt


def write_any(path: str, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any], initialized: bool) -> None:
    """Write canonical tensors in the format ``path`` names (:func:`format_for_writing`)."""
    format_for_writing(path).write(path, Loaded(dict(tensors), dict(config), initialized, ""))


def convert(src: str, dst: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None,
            scope: str = "model", counters: str | None = None) -> str:
    """Convert ``src`` to ``dst`` (formats by name, see :func:`format_for_writing`; a TF1 checkpoint
    prefix as source); returns a one-line summary. ``dst`` naming ``src`` is refused
    (:func:`parity.atomic.check_outputs`)."""
    check_outputs({"destination": dst}, {"source": src})
    fmt = format_for_writing(dst)
    loaded = read_any(src, overrides, polyak_decay, scope=scope, counters=counters)
    fmt.write(dst, loaded)
    dropped = loaded.adam is not None and fmt.name != "tf1"  # only TF1 checkpoints hold the trainer's Adam state
    return (f"converted {src} -> {dst}: {loaded.summary}, config {json.dumps(loaded.config)}, initialized={loaded.initialized}"
            + ("; Adam's state not written (the format holds none)" if dropped else ""))
