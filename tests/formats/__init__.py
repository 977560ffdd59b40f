"""Helpers the format tests share."""

from __future__ import annotations

import numpy as np

from tests.conftest import HAVE


def assert_runs_as_the_graph(weights: str, test_batch: dict[str, np.ndarray], graph: dict[str, np.ndarray], tmp_path) -> None:
    """``run`` on a converted network file, in every installed backend, live and averaged, gives the
    original graph's ``out`` and ``ema_out`` on ``test_batch``, and a float64 scalar loss."""
    from parity.cli import main

    np.savez(tmp_path / "x.npz", **test_batch)
    for backend in [b for b in ("tf", "torch") if HAVE[b]]:
        for ema, key in ((False, "out"), (True, "ema_out")):
            y = str(tmp_path / f"y_{backend}_{ema}.npz")
            assert main(["run", "--weights", weights, "--inputs", str(tmp_path / "x.npz"), "--backend", backend, "--out", y]
                        + (["--ema"] if ema else [])) == 0
            with np.load(y) as f:
                np.testing.assert_allclose(f["out"], graph[key], rtol=1e-4, atol=2e-5, err_msg=f"{backend} {key}")
                assert f["loss"].dtype == np.float64 and f["loss"].shape == () and np.isfinite(f["loss"])
