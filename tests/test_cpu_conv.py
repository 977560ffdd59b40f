"""``torch_impl._cpu_conv``: the CPU float32/float64 stride-1 convolution written as GEMMs over kernel taps.

Every output and gradient is checked against a float64 convolution of the same float32 values under
the textbook worst-case bound for a float32 sum of ``n`` products, ``gamma_n * sum|a_i * b_i|`` with
``gamma_n = n u / (1 - n u)``, ``u = 2**-24`` (Higham, *Accuracy and Stability of Numerical
Algorithms*, 3.1), plus one rounding of the result for the bias add, plus the same bound in float64
for the float64 ``F.conv2d`` it is compared with (which matters in the float64 runs). ``sum|a_i b_i|``
is the same convolution (or gradient) run in float64 on absolute values. A wrong tap offset, a missing tap or a
gradient on the wrong rows is off by O(1), far beyond this bound.
"""

from __future__ import annotations

import pytest

from tests.conftest import HAVE

pytestmark = pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}


def _grads(x, W, b, dy):
    import torch
    import torch.nn.functional as F

    x, W, b = (t.detach().clone().requires_grad_(True) for t in (x, W, b))
    y = F.conv2d(x, W, b)
    gx, gW, gb = torch.autograd.grad(y, (x, W, b), dy)
    return y.detach(), gx, gW, gb


SHAPES = [  # (B, C, O, Hp, Wp, kh, kw): padded input, kernel
    (2, 8, 6, 6, 8, 2, 3),  # down_shifted
    (3, 5, 7, 5, 4, 2, 2),  # down_right_shifted
    (1, 4, 3, 7, 7, 3, 3),  # SAME 3x3
    (2, 6, 5, 4, 5, 1, 1),  # 1x1
    (1, 1, 1, 2, 3, 2, 3),  # one output pixel, one channel
    (2, 3, 4, 2, 2, 1, 2),
    (4, 320, 320, 9, 10, 2, 3),  # PixelCNN++ width, small image
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_outputs_and_gradients_within_the_worst_case_bound(shape, dtype):
    import torch

    from torch_impl import _cpu_conv

    B, C, O, Hp, Wp, kh, kw = shape
    u = UNIT_ROUNDOFF[dtype]
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(B, C, Hp, Wp, generator=gen)
    W = torch.randn(O, C, kh, kw, generator=gen) * 0.05
    b = torch.randn(O, generator=gen)
    dy = torch.randn(B, O, Hp - kh + 1, Wp - kw + 1, generator=gen)
    if dtype == "float64":  # float64 values that float32 cannot hold
        x, W, b, dy = (t.double() * (1 + 2.0**-30) for t in (x, W, b, dy))
    assert _cpu_conv.applies(x, W, (1, 1))

    xg, Wg, bg = (t.clone().requires_grad_(True) for t in (x, W, b))
    y = _cpu_conv.valid_conv2d(xg, Wg, bg)
    gx, gW, gb = torch.autograd.grad(y, (xg, Wg, bg), dy)

    exact = _grads(*(t.double() for t in (x, W, b, dy)))  # F.conv2d in float64: within its own bound too
    scale = _grads(*(t.double().abs() for t in (x, W, b, dy)))  # sum |a_i b_i| for every entry
    counts = (C * kh * kw + 1, O * kh * kw, B * dy.shape[2] * dy.shape[3], B * dy.shape[2] * dy.shape[3])
    for name, got, ref, mag, n in zip(("y", "dx", "dW", "db"), (y, gx, gW, gb), exact, scale, counts):
        assert got.shape == ref.shape, name
        err = (got.double() - ref).abs()
        # The sum's error, then one rounding of the result; plus the same for the float64 reference.
        bound = sum(n * r / (1 - n * r) * mag + r * ref.abs() for r in (u, UNIT_ROUNDOFF["float64"]))
        worst = (err / bound.clamp_min(1e-300)).max().item()
        assert worst <= 1.0, f"{name}: error {err.max().item():.3e}, {worst:.2f} x its worst-case bound"


@pytest.mark.parametrize("shape", [(2, 3, 2, 4, 5, 2, 3), (1, 2, 3, 3, 3, 2, 2)], ids=["2x3", "2x2"])
def test_first_and_second_derivatives_match_finite_differences(shape):
    """float64 (which takes the GEMM path too): torch's gradcheck and gradgradcheck, so the backward
    is right and is itself differentiable (double backward, as ``F.conv2d`` allows)."""
    import torch

    from torch_impl import _cpu_conv

    B, C, O, Hp, Wp, kh, kw = shape
    gen = torch.Generator().manual_seed(1)
    args = [torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)
            for s in ((B, C, Hp, Wp), (O, C, kh, kw), (O,))]
    assert torch.autograd.gradcheck(_cpu_conv.valid_conv2d, args)
    assert torch.autograd.gradgradcheck(_cpu_conv.valid_conv2d, args)


def test_gemm_path_is_used_where_it_applies_and_only_there():
    import torch

    from torch_impl import _cpu_conv

    x, W = torch.randn(1, 2, 4, 4), torch.randn(3, 2, 2, 2)
    assert _cpu_conv.applies(x, W, (1, 1))
    assert not _cpu_conv.applies(x, W, (2, 1))
    assert _cpu_conv.applies(x.double(), W.double(), (1, 1))
    assert not _cpu_conv.applies(x.half(), W.half(), (1, 1))
    assert not _cpu_conv.applies(x.double(), W, (1, 1))  # mixed dtypes: F.conv2d's error
    y = _cpu_conv.valid_conv2d(x, W)
    assert y.shape == (1, 3, 3, 3) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, W), rtol=0, atol=1e-5)


def test_inputs_it_does_not_cover_get_torchs_own_errors():
    import torch

    from torch_impl import _cpu_conv

    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
        _cpu_conv.valid_conv2d(torch.randn(1, 2, 1, 4), torch.randn(3, 2, 2, 2))
    with pytest.raises(RuntimeError, match="expected input.*to have 3 channels"):
        _cpu_conv.valid_conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 3, 2, 2))


def test_the_block_keeps_its_input_layout_and_values():
    """An NCHW input runs channels-last inside on the CPU and comes back NCHW; a channels-last input
    stays channels-last; both give the same numbers."""
    import torch

    import torch_impl

    torch.manual_seed(0)
    block = torch_impl.GatedResnet(4, a_channels=3, h_channels=2, conv="down_shifted_conv2d")
    x, a, h = torch.randn(2, 4, 5, 7), torch.randn(2, 3, 5, 7), torch.randn(2, 2)
    block.initialize(x, a, h)
    out = block(x, a, h)
    assert out.is_contiguous()
    out_cl = block(x.contiguous(memory_format=torch.channels_last), a, h)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, out_cl)


def test_block_double_backward_matches_finite_differences():
    """A gradient penalty needs the block's gradient to be differentiable (float64, so the GEMM path runs)."""
    import torch

    import torch_impl

    torch.manual_seed(0)
    block = torch_impl.GatedResnet(2, a_channels=2, conv="down_right_shifted_conv2d", dtype=torch.float64)
    x, a = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 2, 3, 4, dtype=torch.float64)
    block.initialize(x, a)
    args = [t.clone().requires_grad_(True) for t in (x, a)]
    assert torch.autograd.gradgradcheck(lambda x_, a_: block(x_, a_), args)
