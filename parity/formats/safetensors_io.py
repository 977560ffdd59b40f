"""Reading and writing safetensors files for every format built on them (canonical, torch
``state_dict``, training checkpoints, records): the header first, without tensor data, and never a
pickle; every write atomic (:mod:`parity.atomic`), a failed one an ``OSError`` (full disk)."""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

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
    :func:`parity.table.check_tensors`) before a file that declares a huge tensor costs any RAM."""
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


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write ``tensors`` (made contiguous) and ``metadata`` atomically. safetensors reports a failed
    write (a full disk, a file-size limit) as its own ``SafetensorError``; it comes out as the
    ``OSError`` it is, with safetensors' message, and the destination keeps its old content."""
    from safetensors.numpy import save_file

    from parity.atomic import atomic_path

    with atomic_path(path) as tmp:
        try:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=dict(metadata))
        except Exception as exc:  # SafetensorError has no OSError base
            if isinstance(exc, OSError) or type(exc).__name__ != "SafetensorError":
                raise
            raise OSError(f"{os.fspath(path)}: could not write it ({exc})") from None


def loads_metadata(text: str) -> Any:
    """A JSON value from a file's metadata. A nesting deeper than Python's recursion limit
    (``[[[[...`` a few KB long) is a ``json.JSONDecodeError`` like any other bad JSON, not a
    ``RecursionError`` traceback."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", str(text)[:40], 0) from None
