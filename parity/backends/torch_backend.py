"""The PyTorch side of the parity harness: weights in and out of ``torch_impl``, and one case's tensors.

Imports nothing from TensorFlow. Arrays come in and go out NHWC and in the TF layout; the
permutations live in the weight table (``parity.weights``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np
import torch

import torch_impl
from parity.weights import EMA_SUFFIX, WeightError, check_tensors, normalize_config, weight_table

NAME = "torch"


def _dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


@contextlib.contextmanager
def parity_mode(device: str, tf32: bool = False) -> Iterator[dict[str, Any]]:
    """TF32 off (unless ``tf32``, to show what it costs) and deterministic algorithms on
    (pitfalls 29, 30); yields the settings for the report."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"expected a CUDA device for device={device!r}; torch {torch.__version__} sees none here "
                         f"(built with CUDA: {torch.version.cuda or 'no'})")
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
    )
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield {"torch": torch.__version__, "device": device, "tf32": tf32, "deterministic": True}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.use_deterministic_algorithms(saved[2])


def build(config: Mapping[str, Any], dtype: str = "float32", device: str = "cpu") -> torch_impl.GatedResnet:
    return torch_impl.GatedResnet(**normalize_config(config), device=device, dtype=_dtype(dtype))


def _config(block: torch_impl.GatedResnet) -> dict[str, Any]:
    return block.get_config()


def export_weights(block: torch_impl.GatedResnet) -> dict[str, np.ndarray]:
    """The block's tensors under their TF1 names, TF layout (shadows included when it has them)."""
    state = block.state_dict()
    return {
        row.tf1_name: row.from_torch_layout(state[row.torch_key].detach().cpu().numpy())
        for row in weight_table(_config(block))
    }


def import_weights(block: torch_impl.GatedResnet, tensors: Mapping[str, np.ndarray], initialized: bool = True) -> None:
    """Load canonical tensors; all-or-nothing. Missing shadows (for a block with ``polyak_decay``)
    restart as copies of the raw weights, as creating the average would."""
    table = weight_table(_config(block))
    check_tensors(table, tensors, allow_missing_shadows=True, target_dtype=str(block.conv_input.V.dtype).replace("torch.", ""))
    dtype = block.conv_input.V.dtype
    device = block.conv_input.V.device
    state = {}
    for row in table:
        source = row.tf1_name
        if source not in tensors and source.endswith(EMA_SUFFIX):
            source = source[: -len(EMA_SUFFIX)]
        state[row.torch_key] = torch.as_tensor(row.to_torch_layout(np.asarray(tensors[source])), dtype=dtype, device=device)
    for name, _ in block.named_children():  # conv_input, nin_skip, conv_output
        state[f"{name}.initialized"] = torch.tensor(bool(initialized), device=device)
    block.load_state_dict(state, strict=True)


def _set_live(block: torch_impl.GatedResnet, tensors: Mapping[str, np.ndarray]) -> None:
    with torch.no_grad():
        params = dict(block.named_parameters())
        for row in weight_table(_config(block), shadows=False):
            params[row.torch_key].copy_(torch.as_tensor(row.to_torch_layout(tensors[row.tf1_name])))


def _nchw(a: np.ndarray | None, dtype: torch.dtype, device: str, grad: bool = False) -> torch.Tensor | None:
    if a is None:
        return None
    t = torch.as_tensor(a, dtype=dtype, device=device)
    if t.dim() == 4:
        t = t.permute(0, 3, 1, 2).contiguous()
    return t.requires_grad_(grad)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    return t.cpu().numpy()


def run_case(case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """Every compared tensor of one case, NHWC and TF layout, keyed ``<part>/<name>``."""
    from parity.case import init_outputs, shadow_outputs

    dt = _dtype(dtype)
    arr = case.arrays
    weights = case.weights()
    raw_rows = weight_table(case.config, shadows=False)
    out: dict[str, np.ndarray] = {}

    block = build(case.config, dtype, device)
    import_weights(block, weights, initialized=True)
    block.eval()
    x = _nchw(arr["x"], dt, device, grad=True)
    a = _nchw(arr.get("a"), dt, device, grad=True)
    h = _nchw(arr.get("h"), dt, device, grad=True)

    # Forward stages and gradients.
    stages = block.stages(x, a, h)
    out.update({f"forward/{k}": _nhwc(v) for k, v in stages.items()})
    cot = _nchw(arr["cotangent"], dt, device)
    params = dict(block.named_parameters())
    inputs = {"x": x, "a": a, "h": h}
    wrt = [(f"grad/{k}", t) for k, t in inputs.items() if t is not None]
    wrt += [(f"grad/{r.tf1_name}", params[r.torch_key]) for r in raw_rows]
    # allow_unused: a naive variant (the pitfall gallery) may leave a weight out of the graph; its gradient is 0.
    grads = torch.autograd.grad((stages["out"] * cot).sum(), [t for _, t in wrt], allow_unused=True, materialize_grads=True)
    for (key, _), g in zip(wrt, grads):
        row = next((r for r in raw_rows if f"grad/{r.tf1_name}" == key), None)
        out[key] = _nhwc(g) if row is None else row.from_torch_layout(g.detach().cpu().numpy())

    with torch.no_grad():
        xd, ad, hd = (t.detach() if t is not None else None for t in (x, a, h))
        # Forward with the stored shadows.
        out["ema_forward/out"] = _nhwc(block(xd, ad, hd, use_ema=True))
        # Dropout on the shared keep-mask.
        if "dropout_mask" in arr:
            block.train()
            out["dropout/out"] = _nhwc(block(xd, ad, hd, dropout_mask=_nchw(arr["dropout_mask"], dt, device)))
            block.eval()

        # Data-dependent init from the same V (and hw), on the same batch.
        fresh = build(case.config, dtype, device)
        import_weights(fresh, {r.tf1_name: weights[r.tf1_name] for r in raw_rows}, initialized=False)
        mask = _nchw(arr.get("dropout_mask"), dt, device)
        init_out = _nhwc(fresh.initialize(xd, ad, hd, dropout_mask=mask))
        out.update(init_outputs(export_weights(fresh), case.config))
        out["init/out"] = init_out  # after g, b: in the order the init computes them

        # Polyak averaging over the recorded weight sequence (shadows start as copies of step 0).
        _set_live(block, weights)
        torch_impl.reset_averages(block)
        for live, num_updates in case.ema_schedule():
            _set_live(block, live)
            torch_impl.update_averages(block, num_updates=num_updates)
        out.update(shadow_outputs(export_weights(block), case.config))
        out["ema/out"] = _nhwc(block(xd, ad, hd, use_ema=True))
    return out


def describe(device: str) -> str:
    if device.startswith("cuda"):
        return f"torch {torch.__version__} on {torch.cuda.get_device_name(torch.device(device))}"
    return f"torch {torch.__version__} on CPU"


__all__ = ["NAME", "apply", "build", "describe", "export_weights", "import_weights", "parity_mode", "run_case", "WeightError"]


def apply(block: torch_impl.GatedResnet, inputs: Mapping[str, np.ndarray], use_ema: bool = False, init: bool = False) -> np.ndarray:
    """Run the block (eval mode) or its data-dependent init on NHWC inputs; NHWC output."""
    dt = block.conv_input.V.dtype
    device = str(block.conv_input.V.device)
    x, a, h = (_nchw(inputs.get(k), dt, device) for k in ("x", "a", "h"))
    block.eval()
    with torch.no_grad():
        y = block.initialize(x, a, h) if init else block(x, a, h, use_ema=use_ema)
    return _nhwc(y)


def run_layer_case(case: Any, dtype: str = "float32", device: str = "cpu") -> dict[str, np.ndarray]:
    """One weight-normalised conv layer (``parity.case.LayerCase``): forward, gradients, init."""
    from parity.case import layer_cotangent, layer_weight_rows

    dt = _dtype(dtype)
    cls = getattr(torch_impl, case.class_name)
    rows = layer_weight_rows(case)
    w = case.weights()
    state = {r.torch_key: torch.as_tensor(r.to_torch_layout(w[r.tf1_name]), dtype=dt, device=device) for r in rows}
    layer = cls(case.in_channels, case.num_filters, stride=case.stride, device=device, dtype=dt)
    layer.load_state_dict({**state, "initialized": torch.tensor(True, device=device)})
    x = _nchw(case.arrays["x"], dt, device, grad=True)
    y = layer(x)
    cot = _nchw(layer_cotangent(case, tuple(_nhwc(y).shape)), dt, device)
    grads = torch.autograd.grad((y * cot).sum(), [x, layer.V, layer.g, layer.b])
    out = {"forward/out": _nhwc(y), "grad/x": _nhwc(grads[0])}
    out.update({f"grad/{r.tf1_name}": r.from_torch_layout(g.detach().cpu().numpy()) for r, g in zip(rows, grads[1:])})
    fresh = cls(case.in_channels, case.num_filters, stride=case.stride, device=device, dtype=dt)
    with torch.no_grad():
        fresh.V.copy_(state["V"])
        init_out = fresh.initialize(x.detach())
    out.update({"init/g": fresh.g.detach().cpu().numpy(), "init/b": fresh.b.detach().cpu().numpy(), "init/out": _nhwc(init_out)})
    return out
