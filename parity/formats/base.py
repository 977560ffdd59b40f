"""What every weight format shares: the :class:`Loaded` a reader returns and a writer takes, the
:class:`Format` entry each format module registers, and telling file kinds apart by name.

Below every format module; imports no framework. A format module (``canonical``, ``torch_file``,
``keras``, ``tf1``) defines ``FORMAT = Format(...)``; :mod:`parity.formats` lists them, detects which
one reads a path, and converts between them.

Room for training checkpoints: a reader returns and a writer takes one :class:`Loaded`, so state that
a training checkpoint adds (optimiser slots, step, learning rate, data position, RNG states) becomes
fields of it, read and written by the formats that can hold them (the canonical file, TF1
checkpoints) and refused by name by those that cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle")


@dataclass(frozen=True)
class Loaded:
    """What a reader returns: canonical tensors (TF1 names, TF layout), the config (of its kind,
    :mod:`parity.kinds`), whether the init has run, a one-line account of what was read, and Adam's
    state under the original's names where the file holds the original trainer's
    (``<name>_adam_mg``, ``<name>_adam_v``, ``adam_t``; training checkpoints, TF1 checkpoints)."""

    tensors: dict[str, np.ndarray]
    config: dict[str, Any]
    initialized: bool
    summary: str
    adam: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Format:
    """One weight format: its name (as :func:`parity.formats.detect_format` returns it), its reader
    (path and the keyword options ``overrides``, ``polyak_decay``, ``scope``, ``counters``, of which
    it ignores those it does not need) and its writer (path, :class:`Loaded`), or ``None`` with the
    reason it cannot write."""

    name: str
    read: Callable[..., Loaded]
    write: Callable[[str, Loaded], None] | None
    cannot_write: str = ""


def file_kind(path: str) -> str:
    """The file kind by name: ``keras``, ``safetensors`` or ``tf1`` (pickles refused)."""
    p = path.lower()
    if p.endswith(PICKLE_SUFFIXES):
        raise ValueError(f"{path}: pickle files are refused (never unpickled); save a torch state_dict with safetensors instead")
    if p.endswith(".weights.h5"):
        return "keras"
    if p.endswith(".safetensors"):
        return "safetensors"
    from parity.formats.tf1 import is_checkpoint

    if is_checkpoint(path):
        return "tf1"
    raise ValueError(f"{path}: expected a .safetensors, .weights.h5 file or a TF1 checkpoint prefix; received an unknown kind")
