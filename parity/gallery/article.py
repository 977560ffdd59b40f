"""The seed article's block: its ``GatedResNet`` re-created from its description (plain ELU, ``a`` added
raw, a lazily created ``[K, F]`` ``hw`` broadcast over the width, no weight norm, no data-dependent init,
no EMA), run stage by stage with the reference's effective kernels where they fit, as one more entry,
:data:`ARTICLE`. It has no override to install: :func:`parity.gallery.runner.run_naive` calls
:func:`_article_run` instead of the torch twin."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from parity.case import Case
from parity.gallery.base import Pitfall

ARTICLE_CONFIG = {"num_filters": 4, "a_channels": 4, "h_channels": 3, "conv": "down_shifted_conv2d", "nonlinearity": "concat_elu"}


def _article_case() -> Case:
    return Case("pitfall-seed", dict(ARTICLE_CONFIG), width=4)  # W == F: the only width where its h runs


def _article_run(case: Case, dtype: str) -> dict[str, np.ndarray]:
    """The seed article's GatedResNet, re-created from its description, on the case's inputs.

    Plain ELU (so its convs take F input channels: it gets the x-half of the reference's effective
    kernel), ``a`` added raw, ``hw`` created lazily in ``forward`` as ``[K, F]`` (its own random values:
    the reference's ``[K, 2F]`` does not fit) and added as ``.view(B, 1, 1, F)``, plain convs (no weight
    norm: the effective kernel ``g * V / |V|`` and ``b``), no init, no EMA.
    """
    import torch
    import torch.nn.functional as F

    from gated_spec import v_to_torch
    from parity.backends.torch_backend import to_numpy, to_torch

    dt = getattr(torch, dtype)
    w = case.weights()
    F_ = case.config["num_filters"]

    def kernel(name: str) -> tuple[Any, Any]:
        V, g = w[f"{name}/V"].astype(np.float64), w[f"{name}/g"].astype(np.float64)
        W = g * V / np.sqrt((V * V).sum(axis=(0, 1, 2)))
        W = W[:, :, : W.shape[2] // 2]  # ELU: only the x half of concat_elu's inputs
        return torch.as_tensor(v_to_torch(W), dtype=dt), torch.as_tensor(w[f"{name}/b"], dtype=dt)

    (W1, b1), (W2, b2) = kernel("conv2d_0"), kernel("conv2d_1")
    x, a, h = (to_torch(case.arrays[k], dt, "cpu", grad=True) for k in ("x", "a", "h"))
    hw = torch.empty(h.shape[1], F_, dtype=dt).normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))

    def conv(t: Any, W: Any, b: Any) -> Any:
        return F.conv2d(F.pad(t, (1, 1, 1, 0)), W, b)

    stages = {"c1_conv": conv(F.elu(x), W1, b1), "c1_skip": a}
    c1 = F.elu(stages["c1_conv"] + a)
    stages["c1"] = c1
    stages["c2_conv"] = conv(c1, W2, b2)
    stages["c2"] = stages["c2_conv"] + (h @ hw).view(h.shape[0], 1, 1, F_)
    stages["value"], stages["gate_logits"] = stages["c2"][:, :F_], stages["c2"][:, F_:]
    stages["out"] = x + stages["value"] * torch.sigmoid(stages["gate_logits"])
    out = {f"forward/{k}": to_numpy(v) for k, v in stages.items()}
    cot = to_torch(case.arrays["cotangent"], dt, "cpu")
    grads = torch.autograd.grad((stages["out"] * cot).sum(), [x, a, h])
    out.update({f"grad/{k}": to_numpy(g) for k, g in zip("xah", grads)})
    return out


# The seed article's GatedResNet translation (the article this project started from), as one more entry;
# its gallery key stays "seed", as the CLI and docs/pitfalls.md spell it.
ARTICLE = Pitfall(
    "seed", "the seed article's translation",
    "plain ELU, a added raw, a lazily created [K, F] hw broadcast over the width, no weight norm, no "
    "data-dependent init, no EMA (re-created from its description)",
    "forward/c1_conv", _article_case, contextlib.nullcontext,
)
