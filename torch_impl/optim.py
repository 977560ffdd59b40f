"""The original's optimiser and schedule as PyTorch's own: ``OriginalAdam`` (a ``torch.optim.Optimizer``)
and ``original_schedule`` (a ``LambdaLR``). Twin: ``tf_impl.optim``.

``nn.adam_updates`` of the original differs from ``torch.optim.Adam`` (pitfall: Adam's epsilon): the
epsilon sits *inside* the square root, on the bias-corrected second moment,

    v = mom1 v + (1 - mom1) g;  mg = mom2 mg + (1 - mom2) g^2
    p -= lr * (v / (1 - mom1^t)) / sqrt(mg / (1 - mom2^t) + eps)

with ``t`` counting from 1, and with ``mom1 = 0`` no first moment at all. Each operation is written as
the original graph orders it, in the parameters' dtype, with the constants rounded as the graph
rounds them (``gated_spec.training``). The state per parameter is ``t``, ``mg`` (second moment) and
``v`` (first moment), the names of the original's variables.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from gated_spec.training import (DEFAULT_EPS, DEFAULT_LR, DEFAULT_LR_DECAY, DEFAULT_MOM1, DEFAULT_MOM2, adam_constants,
                                 bias_correction, learning_rate)


class OriginalAdam(torch.optim.Optimizer):
    """``nn.adam_updates`` as a ``torch.optim.Optimizer`` (``step``, ``zero_grad``, ``state_dict``)."""

    def __init__(self, params: Iterable[Any], lr: float = DEFAULT_LR, mom1: float = DEFAULT_MOM1, mom2: float = DEFAULT_MOM2,
                 eps: float = DEFAULT_EPS) -> None:
        for name, value, upper in (("mom1", mom1, 1.0), ("mom2", mom2, 1.0)):
            if not (isinstance(value, (int, float)) and 0.0 <= value < upper):
                raise ValueError(f"Expected {name} in [0, 1). Received: {name}={value!r}")
        if not (isinstance(eps, (int, float)) and eps >= 0.0):
            raise ValueError(f"Expected eps >= 0. Received: eps={eps!r}")
        if not (isinstance(lr, (int, float)) and lr >= 0.0):
            raise ValueError(f"Expected lr >= 0. Received: lr={lr!r}")
        super().__init__(params, {"lr": lr, "mom1": mom1, "mom2": mom2, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom1, mom2 = group["lr"], group["mom1"], group["mom2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"] = 1
                    state["mg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if mom1 > 0:
                        state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                dtype = str(p.dtype).replace("torch.", "")
                c1, c1m, c2, c2m, eps = adam_constants(mom1, mom2, group["eps"], dtype)
                g, t = p.grad, state["t"]
                if mom1 > 0:
                    v_t = state["v"] * c1 + g * c1m
                    v_hat = v_t / bias_correction(mom1, t, dtype)
                    state["v"].copy_(v_t)
                else:
                    v_hat = g
                mg_t = state["mg"] * c2 + (g * g) * c2m
                mg_hat = mg_t / bias_correction(mom2, t, dtype)
                g_t = v_hat / torch.sqrt(mg_hat + eps)
                p.copy_(p - lr * g_t)
                state["mg"].copy_(mg_t)
                state["t"] = t + 1
        return loss


def original_schedule(optimizer: torch.optim.Optimizer, lr_decay: float = DEFAULT_LR_DECAY,
                      last_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """train.py's schedule: step s (1-based) runs at ``lr * lr_decay ** s`` (``gated_spec.training``);
    call its ``step()`` after each ``optimizer.step()``. ``last_step``: the steps already taken (resuming)."""
    if not (isinstance(lr_decay, (int, float)) and lr_decay > 0):
        raise ValueError(f"Expected lr_decay > 0. Received: lr_decay={lr_decay!r}")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate(1.0, lr_decay, s + 1),
                                             last_epoch=last_step - 1 if last_step else -1)
