"""Polyak averaging with TensorFlow's ``ExponentialMovingAverage`` semantics, in PyTorch.

The original keeps a shadow for every trainable variable (``V``, ``g``, ``b``, ``hw``):

* each shadow starts as a *copy* of its variable when the average is created (here: when the layer
  is built with ``polyak_decay``, and again at the end of the data-dependent init);
* every update averages, the first one included:
  ``shadow -= (shadow - var) * (1 - decay)``, with ``decay = min(decay, (1 + n) / (10 + n))`` when a
  step count ``n`` is given. TensorFlow forms ``decay`` as a float32 tensor and computes ``1 - decay``
  in float32 (``5.0002337e-4`` for 0.9995, not ``5e-4``) before casting it to the variable's dtype;
  :func:`one_minus_decay` does the same, so shadows are bit-identical to TensorFlow's (pitfalls 25, 26).

``torch.optim.swa_utils.AveragedModel`` differs: it *copies* on its first ``update_parameters``.

Shadows are buffers named ``<param>_ema`` next to their parameter, so they are saved in
``state_dict``, survive ``copy.deepcopy`` and pickling, and a forward with ``use_ema=True`` reads them
without touching the live weights. :func:`update_averages` updates a whole model with a handful of
multi-tensor (``torch._foreach_*``) kernels, one group per device, dtype and decay.
Twin: ``tf_impl.ema``.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from gated_spec import SHADOW_SUFFIX, one_minus_decay

def averaged_pairs(module: nn.Module) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """(owner, variable, shadow) for every averaged parameter under ``module``, in ``modules()`` order."""
    pairs = []
    for owner in module.modules():
        own = getattr(owner, "_own_averages", None)
        if own is not None:
            pairs += [(owner, var, shadow) for var, shadow in own()]
    return pairs


@torch.no_grad()
def update_averages(module: nn.Module, num_updates: int | None = None) -> None:
    """One ``ExponentialMovingAverage.apply`` step over every averaged parameter under ``module``.

    ``shadow -= (shadow - var) * one_minus_decay(decay, num_updates)``, with multi-tensor ops:
    three ``torch._foreach_*`` launches per (device, dtype, decay) group. Run it once per training
    step; the original's order is before the optimiser's update (``torch_impl.train.train_step``).
    """
    groups: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
    for owner, var, shadow in averaged_pairs(module):
        variables, shadows = groups[(var.device, var.dtype, owner.polyak_decay)]
        variables.append(var)
        shadows.append(shadow)
    for (_, _, decay), (variables, shadows) in groups.items():
        diffs = torch._foreach_sub(shadows, variables)
        torch._foreach_mul_(diffs, one_minus_decay(decay, num_updates))
        torch._foreach_sub_(shadows, diffs)


@torch.no_grad()
def reset_averages(module: nn.Module) -> None:
    """Restart every shadow under ``module`` as a copy of its variable (as creating the average does)."""
    pairs = averaged_pairs(module)
    if pairs:
        torch._foreach_copy_([s for _, _, s in pairs], [v for _, v, _ in pairs])
