"""Small PixelCNN++ configs and data the model tests share: images on the 8-bit grid (edges included),
``h``, dropout keep-masks per block, and random weights with shadows."""

from __future__ import annotations

import numpy as np
import pytest

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


def assert_twins_agree_in_float64(ref: tuple[float, dict[str, np.ndarray]], other: tuple[float, dict[str, np.ndarray]],
                                  twins: list[tuple], weights: dict[str, np.ndarray], updates: int) -> dict[str, np.ndarray]:
    """The float64 twins' ``(loss, gradients)`` agree (loss to 1e-12 relative, each gradient to 1e-8);
    then, with every live weight of ``twins`` ((twin, network) pairs, built from ``weights``) moved by
    0.01, ``updates`` Polyak updates give bit-identical shadows (the same float64 decay and formula).
    Returns the reference twin's weights after them (live and shadows)."""
    (lt, gt), (lo, go) = ref, other
    assert lt == pytest.approx(lo, rel=1e-12)
    for k in gt:
        np.testing.assert_allclose(go[k], gt[k], rtol=1e-8, atol=1e-12 * np.abs(gt[k]).max(), err_msg=k)
    moved = {k: v + 0.01 for k, v in weights.items() if not k.endswith("/ExponentialMovingAverage")}
    for twin, m in twins:
        twin.backend.import_weights(m, {**weights, **moved})
        for _ in range(updates):
            twin.backend.IMPL.update_averages(m)
    (tr, mr), (to, mo) = twins
    er, eo = tr.backend.export_weights(mr), to.backend.export_weights(mo)
    for k in er:
        np.testing.assert_array_equal(eo[k], er[k], err_msg=k)
    for k, v in moved.items():  # the live weights are the moved ones, in both twins
        np.testing.assert_array_equal(er[k], v, err_msg=k)
    return er
