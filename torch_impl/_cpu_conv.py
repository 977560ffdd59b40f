"""The CPU stride-1 convolution (float32, float64) as GEMMs over kernel taps: TensorFlow's accuracy, faster.

The original runs ``tf.nn.conv2d`` on an explicitly padded NHWC input. torch's default CPU
convolution (oneDNN, ``mkldnn_convolution``) gives the same numbers only up to a float32 error that,
at PixelCNN++ width (320 input channels, 2x3 kernel: 1920 products per output), is several times
TensorFlow's and fails the parity bound: measured against float64 on the 320->320 conv, batch 8,
32x32, forward 7.8e-6 (TensorFlow 1.2e-6), weight gradient 3.0e-3 at batch 16 (TensorFlow 1.7e-4).
Its weight gradient is also the slow part of the CPU step.

Here the padded input, channels-last in memory, is a flat ``(B * Hp * Wp, C)`` matrix ``X``. Output
``(b, i, j)`` lives at row ``r = (b * Hp + i) * Wp + j`` of a "padded grid" that also has rows for the
``Wp - Wo`` columns (and ``Hp - Ho`` rows) a valid conv does not produce, and kernel tap ``(di, dj)``
reads row ``r + di * Wp + dj`` of ``X``. With ``W_t`` tap ``t``'s ``(O, C)`` slice and ``dY`` the
output gradient on the grid (zero where there is no output):

* forward: ``Y[r] = sum_t X[r + o_t] @ W_t.T``: one accumulating GEMM per tap, in row blocks that stay in cache;
* input gradient: ``dX[r] = sum_t dY[r - o_t] @ W_t``: the same, the other way;
* weight gradient: ``dW_t = dY.T @ X[o_t :]``: one GEMM per tap, on views of ``X`` (no im2col copy);
* bias gradient: ``dY.sum``.

Every entry is still a float32 sum of the same products, now as per-tap partial sums of ``C`` (or
``O``) products; the errors measured on the case above are close to TensorFlow's: forward 1.2e-6 (the
same), input gradient 3.5e-6 (TensorFlow 3.2e-6), weight gradient 2.8e-4 (TensorFlow 1.7e-4). The GEMMs run at
this machine's GEMM rate; see ``benchmarks/bench_block.py`` and the README for the block's speed.

float64 takes the same path, with one change: each tap's product is computed on its own and added,
because MKL's dgemm accumulating into its output (``addmm_``, beta = 1) measured 3x the error of
``mm`` then ``add`` (2.0e-14 vs 6.5e-15 on the 320->160 conv at 8x8; TensorFlow's float64 conv 5.4e-15,
torch's default float64 conv 2.5e-14), enough to fail the float64 bound at PixelCNN++ width.
The forward and the input gradient compute every row of the padded grid, ``Hp * Wp / (Ho * Wo)`` times
the rows they keep (10 % more at 32x32 with a 2x3 kernel); the weight gradient's sums run over the
grid's zero rows too. Per-image row ranges (fewer wasted rows, more GEMM calls) were not measurably
faster on the 2-core machine, and slower at small sizes.

Used by ``torch_impl.layers`` for CPU float32/float64 stride-1 convolutions; everything else (CUDA,
strides, other dtypes) keeps ``F.conv2d``. ``tests/test_cpu_conv.py`` bounds every output and gradient
by the worst-case rounding error of its sum, in both dtypes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

ROW_BLOCK = 1024  # rows per GEMM block of the forward and input gradient, at least (1024 x 320 floats: in L2)
BLOCK_FLOATS = 1 << 18  # narrower outputs take longer blocks, up to this many output values


def takes(x: torch.Tensor) -> bool:
    """Whether an input ``x`` is one this path takes: a 4-d float32 or float64 tensor on the CPU."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4


def applies(x: torch.Tensor, W: torch.Tensor, stride: tuple[int, int]) -> bool:
    """Whether a convolution of ``x`` by ``W`` with ``stride`` takes this path: CPU, float32 or float64, stride 1."""
    return takes(x) and W.dtype == x.dtype and tuple(stride) == (1, 1) and W.dim() == 4


def _compiling() -> bool:
    check = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling
    return bool(check())


def _tap_gemms(src: torch.Tensor, shifts: list[int], mats: list[torch.Tensor]) -> torch.Tensor:
    """``out[r] = sum_t src[r + shifts[t]] @ mats[t]`` over the taps whose row ``r + shifts[t]`` exists,
    for every row of ``src``; taps in order (the first has shift 0), in row blocks whose partial sums
    stay in cache.

    Eager writes each block into one output with ``out=``; under ``torch.compile`` (writes into views of
    one buffer become copies there) and when autograd records this (a backward with ``create_graph``,
    for double backward; ``out=`` is not differentiable) the blocks are fresh tensors joined by ``cat``.
    The GEMM calls, and so the numbers, are the same.
    """
    rows, width = src.shape[0], mats[0].shape[1]
    step = max(ROW_BLOCK, BLOCK_FLOATS // width)
    functional = _compiling() or torch.is_grad_enabled()
    out = None if functional else src.new_empty(rows, width)
    blocks = []
    for begin in range(0, rows, step):
        end = min(begin + step, rows)
        first = src[begin:end]
        acc = torch.mm(first, mats[0]) if out is None else torch.mm(first, mats[0], out=out[begin:end])
        for shift, mat in zip(shifts[1:], mats[1:]):
            lo, hi = max(begin, -shift), min(end, rows - shift)  # the rows whose tap lies inside src
            if lo >= hi:
                continue
            part = src[lo + shift : hi + shift]
            target = acc if (lo, hi) == (begin, end) else acc[lo - begin : hi - begin]
            if acc.dtype == torch.float32:
                target.addmm_(part, mat)
            else:  # float64: MKL's dgemm accumulating into C (beta = 1) measured 3x less accurate than mm + add
                target.add_(torch.mm(part, mat))
        blocks.append(acc)
    if out is not None:
        return out
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


class _ValidConv(torch.autograd.Function):
    """``conv2d(xp, W) + b`` with ``xp`` already padded and channels-last, stride 1, every product as
    GEMMs over taps."""

    @staticmethod
    def forward(ctx: Any, xp: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        B, C, Hp, Wp = xp.shape
        O, _, kh, kw = W.shape
        Ho, Wo = Hp - kh + 1, Wp - kw + 1
        X = xp.permute(0, 2, 3, 1).view(B * Hp * Wp, C)  # xp is channels-last: a view
        taps = [(di, dj) for di in range(kh) for dj in range(kw)]
        Wf = W.permute(2, 3, 1, 0).contiguous()  # (kh, kw, C, O): tap (di, dj)'s matrix is Wf[di, dj]
        grid = _tap_gemms(X, [di * Wp + dj for di, dj in taps], [Wf[t] for t in taps])
        y = grid.view(B, Hp, Wp, O)[:, :Ho, :Wo].permute(0, 3, 1, 2)  # NCHW shape, channels-last strides
        y = y + b.view(1, O, 1, 1) if b is not None else y.contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(xp, W)  # the inputs themselves, so that a double backward reaches them
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xp, W = ctx.saved_tensors
        B, C, Hp, Wp = xp.shape
        O, _, kh, kw = W.shape
        Ho, Wo = dy.shape[2], dy.shape[3]
        rows = B * Hp * Wp
        lead = (kh - 1) * Wp + kw - 1  # the largest tap offset
        taps = [(di, dj) for di in range(kh) for dj in range(kw)]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = dW = db = None
        if need_x or need_w:  # dY on the padded grid, zero where there is no output
            grid = F.pad(dy.permute(0, 2, 3, 1), (0, 0, 0, Wp - Wo, 0, Hp - Ho)).reshape(rows, O)
        if need_w:
            X = xp.permute(0, 2, 3, 1).view(rows, C)  # as in forward
            dYt = grid[: rows - lead].t()  # (O, rows - lead): every row that holds an output
            dWt = torch.stack([torch.mm(dYt, X[di * Wp + dj : di * Wp + dj + rows - lead]) for di, dj in taps])
            dW = dWt.view(kh, kw, O, C).permute(2, 3, 0, 1).contiguous()
        if need_x:
            Wb = W.permute(2, 3, 0, 1).contiguous()  # (kh, kw, O, C)
            dX = _tap_gemms(grid, [-(di * Wp + dj) for di, dj in taps], [Wb[t] for t in taps])
            dx = dX.view(B, Hp, Wp, C).permute(0, 3, 1, 2)  # channels-last, like xp
        if need_b:
            db = dy.sum(dim=(0, 2, 3))
        return dx, dW, db


def valid_conv2d(xp: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(xp, W, b)`` (stride 1, no padding; ``xp`` already padded) computed as above.

    The output has NCHW shape and channels-last memory. Inputs the GEMM form does not cover (a kernel
    larger than the input, mismatched channels, empty tensors) go to ``F.conv2d``, with its errors.
    An NCHW ``xp`` is made channels-last here, outside the autograd function: once, and differentiably
    (the function saves its own inputs, so that a double backward reaches them).
    """
    if xp.shape[1] != W.shape[1] or xp.shape[2] < W.shape[2] or xp.shape[3] < W.shape[3] or xp.numel() == 0:
        return F.conv2d(xp, W, b)
    return _ValidConv.apply(xp.contiguous(memory_format=torch.channels_last), W, b)
