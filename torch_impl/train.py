"""One training step of the original (``train.py``): the summed loss, its gradients, Adam, and the
Polyak update in the original's order. Twin: ``tf_impl.train``."""

from __future__ import annotations

from typing import Sequence

import torch

from gated_spec.training import DEFAULT_EMA_ORDER, EMA_ORDERS
from torch_impl.ema import update_averages
from torch_impl.mixture import discretized_mix_logistic_loss


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, h: torch.Tensor | None = None, *,
               dropout_masks: Sequence[torch.Tensor] | None = None, ema: str = DEFAULT_EMA_ORDER,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> torch.Tensor:
    """One step on the batch ``x`` (NCHW in [-1, 1]): the forward in ``train()`` mode (dropout drawn by
    torch's RNG, or on ``dropout_masks``), the summed loss in nats, its gradients, ``optimizer.step()``,
    and the Polyak update of every shadow from the parameters before the update (``ema="pre"``, the
    original's order) or after it (``"post"``); then ``scheduler.step()`` where given. Returns the
    step's loss (the forward before the update), detached."""
    if ema not in EMA_ORDERS:
        raise ValueError(f"Expected ema to be one of {list(EMA_ORDERS)}. Received: ema={ema!r}")
    model.train()
    loss = discretized_mix_logistic_loss(x, model(x, h, dropout_masks=dropout_masks))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if ema == "pre":
        update_averages(model)
    optimizer.step()
    if ema == "post":
        update_averages(model)
    if scheduler is not None:
        scheduler.step()
    return loss.detach()
