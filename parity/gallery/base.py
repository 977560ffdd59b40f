"""What every gallery entry is made of: :class:`Pitfall` (an entry), :class:`Result` (one run of it),
``LOAD`` (the stage of a naive translation whose weights cannot load), and the small tools the entries
share: :func:`_hooks` (replace named steps of the torch twin), :func:`_patched` (replace public functions
of the harness) and the case makers (a block, a single layer, a tiny model).

Imports neither TensorFlow nor PyTorch: an entry's override imports what it replaces when installed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from parity.case import Case, LayerCase, ModelCase
from parity.tolerance import Comparison

LOAD = "load"


@dataclass(frozen=True)
class Pitfall:
    key: str  # the number in docs/translation_pitfalls.md, or "seed"
    title: str
    naive: str  # what the naive translation does
    expect: str  # the tensor (or "load") the harness must flag first
    case: Callable[[], Case | LayerCase]
    install: Callable[[], contextlib.AbstractContextManager]  # the naive override, while it is active


@dataclass
class Result:
    pitfall: Pitfall
    flagged: str  # the first failing tensor, or "load"
    comparison: Comparison | None  # the first failing comparison (None for "load")
    detail: str  # the load error, or a short summary
    real_passed: bool
    stages: list[Comparison] = field(default_factory=list)  # seed entry: every forward stage

    @property
    def caught(self) -> bool:
        return self.real_passed and self.flagged == self.pitfall.expect


# -- small tools ---------------------------------------------------------------------------------
def _hooks(overrides: dict[str, Any]) -> contextlib.AbstractContextManager:
    """Replace named steps of the torch twin (``torch_impl.hooks.HOOKS``) while the entry runs."""
    from torch_impl.hooks import replaced

    return replaced(overrides)


@contextlib.contextmanager
def _patched(*patches: tuple[Any, str, Any]) -> Iterator[None]:
    """Replace public functions of the harness itself (the weight layout, the input conversion) for
    the duration; always restored. Private names are refused: the twins' replaceable steps go
    through :func:`_hooks`."""
    saved = []
    for target, name, _ in patches:
        if name.startswith("_") or not hasattr(target, name):
            raise AttributeError(f"the pitfall gallery replaces {getattr(target, '__name__', target)}.{name}: expected a public "
                                 "attribute of the harness that exists (a twin's step goes through torch_impl.hooks)")
    try:
        for target, name, value in patches:
            saved.append((target, name, getattr(target, name)))
            setattr(target, name, value)
        yield
    finally:
        for target, name, value in reversed(saved):
            setattr(target, name, value)


def _block_case(name: str, **kw: Any) -> Callable[[], Case]:
    config = {"num_filters": 4, "conv": "down_shifted_conv2d", "nonlinearity": "concat_elu"}
    sizes = {k: kw.pop(k) for k in ("batch", "height", "width") if k in kw}
    config.update(kw)
    return lambda: Case(f"pitfall-{name}", config, **sizes)


def _layer_case(name: str, kind: str, **kw: Any) -> Callable[[], LayerCase]:
    return lambda: LayerCase(f"pitfall-{name}", kind, **kw)



def _model_case(name: str, log_scale_shift: float = 0.0, **config: Any) -> Callable[[], Any]:
    return lambda: ModelCase(f"pitfall-{name}", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "dropout_p": 0.5, **config},
                             height=8, width=8, log_scale_shift=log_scale_shift)
