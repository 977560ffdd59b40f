"""All-or-nothing ``load_state_dict`` for ``torch_impl`` modules (torch only; no TensorFlow twin).

``nn.Module.load_state_dict`` copies every tensor that fits and raises afterwards, so a state dict
with one bad tensor leaves the module half-loaded; it also casts integer tensors into float
parameters silently. The modules here check the whole state dict first (keys, exact shapes, no
broadcasting, floating dtypes, finite values) and raise one error naming every problem before
anything changes. The check covers the module it is called on and all its children: the layers, the
block and the whole networks (``torch_impl.model.PlannedNetwork``) have it; a model of the user's that
*contains* these modules keeps torch's own ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch


class StateDictError(RuntimeError):
    """A state dict that does not fit; lists every problem. Nothing was loaded."""


def check_state_dict(owner: str, own: Mapping[str, torch.Tensor], incoming: Mapping[str, Any], strict: bool) -> None:
    """Raise :class:`StateDictError` unless ``incoming`` loads into a module whose state is ``own``."""
    problems = []
    if strict:
        problems += [f"missing key {k!r} (expected shape {tuple(v.shape)}, dtype {v.dtype})" for k, v in own.items() if k not in incoming]
        problems += [f"unexpected key {k!r}" for k in incoming if k not in own]
    for key, value in incoming.items():
        if key not in own:
            continue
        want = own[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key!r}: expected a tensor; received {type(value).__name__}")
            continue
        if tuple(value.shape) != tuple(want.shape):
            problems.append(f"{key!r}: expected shape {tuple(want.shape)}; received {tuple(value.shape)} (no broadcasting)")
        if want.dtype == torch.bool:
            if value.dtype != torch.bool:
                problems.append(f"{key!r}: expected dtype torch.bool; received {value.dtype}")
        elif not value.is_floating_point():
            problems.append(f"{key!r}: expected a floating dtype like {want.dtype}; received {value.dtype}")
        elif not bool(torch.isfinite(value).all()):
            problems.append(f"{key!r}: holds NaN or Inf values")
        else:
            problems += _cast_problems(key, value, want.dtype)
    if problems:
        raise StateDictError(f"Error(s) in loading state_dict for {owner} (nothing was loaded):\n  - " + "\n  - ".join(problems))


def _cast_problems(key: str, value: torch.Tensor, dtype: torch.dtype) -> list[str]:
    """Values that the cast to the parameter's dtype would change beyond rounding: out of its range
    (they would load as Inf) or below its smallest normal number while nonzero (they would lose
    their precision, or flush to 0)."""
    if not value.dtype.is_floating_point or torch.finfo(value.dtype).bits <= torch.finfo(dtype).bits:
        return []
    info = torch.finfo(dtype)
    magnitude = value.detach().abs()
    problems = []
    if bool((magnitude > info.max).any()):
        problems.append(f"{key!r}: holds values beyond {dtype}'s range (|v| up to {float(magnitude.max()):.3e}); "
                        f"they would load as Inf")
    if bool(((magnitude < info.tiny) & (magnitude > 0)).any()):
        problems.append(f"{key!r}: holds nonzero values below {dtype}'s smallest normal number ({info.tiny:.3e}); "
                        f"they would load as subnormals or 0")
    return problems


class ValidatedLoad:
    """Mixin for ``nn.Module``: ``load_state_dict`` checks first, then loads (see the module docstring)."""

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        check_state_dict(type(self).__name__, self.state_dict(keep_vars=True), state_dict, strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]
