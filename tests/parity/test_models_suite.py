"""Whole networks in the harness: the models suite, where two draws part, and a models record verified
without TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BOTH, HAVE


def test_the_report_says_where_two_draws_part_in_raster_order():
    from parity.harness import sample_agreement

    a = np.zeros((2, 3, 4, 3))
    b = a.copy()
    b[1, 0, 2, 1] = 1e-7  # step (0, 2): one bit pattern differs, within the bound
    b[0, 2, 1, 0] = 1.0  # step (2, 1): a different draw
    assert sample_agreement(a, b, 1e-6) == ("pixels identical 92%, first differing step (0, 2), first step beyond the bound (2, 1); "
                                            "8-bit grid: pixels identical 96%, first differing step (2, 1)")
    assert sample_agreement(a, a, 0.0).endswith("first differing step never, first step beyond the bound never; "
                                                "8-bit grid: pixels identical 100%, first differing step never")
    b[0, 0, 0, 0] = np.nan
    assert "first step beyond the bound (0, 0);" in sample_agreement(a, b, 1e-6)


@BOTH
def test_the_models_suite_passes_and_a_missing_ones_channel_is_caught_at_the_output(monkeypatch):
    """``check --suite models``' first case passes; the torch twin without the ones channel (zeros in
    its place) fails, first at the network output."""
    import torch

    import torch_impl.model as tm
    from parity.case import model_cases
    from parity.harness import check, compare_runs, run_backend, run_backend_here
    from parity.tolerance import MCA_SAMPLES

    case = model_cases()[0]
    report = check([case])
    assert report.passed, [c.tensor for c in report.cases[0].comparisons if not c.passed][:5]
    names = [c.tensor for c in report.cases[0].comparisons if c.dtype == "float32"]
    assert names[:4] == ["forward/out", "loss/sum", "loss/bits_per_dim", "grad/conv2d_0/V"] and "sample/x" in names and "init/dense_4/g" in names
    drawn = next(c for c in report.cases[0].comparisons if c.tensor == "sample/x" and c.dtype == "float32")
    assert "first step beyond the bound never" in drawn.note and "pixels identical" in drawn.note, drawn.note
    # the cached sampler (torch's) against the naive one (TensorFlow's): the same images
    cached = next(c for c in report.cases[0].comparisons if c.tensor == "sample/x_cached" and c.dtype == "float32")
    assert cached.passed and "8-bit grid: pixels identical 100%, first differing step never" in cached.note, cached.note
    ref = run_backend("tf", case, mca_samples=MCA_SAMPLES)
    monkeypatch.setattr(tm, "with_ones", lambda x: torch.cat([x, torch.zeros_like(x[:, :1])], dim=1))
    naive = compare_runs(case.name, ref, run_backend_here("torch", case))
    assert naive.first_failure is not None and naive.first_failure.tensor == "forward/out"


@pytest.mark.skipif(not (HAVE["tf"] and HAVE["torch"]), reason="needs both TensorFlow and PyTorch")
def test_a_model_case_records_and_verifies_without_tensorflow_in_the_checker(tmp_path):
    """``record --suite models`` then ``verify``: the path a GPU machine without TensorFlow takes."""
    from parity.case import model_cases
    from parity.harness import load_record, record, verify

    case = model_cases()[1]
    path = tmp_path / "models.safetensors"
    record(path, backend="tf", cases=[case])
    _, [(loaded, results)] = load_record(path)
    assert type(loaded).__name__ == "ModelCase" and loaded.config == case.config and results["float32"]["loss/sum"].shape == (1,)
    assert verify(path, backend="torch").passed
