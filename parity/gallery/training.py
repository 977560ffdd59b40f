"""Training-loop entries T1..T8 (``docs/training.md``): naive translations of train.py's step (its
optimiser, schedule, loss, Polyak update and gradient sum), each on a tiny training case (one step
from initialised weights; T6, the data-dependent init alone as step 0), and :data:`TRAINING_PITFALLS`.

The harness compares each step's loss, weights, shadows and Adam slots (``check --suite training``);
the first tensor beyond its bound names the step, and the layer, where the naive loop parts from the
original. The decay's off-by-one moves each update by 5e-6 of itself and shows in float64 (bounds
~1e-15 relative); the others show in float32. The one-step case starts from initialised weights, not
from the init pass, which T6 covers alone. (It was chosen when the twins' float64 Adam moments after
the init parted beyond the extrapolated bound on most seeds; with the twin's sigmoid TensorFlow's,
pitfall M11, one step from the init passes too: docs/training.md.)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from gated_spec import DEFAULT_POLYAK_DECAY
from gated_spec.training import learning_rate
from parity.case import TrainingCase
from parity.gallery.base import Pitfall, _hooks


def _training_case(name: str, init: bool = False) -> Callable[[], TrainingCase]:
    """One training step from initialised weights; with ``init``, the data-dependent init alone (step 0)."""
    return lambda: TrainingCase(f"pitfall-{name}", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "dropout_p": 0.5},
                                steps=0 if init else 1, init=init)


def _torch_adam() -> contextlib.AbstractContextManager:
    import torch

    class TorchAdam(torch.optim.Adam):
        """torch.optim.Adam, its state kept under the original's names too (as a port saves it)."""

        def __init__(self, params: Any, lr: float, mom1: float, mom2: float, eps: float) -> None:
            super().__init__(params, lr=lr, betas=(mom1, mom2), eps=eps)

        def step(self, closure: Any = None) -> Any:
            loss = super().step(closure)
            for state in self.state.values():
                state.update(t=int(state["step"]) + 1, mg=state["exp_avg_sq"], v=state["exp_avg"])
            return loss

    return _hooks({"optim.OriginalAdam": TorchAdam})


def _keras_adam() -> contextlib.AbstractContextManager:
    import math

    import torch

    class KerasAdam(torch.optim.Optimizer):
        """keras.optimizers.Adam's update_step: the bias corrections folded into the rate, epsilon
        outside the root of the uncorrected second moment."""

        def __init__(self, params: Any, lr: float, mom1: float, mom2: float, eps: float) -> None:
            super().__init__(params, {"lr": lr, "mom1": mom1, "mom2": mom2, "eps": eps})

        @torch.no_grad()
        def step(self, closure: Any = None) -> None:
            for group in self.param_groups:
                b1, b2 = group["mom1"], group["mom2"]
                for p in group["params"]:
                    state = self.state[p]
                    if not state:
                        state.update(t=1, v=torch.zeros_like(p), mg=torch.zeros_like(p))  # Keras' m and v
                    t = state["t"]
                    alpha = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
                    state["v"].add_((p.grad - state["v"]) * (1 - b1))
                    state["mg"].add_((p.grad * p.grad - state["mg"]) * (1 - b2))
                    p.sub_(state["v"] * alpha / (torch.sqrt(state["mg"]) + group["eps"]))
                    state["t"] = t + 1

    return _hooks({"optim.OriginalAdam": KerasAdam})


def _decay_after_the_step() -> contextlib.AbstractContextManager:
    import torch

    def naive(optimizer: Any, lr_decay: float, last_step: int = 0) -> Any:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        # lr_decay ** (s - 1) at step s: the rate decayed after each step (ExponentialLR's habit)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate(1.0, lr_decay, s),
                                                 last_epoch=last_step - 1 if last_step else -1)

    return _hooks({"optim.original_schedule": naive})


def _mean_loss() -> contextlib.AbstractContextManager:
    import torch_impl.train as tt

    real = tt.discretized_mix_logistic_loss

    def naive(x: Any, l: Any, *args: Any, **kwargs: Any) -> Any:
        return real(x, l, *args, **kwargs) / x.numel()  # reduction="mean", torch's losses' default

    return _hooks({"train.loss": naive})


def _keras_ema() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl.train as tt
    from torch_impl.ema import averaged_pairs

    real = tt.train_step

    def naive(model: Any, optimizer: Any, x: Any, h: Any = None, *, dropout_masks: Any = None, ema: str = "pre",
              scheduler: Any = None) -> Any:
        first = not any(optimizer.state.values())  # Keras' iterations == 0: the average copies the variable

        @torch.no_grad()
        def keras_average(module: Any, num_updates: Any = None) -> None:
            for owner, var, shadow in averaged_pairs(module):
                momentum = 0.0 if first else owner.polyak_decay
                shadow.copy_(momentum * shadow + (1 - momentum) * var)

        with _hooks({"train.update_averages": keras_average}):
            return real(model, optimizer, x, h, dropout_masks=dropout_masks, ema="post", scheduler=scheduler)

    return _hooks({"train.train_step": naive})


def _shadows_before_init() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl.model as tm
    from torch_impl.ema import averaged_pairs

    real = tm.PixelCNNpp.initialize

    def naive(self: Any, x: Any, h: Any = None, *, dropout: bool = True, dropout_masks: Any = None) -> Any:
        before = [shadow.clone() for _, _, shadow in averaged_pairs(self)]  # the EMA made before the init pass
        out = real(self, x, h, dropout=dropout, dropout_masks=dropout_masks)
        with torch.no_grad():
            for (_, _, shadow), old in zip(averaged_pairs(self), before):
                shadow.copy_(old)
        return out

    return _hooks({"model.PixelCNNpp.initialize": naive})


def _t_from_zero() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl.optim as to

    class TFromZero(to.OriginalAdam):
        """The counter read before it is incremented: the first step's bias corrections are 1 - mom^0 = 0."""

        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and not self.state[p]:
                        self.state[p].update(t=0, mg=torch.zeros_like(p), **({"v": torch.zeros_like(p)} if group["mom1"] > 0 else {}))
            return super().step(closure)

    return _hooks({"optim.OriginalAdam": TFromZero})


def _replicas_averaged() -> contextlib.AbstractContextManager:
    import torch

    import torch_impl.train as tt

    def naive(model: Any, optimizer: Any, x: Any, h: Any = None, *, dropout_masks: Any = None, ema: str = "pre",
              scheduler: Any = None) -> Any:
        replicas = 2  # one image per replica; their gradients averaged, as DDP and MirroredStrategy do
        model.train()
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for part in torch.chunk(torch.arange(x.shape[0]), replicas):
            masks = None if dropout_masks is None else [m[part] for m in dropout_masks]
            loss = tt.discretized_mix_logistic_loss(x[part], model(x[part], None if h is None else h[part], dropout_masks=masks))
            (loss / replicas).backward()
            total = total + loss.detach()
        if ema == "pre":
            tt.update_averages(model)
        optimizer.step()
        if ema == "post":
            tt.update_averages(model)
        if scheduler is not None:
            scheduler.step()
        return total

    return _hooks({"train.train_step": naive})


TRAINING_PITFALLS: list[Pitfall] = [
    Pitfall("T1", "torch's Adam", "steps with torch.optim.Adam(betas=(mom1, mom2), eps): epsilon outside the root "
            "(sqrt(mg_hat) + eps, not sqrt(mg_hat + eps)): the update differs where a gradient is small", "step_1/conv2d_10/V", _training_case("T1"), _torch_adam),
    Pitfall("T2", "Keras' Adam", "steps with keras.optimizers.Adam's update: the bias corrections folded into the rate, "
            "epsilon outside the root of the uncorrected second moment", "step_1/conv2d_10/V", _training_case("T2"),
            _keras_adam),
    Pitfall("T3", "the decay after the step", "multiplies the rate by lr_decay after each step (ExponentialLR's habit): "
            "step s runs at lr * lr_decay^(s-1), not lr * lr_decay^s", "step_1/conv2d_0/V", _training_case("T3"),
            _decay_after_the_step),
    Pitfall("T4", "the mean loss", "minimises and reports the mean over the B*H*W*3 sub-pixels (reduction='mean'), not "
            "the sum in nats", "step_1/loss", _training_case("T4"), _mean_loss),
    Pitfall("T5", "Keras' built-in EMA", f"averages as keras.optimizers' use_ema does (ema_momentum={DEFAULT_POLYAK_DECAY}): "
            "after Adam's update, the first step copying the weights", "step_1/conv2d_0/V/ExponentialMovingAverage",
            _training_case("T5"), _keras_ema),
    Pitfall("T6", "shadows made before the init", "creates the EMA before the data-dependent init pass, so the shadows "
            "of g and b start at their values before it", "step_0/conv2d_0/g/ExponentialMovingAverage",
            _training_case("T6", init=True), _shadows_before_init),
    Pitfall("T7", "t from 0", "reads Adam's counter before incrementing it: the first step divides by 1 - mom^0 = 0",
            "step_1/conv2d_0/V", _training_case("T7"), _t_from_zero),
    Pitfall("T8", "replica gradients averaged", "averages the gradients of two local replicas (one image each), as "
            "DDP and MirroredStrategy do, where train.py sums them (its loss is the batch's sum); Adam's update hardly "
            "moves (it is nearly scale-free), its second moment is a quarter", "step_1/conv2d_0/V_adam_mg", _training_case("T8"), _replicas_averaged),
]
