"""The PyTorch side of the parity harness: weights in and out of ``torch_impl``, and one case's tensors.

Imports nothing from TensorFlow. Arrays come in and go out NHWC and in the TF layout; the
permutations live in the weight table (``parity.table``). Implements ``parity.backends.interface.Backend``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from gated_spec.training import ADAM_COUNTER, ADAM_SLOTS, slot_name
import torch_impl
from parity.kinds import kind_of, kind_of_net, table_for, with_kind
from parity.table import EMA_SUFFIX, check_tensors

IMPL = torch_impl  # the twin this backend drives (parity.protocol calls its Polyak updates)
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


def build(config: Mapping[str, Any], dtype: str = "float32", device: str = "cpu") -> Any:
    kind = kind_of(config)
    return getattr(torch_impl, kind.twin_class)(**kind.args(config), device=device, dtype=_dtype(dtype))


def config_of(net: Any) -> dict[str, Any]:
    kind = kind_of_net(net)
    return with_kind(kind.name, net.config) if kind.network else net.get_config()


def _param0(net: Any) -> torch.Tensor:
    """The net's first parameter: where its dtype and device are read (all its weights share them)."""
    return next(net.parameters())


def _owned(t: torch.Tensor) -> np.ndarray:
    """A copy of a weight or a state tensor as NumPy: ``.numpy()`` of a CPU tensor shares its memory,
    so an exported array would change with the next step."""
    return t.detach().cpu().numpy().copy()


def export_weights(net: Any) -> dict[str, np.ndarray]:
    """The net's tensors under their TF1 names, TF layout (shadows included when it has them)."""
    state = net.state_dict()
    return {row.tf1_name: row.from_torch_layout(_owned(state[row.torch_key])) for row in table_for(config_of(net))}


def import_weights(net: Any, tensors: Mapping[str, np.ndarray], initialized: bool = True) -> None:
    """Load canonical tensors; all-or-nothing. Missing shadows (for a net with ``polyak_decay``)
    restart as copies of the raw weights, as creating the average would."""
    config = config_of(net)
    table = table_for(config)
    dtype, device = _param0(net).dtype, _param0(net).device
    check_tensors(table, tensors, allow_missing_shadows=True, target_dtype=str(dtype).replace("torch.", ""),
                  what=kind_of(config).what)
    state = {}
    for row in table:
        source = row.tf1_name if row.tf1_name in tensors else row.tf1_name[: -len(EMA_SUFFIX)]
        state[row.torch_key] = torch.as_tensor(row.to_torch_layout(np.asarray(tensors[source])), dtype=dtype, device=device)
    for key in net.state_dict():
        if key.endswith(".initialized"):
            state[key] = torch.tensor(bool(initialized), device=device)
    net.load_state_dict(state, strict=True)


def set_live(net: Any, tensors: Mapping[str, np.ndarray]) -> None:
    """Assign the raw weights (TF1 names, TF layout); shadows untouched."""
    with torch.no_grad():
        params = dict(net.named_parameters())
        for row in table_for(config_of(net), shadows=False):
            params[row.torch_key].copy_(torch.as_tensor(row.to_torch_layout(tensors[row.tf1_name])))


def to_torch(a: np.ndarray | None, dtype: torch.dtype, device: str, grad: bool = False) -> torch.Tensor | None:
    """An NHWC (or any non-4-D) array as a torch tensor: 4-D arrays become NCHW (permute, pitfall 1)."""
    if a is None:
        return None
    t = torch.as_tensor(a, dtype=dtype, device=device)
    if t.dim() == 4:
        t = t.permute(0, 3, 1, 2).contiguous()
    return t.requires_grad_(grad)


def to_tensor(a: np.ndarray | None, dtype: str, device: str = "cpu", grad: bool = False) -> torch.Tensor | None:
    """:func:`to_torch` with the dtype by name (the interface's adapter)."""
    return to_torch(a, _dtype(dtype), device, grad)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A torch tensor as a NumPy array, 4-D ones back to NHWC."""
    t = t.detach()
    if t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    return t.cpu().numpy()


def on_device(device: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()  # torch places by the tensors' device


def inputs(arrays: Mapping[str, np.ndarray], names: Sequence[str], dtype: str, device: str,
           grad: bool = False) -> dict[str, torch.Tensor | None]:
    """``names`` as NCHW tensors of ``dtype`` (recording gradients with ``grad``), ``None`` where absent."""
    return {k: to_torch(arrays.get(k), _dtype(dtype), device, grad=grad) for k in names}


def describe(device: str) -> str:
    if device.startswith("cuda"):
        if not torch.cuda.is_available():  # the same one-line refusal as parity_mode, which runs after the report's header
            raise ValueError(f"expected a CUDA device for device={device!r}; torch {torch.__version__} sees none here "
                             f"(built with CUDA: {torch.version.cuda or 'no'})")
        return f"torch {torch.__version__} on {torch.cuda.get_device_name(torch.device(device))}"
    return f"torch {torch.__version__} on CPU"


@torch.no_grad()
def apply(net: Any, inputs: Mapping[str, np.ndarray], use_ema: bool = False, init: bool = False) -> dict[str, np.ndarray]:
    """The net (eval mode) or its init pass on NHWC inputs: ``out`` NHWC, and for a network ``loss``,
    the original's summed loss of ``x`` under ``out``, as a float64 scalar."""
    kind = kind_of(config_of(net))
    p = _param0(net)
    given = [to_torch(inputs.get(k), p.dtype, str(p.device)) for k in kind.inputs]
    net.eval()
    out = net.initialize(*given) if init else net(*given, use_ema=use_ema)
    if not kind.network:
        return {"out": to_numpy(out)}
    from torch_impl.mixture import discretized_mix_logistic_loss

    return {"out": to_numpy(out), "loss": np.float64(discretized_mix_logistic_loss(given[0], out).item())}


def sample(net: Any, noise: Mapping[str, np.ndarray], h: np.ndarray | None = None, use_ema: bool = False,
           progress: bool = False, naive: bool = False) -> np.ndarray:
    """Images (B, H, W, 3) drawn with the given ``u_mix`` and ``u_value`` (NHWC): by the cached sampler
    where the net has one (``torch_impl.fast_sample``, PixelCNN++ and PixelSNAIL), by the naive one with ``naive``."""
    from torch_impl.fast_sample import sample as cached
    from torch_impl.mixture import sample as naive_draw

    draw = cached if not naive and isinstance(net, (torch_impl.PixelCNNpp, torch_impl.PixelSNAIL)) else naive_draw

    dt, device = _param0(net).dtype, str(_param0(net).device)
    u_mix = torch.as_tensor(noise["u_mix"], dtype=dt, device=device)
    B, H, W, _ = u_mix.shape
    return to_numpy(draw(net, B, H, W, to_torch(h, dt, device), u_mix=u_mix, use_ema=use_ema, progress=progress,
                         u_value=torch.as_tensor(noise["u_value"], dtype=dt, device=device)))


# -- a block's parity steps ----------------------------------------------------------------------
def block_stages_and_gradients(block: torch_impl.GatedResnet, given: Mapping[str, torch.Tensor | None], cotangent: np.ndarray,
                         rows: list) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The forward stages (eval mode), and the gradients of ``sum(out * cotangent)`` w.r.t. the inputs
    and ``rows``' weights, NHWC and in the TF layout."""
    block.eval()
    stages = block.stages(given["x"], given["a"], given["h"])
    cot = to_torch(cotangent, block.conv_input.V.dtype, str(block.conv_input.V.device))
    params = dict(block.named_parameters())
    wrt = [(k, t, None) for k, t in given.items() if t is not None] + [(r.tf1_name, params[r.torch_key], r) for r in rows]
    # allow_unused: a naive variant (the pitfall gallery) may leave a weight out of the graph; its gradient is 0.
    grads = torch.autograd.grad((stages["out"] * cot).sum(), [t for _, t, _ in wrt], allow_unused=True,
                                materialize_grads=True)
    return ({k: to_numpy(v) for k, v in stages.items()},
            {k: to_numpy(g) if row is None else row.from_torch_layout(g.detach().cpu().numpy()) for (k, _, row), g in zip(wrt, grads)})


def _detached(given: Mapping[str, torch.Tensor | None]) -> list[torch.Tensor | None]:
    return [None if given[k] is None else given[k].detach() for k in ("x", "a", "h")]


@torch.no_grad()
def block_forward(block: torch_impl.GatedResnet, given: Mapping[str, torch.Tensor | None], use_ema: bool = False,
            dropout_mask: np.ndarray | None = None) -> np.ndarray:
    """Inference (eval mode), or with ``dropout_mask`` a training-mode forward on that keep-mask."""
    x, a, h = _detached(given)
    if dropout_mask is None:
        block.eval()
        return to_numpy(block(x, a, h, use_ema=use_ema))
    block.train()
    try:
        return to_numpy(block(x, a, h, use_ema=use_ema, dropout_mask=to_torch(dropout_mask, x.dtype, str(x.device))))
    finally:
        block.eval()


@torch.no_grad()
def block_initialize(block: torch_impl.GatedResnet, given: Mapping[str, torch.Tensor | None], dropout_mask: np.ndarray | None) -> np.ndarray:
    x, a, h = _detached(given)
    return to_numpy(block.initialize(x, a, h, dropout_mask=to_torch(dropout_mask, x.dtype, str(x.device))))


# -- a network's parity steps (torch_impl.model.PixelCNNpp) --------------------------------------------
def _masks(model: Any, masks: Any) -> list[torch.Tensor] | None:
    if masks is None:
        return None
    return [to_torch(m, _param0(model).dtype, str(_param0(model).device)) for m in masks]


def model_loss_and_gradients(model: Any, given: Mapping[str, Any], rows: list) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The network output (eval mode), the summed loss, and its gradients w.r.t. ``rows``' weights (TF layout)."""
    from torch_impl.mixture import discretized_mix_logistic_loss

    model.eval()
    params = dict(model.named_parameters())
    out = model(given["x"], given["h"])
    loss = discretized_mix_logistic_loss(given["x"], out)
    grads = torch.autograd.grad(loss, [params[r.torch_key] for r in rows])
    return (to_numpy(out), loss.detach().cpu().numpy(),
            {r.tf1_name: r.from_torch_layout(g.detach().cpu().numpy()) for r, g in zip(rows, grads)})


def model_bits_per_dim(loss: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """``torch_impl.mixture.bits_per_dim`` of the summed loss over images of NHWC shape ``x_shape``."""
    from torch_impl import mixture

    B, H, W, _ = x_shape
    return mixture.bits_per_dim(torch.as_tensor(loss), B, H, W).numpy()


@torch.no_grad()
def model_forward(model: Any, given: Mapping[str, Any], use_ema: bool = False, masks: Any = None) -> np.ndarray:
    model.eval()
    return to_numpy(model(given["x"], given["h"], use_ema=use_ema, dropout_masks=_masks(model, masks)))


@torch.no_grad()
def model_initialize(model: Any, given: Mapping[str, Any], masks: Any = None) -> np.ndarray:
    return to_numpy(model.initialize(given["x"], given["h"], dropout_masks=_masks(model, masks)))


# -- one weight-normalised layer -------------------------------------------------------------------
def build_layer(case: Any, dtype: str, device: str, weights: Mapping[str, np.ndarray], initialized: bool) -> Any:
    """The case's layer with ``weights`` (``V``, and ``g``, ``b`` where given) in torch's layout; a
    complete set goes through the layer's validated ``load_state_dict``."""
    from parity.case import layer_weight_rows

    dt = _dtype(dtype)
    rows = [r for r in layer_weight_rows(case) if r.tf1_name in weights]
    state = {r.torch_key: torch.as_tensor(r.to_torch_layout(weights[r.tf1_name]), dtype=dt, device=device) for r in rows}
    layer = getattr(torch_impl, case.class_name)(case.in_channels, case.num_filters, stride=case.stride, device=device, dtype=dt)
    if initialized:
        layer.load_state_dict({**state, "initialized": torch.tensor(True, device=device)})
    else:
        with torch.no_grad():
            for name, value in state.items():
                getattr(layer, name).copy_(value)
    return layer


def layer_forward_and_gradients(layer: Any, x: np.ndarray, cotangent_for: Any, rows: list) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The layer's output, and the gradients of ``sum(y * cotangent)`` w.r.t. ``x`` and ``rows``' ``V``,
    ``g``, ``b`` (NHWC, TF layout)."""
    xt = to_torch(x, layer.V.dtype, str(layer.V.device), grad=True)
    y = layer(xt)
    cot = to_torch(cotangent_for(tuple(to_numpy(y).shape)), layer.V.dtype, str(layer.V.device))
    grads = torch.autograd.grad((y * cot).sum(), [xt, *(getattr(layer, r.torch_key) for r in rows)])
    out = {"x": to_numpy(grads[0])}
    out.update({r.tf1_name: r.from_torch_layout(g.detach().cpu().numpy()) for r, g in zip(rows, grads[1:])})
    return to_numpy(y), out


@torch.no_grad()
def layer_initialize(layer: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g, b, output) of the layer's init pass on ``x``."""
    out = layer.initialize(to_torch(x, layer.V.dtype, str(layer.V.device)))
    return _owned(layer.g), _owned(layer.b), to_numpy(out)


# -- training (torch_impl.optim, torch_impl.train) ----------------------------------------------------


def model_optimizer(model: Any, lr: float, lr_decay: float, mom1: float, mom2: float, eps: float) -> Any:
    """``(OriginalAdam, its LambdaLR schedule)`` over the network's parameters: train.py's optimiser."""
    from torch_impl.optim import OriginalAdam, original_schedule

    optimizer = OriginalAdam(model.parameters(), lr=lr, mom1=mom1, mom2=mom2, eps=eps)
    return optimizer, original_schedule(optimizer, lr_decay)


def model_train_step(model: Any, optimizer: Any, x: np.ndarray, h: np.ndarray | None, masks: Any, ema: str) -> float:
    """One original train step on NHWC ``x`` with the given keep-masks; the step's summed loss."""
    from torch_impl.train import train_step

    adam, schedule = optimizer
    dt, device = _param0(model).dtype, str(_param0(model).device)
    loss = train_step(model, adam, to_torch(x, dt, device), to_torch(h, dt, device), dropout_masks=_masks(model, masks),
                      ema=ema, scheduler=schedule)
    return float(loss)


def model_optimizer_state(model: Any, optimizer: Any) -> dict[str, np.ndarray]:
    """Adam's state under the original's names (TF layout): ``<name>_adam_mg``, ``<name>_adam_v``, and
    ``adam_t`` (the counter, steps taken + 1, as a one-element vector)."""
    adam, _ = optimizer
    params = dict(model.named_parameters())
    out: dict[str, np.ndarray] = {}
    t = 1
    for row in table_for(config_of(model), shadows=False):
        state = adam.state.get(params[row.torch_key], {})
        t = state.get("t", t)
        for slot in ADAM_SLOTS:
            if slot in state:
                out[slot_name(row.tf1_name, slot)] = row.from_torch_layout(_owned(state[slot]))
    out[ADAM_COUNTER] = np.array([t], np.float64)
    return out


def model_set_optimizer_state(model: Any, optimizer: Any, tensors: Mapping[str, np.ndarray]) -> None:
    """Adam's state and the schedule's position from :func:`model_optimizer_state`'s tensors."""
    adam, schedule = optimizer
    t = int(np.asarray(tensors[ADAM_COUNTER]).reshape(-1)[0])
    params = dict(model.named_parameters())
    for row in table_for(config_of(model), shadows=False):
        p = params[row.torch_key]
        state = {"t": t}
        for slot in ADAM_SLOTS:
            name = slot_name(row.tf1_name, slot)
            if name in tensors:
                state[slot] = torch.tensor(row.to_torch_layout(np.asarray(tensors[name])), dtype=p.dtype, device=p.device)  # a copy
        adam.state[p] = state
    schedule.last_epoch = t - 1  # the steps taken: the next runs at step t's rate
    for group, base, factor in zip(adam.param_groups, schedule.base_lrs, schedule.lr_lambdas):
        group["lr"] = base * factor(t - 1)
    schedule._last_lr = [group["lr"] for group in adam.param_groups]  # what get_last_lr() reports
