"""The gated residual block the way most PyTorch ports write it: the speed to beat, not a reference.

``nn.Conv2d`` layers under torch's own weight-norm parametrisation
(``torch.nn.utils.parametrizations.weight_norm``, ``g`` per output channel, ``dim=0``), ``F.pad`` for
the down shift, ``torch.cat([x, -x])`` then ``F.elu`` for ``concat_elu``, ``chunk(2)`` for value and
gate. For the down-shifted block without ``a`` or ``h`` it computes the same function as
``torch_impl.GatedResnet`` (same weight norm over ``(in, kh, kw)``), but it has no data-dependent
init, no Polyak averaging, no TF1 names. Used only by ``benchmarks/bench_block.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], dim=1))


class DownShiftedConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, filter_size: tuple[int, int] = (2, 3)) -> None:
        super().__init__()
        self.filter_size = filter_size
        self.conv = weight_norm(nn.Conv2d(in_channels, out_channels, filter_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.filter_size
        return self.conv(F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)))


class IdiomaticGatedResnet(nn.Module):
    def __init__(self, num_filters: int) -> None:
        super().__init__()
        self.conv_input = DownShiftedConv2d(2 * num_filters, num_filters)
        self.conv_output = DownShiftedConv2d(2 * num_filters, 2 * num_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = concat_elu(self.conv_input(concat_elu(x)))
        value, gate = self.conv_output(c1).chunk(2, dim=1)
        return x + value * torch.sigmoid(gate)
