"""Element-wise helpers of the original ``nn.py``, in NCHW.

``concat_elu`` concatenates ``[x, -x]`` on the channel axis (axis 1 here, the last axis in the
original) before the ELU, so the channel count doubles and the first half of the next kernel's input
channels sees ``x``, the second half ``-x`` (pitfall 6). The shifts move rows or columns and fill
with zeros, keeping the shape.

Where the translation differs: torch's ``elu`` uses ``expm1`` for negative inputs, TensorFlow
``exp(x) - 1``; for tiny negative inputs the *relative* difference can reach 100 % while the absolute
difference stays below one float32 ULP of 1 (pitfall 16). Twin: ``tf_impl.ops``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gated_spec import CHANNEL_MULTIPLIER, L2_NORMALIZE_EPS
from gated_spec.checks import check_choice, check_rank

LAYOUT = "NCHW"
CHANNEL_AXIS = 1


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu(concat([x, -x], channels))``; doubles the channel count. Twin: ``tf_impl.ops.concat_elu``."""
    return F.elu(torch.cat([x, -x], dim=CHANNEL_AXIS))


def elu(x: torch.Tensor) -> torch.Tensor:
    """Plain ELU (alpha 1). Twin: ``tf_impl.ops.elu``."""
    return F.elu(x)


class _Relu(torch.autograd.Function):
    """ReLU whose gradient is ``grad * (y > 0)``, as TensorFlow's ``ReluGrad`` computes it.

    torch's ``threshold_backward`` *selects* (``where(y <= 0, 0, grad)``), so a NaN or Inf gradient
    arriving where the ReLU is off becomes 0 in torch and NaN in TensorFlow (``NaN * 0``). Finite
    gradients are identical either way; this keeps NaN/Inf positions identical too.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (y > 0).to(grad.dtype)


def relu(x: torch.Tensor) -> torch.Tensor:
    """Plain ReLU, with TensorFlow's gradient (see ``_Relu``). Twin: ``tf_impl.ops.relu``."""
    return _Relu.apply(x)


@functools.lru_cache(maxsize=None)
def _softplus_threshold(dtype: torch.dtype) -> float:
    """TensorFlow's ``log(eps) + 2`` in the tensor's precision (-13.942385 in float32, -34.04 in
    float64); computed once per dtype, not on every call of the loss."""
    eps = torch.finfo(dtype).eps
    return float(torch.log(torch.tensor(eps, dtype=dtype)) + 2)


class _Softplus(torch.autograd.Function):
    """``log(1 + exp(x))`` as TensorFlow's ``Softplus`` kernel computes it, with its gradient.

    TensorFlow returns ``x`` above ``-(log(eps) + 2)`` (13.94 in float32, 34.04 in float64),
    ``exp(x)`` below ``log(eps) + 2`` and ``log1p(exp(x))`` between; its ``SoftplusGrad`` is
    ``grad / (1 + exp(-x))`` everywhere. ``F.softplus`` returns ``x`` above 20 in every precision
    and its gradient there is ``grad`` itself: in float64 the forward differs from TensorFlow's by up
    to ``exp(-20)`` = 2e-9 between 20 and 34, and the gradient by as much in relative terms, far above
    float64 rounding where the mixture is sharp (pitfall M9).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        threshold = _softplus_threshold(x.dtype)
        e = torch.exp(x)
        return torch.where(x > -threshold, x, torch.where(x < threshold, e, torch.log1p(e)))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad / (torch.exp(-x) + 1)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """Softplus as TensorFlow computes it, forward and gradient (see ``_Softplus``). Twin: ``tf_impl.ops.softplus``."""
    return _Softplus.apply(x)


class _Sigmoid(torch.autograd.Function):
    """``sigmoid(x)`` as TensorFlow's float64 ``Sigmoid`` kernel computes it, with its gradient.

    TensorFlow's kernel is Eigen's logistic: ``e / (1 + e)`` with ``e = exp(x)`` (1 where ``e``
    overflows); ``SigmoidGrad`` is ``grad * (y * (1 - y))``. ``torch.sigmoid`` computes
    ``1 / (1 + exp(-x))`` and its backward ``(grad * (1 - y)) * y``. Both are within 2 ulp of the
    exact sigmoid, but near 1 they round differently: where ``x`` is ~9 TensorFlow's ``e / (1 + e)`` is
    correctly rounded and torch's is often one ulp off, and the loss's ``sigmoid(plus) - sigmoid(minus)``
    (~1e-5 there) and ``1 / cdf_delta`` amplify that ulp ~1e4 times in the float64 gradient
    (pitfall M11). TensorFlow's float32 kernel is another approximation of Eigen's, not
    reproduced; this formula is used in every dtype and agrees with it more often than ``torch.sigmoid``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x)
        y = torch.where(torch.isinf(e), torch.ones_like(e), e / (1 + e))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (y * (1 - y))


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Sigmoid as TensorFlow computes it in float64, forward and gradient (see ``_Sigmoid``). Twin: ``tf_impl.ops.sigmoid``."""
    return _Sigmoid.apply(x)


NONLINEARITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "concat_elu": concat_elu,
    "elu": elu,
    "relu": relu,
}


def get_nonlinearity(name: str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The nonlinearity called ``name`` (``None`` for none); raises ``ValueError`` on unknown names."""
    check_choice("nonlinearity", name, list(NONLINEARITIES), allow_none=True)
    return None if name is None else NONLINEARITIES[name]


def down_shift(x: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Rows move down by ``step``; the top ``step`` rows become zeros. (B, C, H, W) -> same.

    Twin: ``tf_impl.ops.down_shift``.
    """
    check_rank("down_shift", "x", x, LAYOUT)
    step = min(step, x.shape[2])
    return F.pad(x[:, :, : x.shape[2] - step, :], (0, 0, step, 0))


def right_shift(x: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Columns move right by ``step``; the left ``step`` columns become zeros. Twin: ``tf_impl.ops.right_shift``."""
    check_rank("right_shift", "x", x, LAYOUT)
    step = min(step, x.shape[3])
    return F.pad(x[:, :, :, : x.shape[3] - step], (step, 0, 0, 0))


def left_shift(x: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Columns move left by ``step``; the right ``step`` columns become zeros. Twin: ``tf_impl.ops.left_shift``."""
    check_rank("left_shift", "x", x, LAYOUT)
    step = min(step, x.shape[3])
    return F.pad(x[:, :, :, step:], (0, step, 0, 0))


def l2_normalize(v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``v * rsqrt(max(sum(v**2, dims), 1e-12))``, as ``tf.nn.l2_normalize``.

    The clamp makes an all-zero filter give zeros where ``torch.nn.utils.weight_norm`` gives NaN
    (pitfall 24). Twin: ``tf_impl.ops.l2_normalize``.
    """
    square_sum = torch.sum(v * v, dim=dims, keepdim=True)
    return v * torch.rsqrt(torch.clamp(square_sum, min=L2_NORMALIZE_EPS))
