"""Backends in worker processes (parity.isolation), the Monte Carlo floor (parity.tolerance), and the
harness leaving its caller's state as it was."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from tests.conftest import BOTH, HAVE, ROOT



def test_a_call_runs_in_the_backends_worker_and_its_errors_come_back():
    from parity import isolation

    assert isolation.call("torch", "os:getpid") != os.getpid()
    assert isolation.call("torch", "os:getpid") == isolation.call("torch", "os:getpid")  # one kept worker
    with pytest.raises(ValueError, match="Expected backend"):
        isolation.call("jax", "os:getpid")
    with pytest.raises(ZeroDivisionError):
        isolation.call("torch", "operator:truediv", 1, 0)


def test_a_worker_that_dies_is_a_clear_error_and_the_next_call_starts_a_new_one():
    from parity import isolation

    with pytest.raises(RuntimeError, match="the tf worker process died"):
        isolation.call("tf", "os:_exit", 3)
    assert isolation.call("tf", "operator:add", 2, 3) == 5


@BOTH
def test_a_worker_refuses_the_other_framework_on_every_install():
    """Loading the other framework in a worker is a clear error (on the +cpu wheel too, where it would
    not crash), also through a module that imports it at the top (a test module: its conftest imports
    both); probing for it still answers, and a worker knows it is one (a nested call runs there)."""
    from parity import isolation

    for backend, other in (("tf", "torch.nn"), ("torch", "keras"), ("tf", "tests.twins.test_model")):
        with pytest.raises(ModuleNotFoundError, match=f"Expected the {backend} worker to load {backend} only"):
            isolation.call(backend, "importlib:import_module", other)
    assert isolation.call("tf", "importlib.util:find_spec", "torch") is not None
    assert isolation.call("torch", "importlib.util:find_spec", "tensorflow") is not None
    assert isolation.call("tf", "parity.isolation:in_process") is True
    assert isolation.call("tf", "parity.isolation:call", "tf", "os:getpid") == isolation.call("tf", "os:getpid")


def test_a_script_without_a_main_guard_can_call_the_harness(tmp_path):
    """Workers are fresh interpreters that never import the caller's script."""
    script = tmp_path / "unguarded.py"
    script.write_text("from parity import isolation\nprint('got', isolation.call('torch', 'operator:mul', 6, 7))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["got 42"]


@BOTH
def test_check_leaves_the_callers_state_as_it_was():
    """Flags, RNGs, environment and tracemalloc of the calling process are untouched by a check."""
    import torch

    from parity.case import default_cases
    from parity.harness import check

    torch.use_deterministic_algorithms(False)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    tracemalloc.start()
    blob = bytearray(4 << 20)  # a peak the caller owns
    del blob
    before = {
        "deterministic": (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        "tf32": (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32),
        "torch_rng": torch.get_rng_state(), "np_rng": np.random.get_state()[1].copy(), "py_rng": random.getstate(),
        "env": dict(os.environ), "peak": tracemalloc.get_traced_memory()[1],
    }
    try:
        assert check([default_cases()[1]]).passed
        after = {
            "deterministic": (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
            "tf32": (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32),
            "torch_rng": torch.get_rng_state(), "np_rng": np.random.get_state()[1].copy(), "py_rng": random.getstate(),
            "env": dict(os.environ), "peak": tracemalloc.get_traced_memory()[1],
        }
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert after["deterministic"] == before["deterministic"]
    assert after["tf32"] == before["tf32"]
    assert torch.equal(after["torch_rng"], before["torch_rng"])
    assert np.array_equal(after["np_rng"], before["np_rng"]) and after["py_rng"] == before["py_rng"]
    assert after["env"] == before["env"]
    assert after["peak"] >= before["peak"] >= 4 << 20  # not reset


def test_perturbed_inputs_move_by_at_most_one_ulp_and_masks_stay():
    from parity.case import Case

    case = Case("p", {"num_filters": 3, "a_channels": 2, "h_channels": 2, "dropout_p": 0.5})
    moved = case.perturbed(0)
    assert moved.perturbed(0).arrays.keys() == case.arrays.keys()
    changed = 0
    for k, v in case.arrays.items():
        w = moved.arrays[k]
        assert w.dtype == v.dtype == np.float32 and w.shape == v.shape
        if k == "dropout_mask":
            assert np.array_equal(w, v)
            continue
        ulps = np.abs(w.view(np.int32).astype(np.int64) - v.view(np.int32).astype(np.int64))
        assert ulps.max() <= 1, k
        changed += int(ulps.sum())
    assert changed > 0
    assert all(np.array_equal(moved.arrays[k], case.perturbed(0).arrays[k]) for k in case.arrays)  # reproducible
    assert any(not np.array_equal(moved.arrays[k], case.perturbed(1).arrays[k]) for k in case.arrays)


def test_the_monte_carlo_spread_widens_only_the_reference_floor_it_exceeds():
    from parity.tolerance import K, MCA, compare

    r64 = np.linspace(1.0, 3.0, 100)  # >= FEW elements: the reference's own floor alone counts
    ref = {"float32": r64.astype(np.float32), "float64": r64}
    other = {"float32": (r64 + 2e-6).astype(np.float32), "float64": r64 + 2e-6}  # its own float32 run is exact
    tight = compare("c", "t", "float32", ref, other)
    assert not tight.passed  # float32 rounding of values up to 3 (<= 1.2e-7) cannot cover 2e-6
    wide = compare("c", "t", "float32", {**ref, MCA: np.float64(1e-6)}, other)
    assert wide.passed and wide.bound == pytest.approx(K * 1e-6) and "spread" in wide.source
    same = compare("c", "t", "float32", {**ref, MCA: np.float64(1e-12)}, other)
    assert same.bound == tight.bound and not same.passed


def test_the_spread_draws_again_while_the_references_own_run_lies_beyond_k_times_it():
    """Three perturbed re-runs can be too few for a heavy-tailed error (a step-1 Adam moment of 8
    elements: its own float32 run 893 ulp off, its first 3 draws 183 at most): the case draws one
    more at a time until the unperturbed run is within K times the spread, and no more than
    MCA_GROWTH times as many, each counting for the tensors still beyond only; a case whose own runs
    are within K times its 3 draws draws 3."""
    from parity.harness import monte_carlo_spread
    from parity.tolerance import K, MCA_GROWTH, MCA_SAMPLES

    class Draws:  # a case whose perturbed copy ``s`` is the sample number itself
        def perturbed(self, s):
            return s

    exact = np.ones(8)
    results = {"float64": {"t": exact, "calm": exact}, "float32": {"t": (exact + 1e-5).astype(np.float32), "calm": exact}}
    gap = float(np.max(np.abs(results["float32"]["t"] - exact)))
    errors = [1e-6, 2e-6, 1e-6, 1e-6, gap / K * 1.01, 1.0]  # the 5th draw brings the spread to gap / K
    drawn = []

    def run32(sample):
        drawn.append(sample)
        return {"t": exact + errors[sample], "calm": exact + (1e-7 if sample < MCA_SAMPLES else 1e-3)}

    spread = monte_carlo_spread(run32, Draws(), results, MCA_SAMPLES)
    assert drawn == [0, 1, 2, 3, 4] and spread["t"] == pytest.approx(gap / K * 1.01)
    assert spread["calm"] == pytest.approx(1e-7)  # within K x its 3 draws: the later draws do not count for it
    drawn.clear()
    spread = monte_carlo_spread(lambda s: (drawn.append(s), {"t": exact + 1e-6})[1], Draws(), results, MCA_SAMPLES)
    assert drawn == list(range(MCA_GROWTH * MCA_SAMPLES)) and spread["t"] == pytest.approx(1e-6)  # gives up at the cap
    drawn.clear()
    calm = {"float64": {"t": exact}, "float32": {"t": (exact + 1e-6).astype(np.float32)}}
    monte_carlo_spread(lambda s: (drawn.append(s), {"t": exact + 1e-6})[1], Draws(), calm, MCA_SAMPLES)
    assert drawn == list(range(MCA_SAMPLES))


def test_record_refuses_results_that_verify_would_refuse_and_writes_nothing(tmp_path, monkeypatch):
    from parity import harness
    from parity.case import default_cases
    from parity.tolerance import MCA

    def inconsistent(backend, case, device="cpu", tf32=False, mca_samples=0):
        r64 = {"forward/out": np.linspace(1.0, 2.0, 100)}
        return {"float64": r64, "float32": {"forward/out": (r64["forward/out"] + 1e-3).astype(np.float32)},
                MCA: {"forward/out": np.float64(1e-7)}}

    monkeypatch.setattr(harness, "run_backend", inconsistent)
    path = tmp_path / "rec.safetensors"
    cases = default_cases()[:2]
    a, b = (re.escape(c.name) for c in cases)
    with pytest.raises(ValueError, match=f"tf on cpu: 2 case\\(s\\) would make an inconsistent record \\('{a}', '{b}'\\); "
                                         f"first, case '{a}' \\(1 tensor\\(s\\)\\): forward/out: .*; nothing written"):
        harness.record(path, "tf", cases=cases)
    assert not path.exists()


def test_the_other_backends_own_noise_counts_up_to_four_times_the_reference_spread():
    """A kernel rounding a few times worse than the reference passes; a precision loss does not."""
    from parity.tolerance import K, MCA, OTHER_UP_TO, compare

    rng = np.random.default_rng(0)
    r64 = 0.1 * rng.normal(size=1000)  # 1 ulp at scale (~4e-8) below the spread
    ref = {"float32": r64.astype(np.float32), "float64": r64, MCA: np.float64(1e-7)}
    noisy = r64 + rng.uniform(-3e-7, 3e-7, r64.shape)  # 3x the reference's spread, same function
    ok = compare("c", "t", "float32", ref, {"float32": noisy.astype(np.float32), "float64": r64})
    assert ok.passed and "other's float32 floor" in ok.source
    coarse = r64 + rng.uniform(-1e-4, 1e-4, r64.shape)  # TF32-like: ~1000x
    bad = compare("c", "t", "float32", ref, {"float32": coarse.astype(np.float32), "float64": r64})
    assert not bad.passed and bad.bound <= K * OTHER_UP_TO * 1e-7 * 1.01


def test_the_comparison_reports_bit_identity_overshoot_and_where_the_worst_is():
    from parity.tolerance import compare

    r64 = np.zeros((2, 3))
    r32 = r64.astype(np.float32)
    o32 = r32.copy()
    o32[1, 2] = 1.0
    o32[0, 1] = 0.5
    c = compare("c", "t", "float32", {"float32": r32, "float64": r64}, {"float32": o32, "float64": r64})
    assert not c.passed and c.over == 2 and c.worst_index == (1, 2) and c.identical == pytest.approx(4 / 6)


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_records_carry_the_monte_carlo_spread_and_old_records_are_refused(tmp_path):
    from safetensors.numpy import save_file

    from parity.cli import BUILTIN_RECORD
    from parity.harness import RECORD_FORMAT, load_record
    from parity.tolerance import MCA

    metadata, recorded = load_record(BUILTIN_RECORD)
    assert metadata["format"] == RECORD_FORMAT and int(metadata["mca_samples"]) > 0
    for _case, results in recorded:
        assert set(results) == {"float32", "float64", MCA} and set(results[MCA]) == set(results["float32"])
    old = tmp_path / "old.safetensors"
    save_file({"0/in/x": np.zeros(1, np.float32)}, str(old), metadata={"format": "gated-resnet-parity-record/1"})
    with pytest.raises(ValueError, match="record/2"):
        load_record(old)


def test_tensorflows_start_up_notices_are_dropped_and_other_stderr_kept(tmp_path):
    """A worker's stderr reaches the caller's without the start-up lines that say nothing about the run."""
    script = tmp_path / "noisy.py"
    script.write_text(
        "from parity import isolation\n"
        "isolation.call('torch', 'os:write', 2, b'I0000 00:00:1 port.cc:153] oneDNN custom operations are on. You may\\n')\n"
        "isolation.call('torch', 'os:write', 2, b'a real warning\\n')\n"
        "isolation.shutdown()\n")
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("PARITY_TF_LOGS", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "a real warning" in proc.stderr and "oneDNN custom operations" not in proc.stderr
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                          env={**env, "PARITY_TF_LOGS": "1"})
    assert "oneDNN custom operations" in proc.stderr
