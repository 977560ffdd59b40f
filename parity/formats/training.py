"""Training checkpoints: the canonical weights and shadows plus everything a run needs to go on.

One safetensors file (``DIR/checkpoint.safetensors``, written by ``train``): the network's tensors
under their original names as in the canonical file, Adam's state under the names the original code
gives it (``<name>_adam_mg``, ``<name>_adam_v``, the counter ``adam_t`` = steps taken + 1, shape (1,)), and in
the metadata (``format=gated-resnet-parity-train/1``) the config, the step, the optimiser's and the
schedule's settings, the Polyak order, the data's size and digest, the batch sizes, the seed (the
data order and the dropout masks are functions of the seed and the step: that is their RNG state)
and the backend that wrote it. Read as a weight file (``run``, ``sample``, ``convert``), it gives the
network's tensors. Checked from the header before any tensor is read, like the canonical file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from gated_spec.training import ADAM_COUNTER, ADAM_SLOTS, slot_name
from parity.errors import WeightError
from parity.formats.base import Format, Loaded
from parity.formats.safetensors_io import loads_metadata, read_safetensors, read_safetensors_header, write_safetensors
from parity.kinds import check_declared, kind_of, normalize, table_for
from parity.table import WeightRow, check_tensors, tensor_summary

TRAIN_TAG = "gated-resnet-parity-train/1"
SLOT_SUFFIXES = tuple(slot_name("", slot) for slot in ADAM_SLOTS)  # "_adam_mg", "_adam_v"
COUNTER = ADAM_COUNTER


def slot_table(config: Mapping[str, Any], first_moment: bool) -> list[WeightRow]:
    """Adam's tensors for a config: for each raw weight its second moment and (with ``mom1 > 0``) first."""
    suffixes = SLOT_SUFFIXES if first_moment else SLOT_SUFFIXES[:1]
    return [WeightRow(r.tf1_name + s, r.keras_path + s, r.torch_key + s, r.shape, r.torch_perm)
            for r in table_for(config, shadows=False) for s in suffixes]


def write_checkpoint(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], slots: Mapping[str, np.ndarray],
                     config: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Write a training checkpoint (atomically: the old one stays whole until the new one is)."""
    c = normalize(config)
    check_tensors(table_for(c), tensors, where="tensors to save", what=kind_of(c).what)
    check_tensors(slot_table(c, float(state["mom1"]) > 0), {k: v for k, v in slots.items() if k != COUNTER},
                  where="Adam's state to save", what=kind_of(c).what)
    if np.shape(slots.get(COUNTER)) != (1,) or float(slots[COUNTER][0]) != int(state["step"]) + 1:
        raise ValueError(f"expected {COUNTER} [step + 1] = [{int(state['step']) + 1}]; received {slots.get(COUNTER)}")
    metadata = {"format": TRAIN_TAG, "config": json.dumps(c), "initialized": "true", "state": json.dumps(dict(state))}
    arrays = {**{k: np.ascontiguousarray(v) for k, v in tensors.items()},
              **{k: np.ascontiguousarray(v) for k, v in slots.items()}}
    write_safetensors(path, arrays, metadata)


def read_checkpoint(path: str | os.PathLike) -> tuple[Loaded, dict[str, np.ndarray], dict[str, Any]]:
    """(the network's tensors as :class:`Loaded`, Adam's tensors, the run's state) of a training checkpoint."""
    header, metadata = read_safetensors_header(path)
    if metadata.get("format") != TRAIN_TAG:
        raise ValueError(f"{path}: expected a training checkpoint (metadata format={TRAIN_TAG!r}); received "
                         f"format={metadata.get('format')!r}")
    try:
        config = normalize(loads_metadata(metadata["config"]))
        state = loads_metadata(metadata["state"])
        step, mom1 = int(state["step"]), float(state["mom1"])
    except (KeyError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: expected metadata 'config' and 'state' (JSON, with step and mom1); could not read them ({exc})") from None
    what = kind_of(config).what
    check_declared(config, len(header), str(path))
    table = table_for(config)
    slots = slot_table(config, mom1 > 0)
    where = f"{path} (a training checkpoint against the config in its metadata: {json.dumps(config)})"
    weights_header = {k: v for k, v in header.items() if not (k.endswith(SLOT_SUFFIXES) or k == COUNTER)}
    check_tensors(table, weights_header, where=where, values=False, what=what)
    check_tensors(slots, {k: v for k, v in header.items() if k.endswith(SLOT_SUFFIXES)}, where=where, values=False, what=what)
    if tuple(np.shape(header.get(COUNTER, np.zeros(0)))) != (1,):
        raise WeightError([f"expected {COUNTER!r}, Adam's counter, of shape (1,)"], where, what)
    arrays, _ = read_safetensors(path)
    weights = {k: arrays[k] for k in weights_header}
    check_tensors(table, weights, where=where, what=what)
    adam = {k: v for k, v in arrays.items() if k not in weights}
    check_tensors(slots, {k: v for k, v in adam.items() if k != COUNTER}, where=where, what=what)
    counter = float(adam[COUNTER][0])
    if counter != step + 1:
        raise WeightError([f"{COUNTER} is {counter}; the state says step {step} (expected {step + 1})"], where, what)
    return Loaded(weights, config, True, tensor_summary(weights) + f", Adam's state at step {step}"), adam, state


def read_training(path: str, **_: Any) -> Loaded:
    """A training checkpoint read as a weight file: the network's tensors, and Adam's state."""
    loaded, adam, _ = read_checkpoint(path)
    return dataclasses.replace(loaded, adam=adam)


FORMAT = Format("training", read_training, None,
                cannot_write="training checkpoints are written by `train`; convert to .safetensors for a model file")


