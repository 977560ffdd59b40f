"""A parity case: one block config and everything both backends are fed, made in NumPy from a seed.

All arrays are NHWC (the original layout) and float32-representable, so a float32 run and a float64
run start from exactly the same numbers, and so do the two backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parity.weights import CHANNEL_MULTIPLIER, normalize_config, random_weights, weight_table

DEFAULT_DECAY = 0.9995


@dataclass
class Case:
    """A block config plus the sizes and seed of its inputs.

    H, W and the channel counts differ by default so that a wrong permute cannot even run.
    """

    name: str
    config: dict[str, Any]
    batch: int = 2
    height: int = 5
    width: int = 7
    seed: int = 0
    ema_steps: int = 3
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.config = normalize_config(self.config)
        if self.config["polyak_decay"] is None:
            self.config["polyak_decay"] = DEFAULT_DECAY
        if not self.arrays:
            self.arrays = make_arrays(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "batch": self.batch,
            "height": self.height,
            "width": self.width,
            "seed": self.seed,
            "ema_steps": self.ema_steps,
        }

    def weights(self, prefix: str = "weights/") -> dict[str, np.ndarray]:
        """The canonical tensors stored under ``prefix`` (raw weights and shadows)."""
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


def make_arrays(case: Case) -> dict[str, np.ndarray]:
    """Inputs, cotangent, dropout keep-mask, weights with shadows, and the EMA weight sequence."""
    c = case.config
    rng = np.random.default_rng(case.seed)
    B, H, W, F_ = case.batch, case.height, case.width, c["num_filters"]
    arrays: dict[str, np.ndarray] = {"x": _f32(rng.normal(0.0, 1.0, (B, H, W, F_)))}
    if c["a_channels"]:
        arrays["a"] = _f32(rng.normal(0.0, 1.0, (B, H, W, c["a_channels"])))
    if c["h_channels"]:
        arrays["h"] = _f32(rng.normal(0.0, 1.0, (B, c["h_channels"])))
    arrays["cotangent"] = _f32(rng.normal(0.0, 1.0, (B, H, W, F_)))
    if c["dropout_p"] > 0:
        mult = CHANNEL_MULTIPLIER[c["nonlinearity"]]
        arrays["dropout_mask"] = _f32(rng.uniform(size=(B, H, W, mult * F_)) >= c["dropout_p"])
    weights = random_weights(c, seed=case.seed + 1, shadows=True)
    arrays.update({f"weights/{k}": v for k, v in weights.items()})
    # The live weights after each of ``ema_steps`` optimiser steps: small random walks from the start.
    current = {r.tf1_name: weights[r.tf1_name] for r in weight_table(c, shadows=False)}
    for step in range(1, case.ema_steps + 1):
        current = {k: _f32(v + rng.normal(0.0, 0.01, v.shape)) for k, v in current.items()}
        arrays.update({f"ema_step_{step}/{k}": v for k, v in current.items()})
    return arrays


def default_cases() -> list[Case]:
    """The built-in suite: every conv kind, ``a`` absent / F / 2F channels, ``h`` absent / present,
    each nonlinearity, and dropout, in a covering set rather than the full product."""
    F_ = 4
    specs = [
        ("conv2d", None, None, "concat_elu", 0.0),
        ("conv2d", F_, 3, "concat_elu", 0.5),
        ("down_shifted_conv2d", None, 3, "concat_elu", 0.0),
        ("down_shifted_conv2d", 2 * F_, None, "elu", 0.0),
        ("down_right_shifted_conv2d", F_, 3, "relu", 0.0),
        ("down_right_shifted_conv2d", 2 * F_, None, "concat_elu", 0.5),
        ("nin", 2 * F_, 3, "concat_elu", 0.0),
        ("nin", None, None, "elu", 0.0),
    ]
    cases = []
    for i, (conv, a, h, nl, p) in enumerate(specs):
        name = f"{conv}-a{a or 0}-h{h or 0}-{nl}" + (f"-drop{p}" if p else "")
        config = {"num_filters": F_, "a_channels": a, "h_channels": h, "conv": conv, "nonlinearity": nl, "dropout_p": p}
        cases.append(Case(name, config, seed=i))
    return cases
