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
