"""Small PixelCNN++ configs and data the model tests share: images on the 8-bit grid (edges included),
``h``, dropout keep-masks per block, and random weights with shadows."""

from __future__ import annotations

import numpy as np

CONFIG = {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "h_channels": 2, "dropout_p": 0.5, "polyak_decay": 0.9995}
B, H, W = 2, 8, 8


def model_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-1, 1, (B, H, W, 3)) * 127.5) / 127.5  # on the 8-bit grid, edges included
    x[0, 0, :2] = -1.0
    x[1, -1, -2:] = 1.0
    return {"x": x, "h": rng.normal(size=(B, CONFIG["h_channels"]))}


def model_masks(config: dict, seed: int = 1) -> list[np.ndarray]:
    from gated_spec.model import dropout_mask_shapes

    rng = np.random.default_rng(seed)
    return [(rng.uniform(size=s) >= config["dropout_p"]).astype(np.float64) for s in dropout_mask_shapes(config, B, H, W)]


def model_weights(config: dict = CONFIG, seed: int = 0) -> dict[str, np.ndarray]:
    from parity.case import random_weights

    return random_weights({"model": "pixelcnn_pp", **config}, seed, shadows=config["polyak_decay"] is not None, dtype=np.float64)


def assert_initialized_as(got: dict[str, np.ndarray], new: dict[str, tuple[np.ndarray, np.ndarray]],
                          raw: dict[str, np.ndarray]) -> None:
    """A network's exported weights after its data-dependent init hold the reference's ``g`` and ``b``
    (``new``: layer name -> (g, b)) for every layer with a ``V`` in ``raw``."""
    assert len(new) == len({k.split("/")[0] for k in raw if k.endswith("/V")})
    for name, (g, b) in new.items():
        np.testing.assert_allclose(got[f"{name}/g"], g, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(got[f"{name}/b"], b, rtol=1e-9, atol=1e-10, err_msg=name)
