"""The parity run of one block case, written once; each backend module supplies its steps.

What a case computes, in this order (the order the report lists tensors in, so the first failure is
the first stage where a difference shows): the forward stages and the gradients of
``sum(out * cotangent)`` with respect to ``x``, ``a``, ``h`` and every raw weight; the forward with the
stored shadows; dropout on the case's keep-mask; the data-dependent init of a fresh block from the
same ``V`` (and ``hw``) on the same batch (``g``, ``b`` in call order, then its output); and Polyak
averaging over the case's weight sequence (every shadow, then the forward with them).

The steps come from a backend (``parity.backends.interface.Backend``); :func:`run` picks the
runner by the case's type. Arrays in and out are NumPy, NHWC, weights in the TF layout under TF1 names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gated_spec.training import ADAM_SLOTS, slot_name
from parity.backends.interface import Backend
from parity.case import under_prefix
from parity.kinds import KINDS, with_kind
from parity.table import EMA_SUFFIX, weight_table

SAMPLE_TENSOR = "sample/x"  # the images a model case draws with its noise (NHWC), by the naive sampler
CACHED_SAMPLE_TENSOR = "sample/x_cached"  # the same by the cached sampler, compared with the reference's SAMPLE_TENSOR


def _init_outputs(exported: dict[str, np.ndarray], rows: list) -> dict[str, np.ndarray]:
    """``init/<name>`` for every ``g`` and ``b`` of ``rows`` (raw weights in call order) after an init pass."""
    return {f"init/{r.tf1_name}": exported[r.tf1_name] for r in rows if r.tf1_name[-1] in "gb"}


def _shadow_outputs(exported: dict[str, np.ndarray], rows: list) -> dict[str, np.ndarray]:
    """``ema/<name>``: the shadow of every raw weight in ``rows`` after the case's Polyak updates."""
    return {f"ema/{r.tf1_name}": exported[r.tf1_name + EMA_SUFFIX] for r in rows}


def run_case(backend: Backend, case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """Every compared tensor of one block case for ``backend``, keyed ``<part>/<name>``."""
    arr = case.arrays
    weights = case.weights()
    raw_rows = weight_table(case.config, shadows=False)
    out: dict[str, np.ndarray] = {}
    with backend.on_device(device):
        block = backend.build(case.config, dtype, device)
        backend.import_weights(block, weights, initialized=True)
        inputs = backend.inputs(arr, KINDS["block"].inputs, dtype, device, grad=True)

        stages, grads = backend.block_stages_and_gradients(block, inputs, arr["cotangent"], raw_rows)
        out.update({f"forward/{k}": v for k, v in stages.items()})
        out.update({f"grad/{k}": v for k, v in grads.items()})

        out["ema_forward/out"] = backend.block_forward(block, inputs, use_ema=True)
        if "dropout_mask" in arr:
            out["dropout/out"] = backend.block_forward(block, inputs, dropout_mask=arr["dropout_mask"])

        fresh = backend.build(case.config, dtype, device)
        backend.import_weights(fresh, {r.tf1_name: weights[r.tf1_name] for r in raw_rows}, initialized=False)
        init_out = backend.block_initialize(fresh, inputs, arr.get("dropout_mask"))
        out.update(_init_outputs(backend.export_weights(fresh), raw_rows))
        out["init/out"] = init_out  # after g, b: in the order the init computes them

        backend.set_live(block, weights)
        backend.IMPL.reset_averages(block)
        for live, num_updates in case.ema_schedule():
            backend.set_live(block, live)
            backend.IMPL.update_averages(block, num_updates=num_updates)
        out.update(_shadow_outputs(backend.export_weights(block), raw_rows))
        out["ema/out"] = backend.block_forward(block, inputs, use_ema=True)
    return out


def run_layer_case(backend: Backend, case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """One weight-normalised conv layer alone: forward, gradients w.r.t. ``x``, ``V``, ``g``, ``b``, and
    the init pass of a fresh layer from the same ``V`` on the same batch."""
    from parity.case import layer_cotangent, layer_weight_rows

    w = case.weights()
    rows = layer_weight_rows(case)
    with backend.on_device(device):
        layer = backend.build_layer(case, dtype, device, w, initialized=True)
        y, grads = backend.layer_forward_and_gradients(layer, case.arrays["x"], lambda shape: layer_cotangent(case, shape), rows)
        fresh = backend.build_layer(case, dtype, device, {"V": w["V"]}, initialized=False)
        g, b, init_out = backend.layer_initialize(fresh, case.arrays["x"])
    out = {"forward/out": y}
    out.update({f"grad/{k}": v for k, v in grads.items()})
    out.update({"init/g": g, "init/b": b, "init/out": init_out})
    return out


def run_model_case(backend: Backend, case: Any, dtype: str = "float32", device: str = "cpu",
                   cached_draw: bool = True) -> dict[str, np.ndarray]:
    """Every compared tensor of one whole-model case (``parity.case.ModelCase``), in this order: the
    network output, the summed loss and its bits per dimension, the gradients of the loss w.r.t.
    every raw weight in call order (so the first failing one names the first diverging layer), the
    forward on the case's dropout masks, the init pass of a fresh model from the same ``V`` and
    ``hw`` with those masks (``g``, ``b`` in call order, then its output), the Polyak shadows after
    the case's steps and the forward with them, and the images drawn with the case's noise by the naive
    sampler and (``cached_draw``) by the cached one."""
    arr = case.arrays
    weights = case.weights()
    config = with_kind(case.kind, case.config)
    rows = KINDS[case.kind].table(config, shadows=False)
    masks = case.dropout_masks()
    out: dict[str, np.ndarray] = {}
    with backend.on_device(device):
        model = backend.build(config, dtype, device)
        backend.import_weights(model, weights, initialized=True)
        inputs = backend.inputs(arr, KINDS[case.kind].inputs, dtype, device)
        net, loss, grads = backend.model_loss_and_gradients(model, inputs, rows)
        out["forward/out"], out["loss/sum"] = net, np.reshape(loss, (1,))  # (1,): as a record file stores it
        out["loss/bits_per_dim"] = np.reshape(backend.model_bits_per_dim(loss, arr["x"].shape), (1,))
        out.update({f"grad/{k}": v for k, v in grads.items()})
        out["dropout/out"] = backend.model_forward(model, inputs, masks=masks)

        fresh = backend.build(config, dtype, device)
        raw = {r.tf1_name: weights[r.tf1_name] for r in rows}
        backend.import_weights(fresh, raw, initialized=False)
        init_out = backend.model_initialize(fresh, inputs, masks)
        out.update(_init_outputs(backend.export_weights(fresh), rows))
        out["init/out"] = init_out

        backend.IMPL.reset_averages(model)
        for live in case.ema_steps_weights():
            backend.set_live(model, live)
            backend.IMPL.update_averages(model)
        out.update(_shadow_outputs(backend.export_weights(model), rows))
        out["ema/out"] = backend.model_forward(model, inputs, use_ema=True)
        noise = {k: arr[f"noise/{k}"].astype(dtype) for k in ("u_mix", "u_value")}
        h = None if arr.get("h") is None else arr["h"].astype(dtype)
        out[SAMPLE_TENSOR] = backend.sample(model, noise, h, use_ema=True, naive=True)
        if cached_draw:  # every network kind has a cached sampler (docs/sampler.md)
            out[CACHED_SAMPLE_TENSOR] = backend.sample(model, noise, h, use_ema=True)
    return out


def run_training_case(backend: Backend, case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """Both twins' training in lockstep (``parity.case.TrainingCase``): after each step s, in this order,
    ``step_<s>/loss`` (the step's forward, before its update) and for every raw weight in call order
    ``step_<s>/<name>``, its shadow, and Adam's ``<name>_adam_mg`` (and ``_adam_v``): so the first failing
    tensor names the first step, and the first layer, where the twins part. With ``case.init``, step 0
    is the data-dependent init (its weights and shadows; no loss, no Adam state yet). With
    ``case.resynced``, each step after the first starts from the state the case carries for it."""
    config = with_kind(case.kind, case.config)
    rows = KINDS[case.kind].table(config, shadows=False)
    names = {r.tf1_name for r in KINDS[case.kind].table(config)}  # weights and shadows; the rest of a state is Adam's
    out: dict[str, np.ndarray] = {}
    with backend.on_device(device):
        net = backend.build(config, dtype, device)
        backend.import_weights(net, case.weights(), initialized=not case.init)
        optimizer = backend.model_optimizer(net, case.lr, case.lr_decay, case.mom1, case.mom2, case.eps)
        for step, (x, h, masks) in enumerate(case.batches(), 0 if case.init else 1):
            masks = None if masks is None else [m.astype(dtype) for m in masks]
            h = None if h is None else h.astype(dtype)
            if step == 0:
                backend.model_initialize(net, backend.inputs({"x": x, "h": h}, KINDS[case.kind].inputs, dtype, device), masks)
            else:
                if case.resynced and step > 1:  # from the reference's state after the step before
                    state = under_prefix(case.arrays, f"state/{step - 1}/")
                    backend.import_weights(net, {k: v for k, v in state.items() if k in names}, initialized=True)
                    backend.model_set_optimizer_state(net, optimizer, {k: v for k, v in state.items() if k not in names})
                loss = backend.model_train_step(net, optimizer, x.astype(dtype), h, masks, case.ema)
                out[f"step_{step}/loss"] = np.array([loss], np.float64)
            weights, adam = backend.export_weights(net), ({} if step == 0 else backend.model_optimizer_state(net, optimizer))
            for r in rows:
                out[f"step_{step}/{r.tf1_name}"] = weights[r.tf1_name]
                out[f"step_{step}/{r.tf1_name}{EMA_SUFFIX}"] = weights[r.tf1_name + EMA_SUFFIX]
                for slot in ADAM_SLOTS:
                    if slot_name(r.tf1_name, slot) in adam:
                        out[f"step_{step}/{slot_name(r.tf1_name, slot)}"] = adam[slot_name(r.tf1_name, slot)]
    return out


def run(backend: Backend, case: Any, dtype: str = "float32", device: str = "cpu", cached_draw: bool = True) -> dict[str, np.ndarray]:
    """Every compared tensor of one case of any type (block, layer, network or training), keyed ``<part>/<name>``;
    ``cached_draw``: a network case draws with the cached sampler too (:func:`run_model_case`)."""
    from parity.case import LayerCase, ModelCase, TrainingCase

    runner = (run_layer_case if isinstance(case, LayerCase) else run_model_case if isinstance(case, ModelCase)
              else run_training_case if isinstance(case, TrainingCase) else run_case)
    if runner is run_model_case:
        return run_model_case(backend, case, dtype, device, cached_draw)
    return runner(backend, case, dtype, device)
