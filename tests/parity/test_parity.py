"""The harness, the weight file, record/verify across processes, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from parity.case import default_cases
from tests.conftest import BACKEND_PARAMS, BOTH, CUDA, HAVE, ROOT, run_cli


@BOTH
@pytest.mark.parametrize("case", default_cases(), ids=lambda c: c.name)
def test_harness_passes_every_default_case(case):
    from parity.harness import compare_runs, run_backend
    from parity.tolerance import MCA_SAMPLES

    report = compare_runs(case.name, run_backend("tf", case, mca_samples=MCA_SAMPLES), run_backend("torch", case))
    bad = [f"{c.tensor} {c.dtype}: {c.max_abs:.3e} > {c.bound:.3e} {c.note}" for c in report.comparisons if not c.passed]
    assert not bad, f"{case.name}: first failure {bad[0]} ({len(bad)} in all)"
    kinds = {c.tensor.split("/")[0] for c in report.comparisons}
    assert {"forward", "grad", "init", "ema", "ema_forward"} <= kinds
    shadows = [c for c in report.comparisons if c.tensor.startswith("ema/") and c.tensor != "ema/out"]
    assert shadows and all(c.max_abs == 0 and c.bound == 0 for c in shadows), "EMA shadows must be bit-identical"


@BOTH
def test_harness_flags_a_wrong_translation_at_its_stage(monkeypatch):
    """Swapping value and gate in torch (pitfall 11) fails at forward/value, not earlier. The patch
    lives in this process, so the backends run here too (safe in the tests, see conftest.py)."""
    import torch_impl.block as tb
    from parity.harness import compare_runs, run_backend
    from parity.isolation import IN_PROCESS_ENV
    from parity.tolerance import MCA_SAMPLES

    monkeypatch.setenv(IN_PROCESS_ENV, "1")
    case = default_cases()[1]
    ref = run_backend("tf", case, mca_samples=MCA_SAMPLES)
    original = tb.GatedResnet._run

    def swapped(self, *args, **kwargs):
        stages = original(self, *args, **kwargs)
        value, gate = stages["gate_logits"], stages["value"]
        stages.update(value=value, gate_logits=gate, out=args[0] + value * __import__("torch").sigmoid(gate))
        return stages

    monkeypatch.setattr(tb.GatedResnet, "_run", swapped)
    report = compare_runs(case.name, ref, run_backend("torch", case))
    assert not report.passed
    assert report.first_failure.tensor == "forward/value"


@BOTH
def test_record_with_tf_then_verify_with_torch_without_tensorflow(tmp_path):
    rec = tmp_path / "ref.safetensors"
    r = run_cli("record", str(rec), "--backend", "tf")
    assert r.returncode == 0, r.stderr
    # verify in a process where TensorFlow cannot be imported at all.
    blocker = tmp_path / "block_tf"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text("raise ImportError('TensorFlow is blocked in this test')\n")
    env = {"PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    r = subprocess.run([sys.executable, "-m", "parity", "verify", str(rec), "--json"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["passed"] and len(report["cases"]) == len(default_cases())
    assert report["reference"] == "tf (recorded)"


@BOTH
def test_cli_check_exit_code_and_json():
    r = run_cli("check", "--json", "--dtype", "float64")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["passed"]
    t = report["cases"][0]["tensors"][0]
    assert {"max_abs", "max_rel", "ulp", "bound", "ratio", "source", "passed"} <= set(t)


def test_cli_errors_exit_2(tmp_path):
    r = run_cli("run", "--weights", str(tmp_path / "missing.safetensors"), "--inputs", str(tmp_path / "x.npz"),
             "--out", str(tmp_path / "y.npz"))
    assert r.returncode == 2
    assert "error:" in r.stderr


@BOTH
def test_parity_holds_at_pixelcnn_width():
    """F = 160 as in PixelCNN++: each conv sums 1920 products per output. The built-in suite's F = 4
    cannot show a kernel whose float32 error grows with the sum's length faster than the reference's."""
    from parity.case import wide_cases
    from parity.harness import check

    report = check(wide_cases()[:1])  # the other wide case: `check --suite wide`
    worst = max(report.cases[0].comparisons, key=lambda c: c.ratio)
    assert report.passed, f"{worst.tensor}: {worst.max_abs:.3e} > bound {worst.bound:.3e}"


def test_cli_takes_the_suites():
    from parity.case import SUITES
    from parity.cli import build_parser

    for name in SUITES:
        for command in (["check", "--suite", name], ["record", "out.safetensors", "--suite", name]):
            assert build_parser().parse_args(command).suite == name
    wide = SUITES["wide"]()
    assert [c.config.get("num_filters", c.config.get("nr_filters")) for c in wide] == [160, 160, 160, 256]
    assert [type(c).__name__ for c in wide[-2:]] == ["ModelCase", "ModelCase"]  # PixelCNN++ at its width, PixelSNAIL at its released width
    assert [c.kind for c in wide[-2:]] == ["pixelcnn_pp", "h12_noup_smallkey"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", "--suite", "huge"])


@BOTH
def test_every_conv_layer_alone_passes_and_its_record_verifies(tmp_path):
    """The `layers` suite: the 6 weight-normalised conv kinds (the transposed ones are not in the block)
    at 3 strides, each compared alone; then one recorded with TF and verified with torch from the file."""
    from parity.case import LayerCase, layer_cases
    from parity.harness import check, load_record, record, verify

    cases = layer_cases()
    assert {c.kind for c in cases} == {"conv2d", "deconv2d", "down_shifted_conv2d", "down_right_shifted_conv2d",
                                       "down_shifted_deconv2d", "down_right_shifted_deconv2d"}
    report = check(cases)
    bad = [f"{c.case} {c.tensor} {c.dtype}: {c.max_abs:.3e} > {c.bound:.3e}" for r in report.cases for c in r.comparisons
           if not c.passed]
    assert not bad, bad[:3]
    rec = tmp_path / "layers.safetensors"
    record(rec, "tf", cases=cases[4:5])  # deconv2d, stride (2, 2)
    (case, _), = load_record(rec)[1]
    assert isinstance(case, LayerCase) and case.kind == "deconv2d" and case.stride == (2, 2)
    assert verify(rec, "torch").passed


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_shipped_records_verify_with_torch(device):
    """The records shipped in parity/data (TF on CPU: the default suite and the single layers) verify
    with torch alone, as on a machine without TensorFlow (the GPU machine)."""
    from parity.cli import BUILTIN_LAYERS_RECORD, BUILTIN_RECORD
    from parity.harness import verify

    for path in (BUILTIN_RECORD, BUILTIN_LAYERS_RECORD):
        report = verify(path, "torch", device)
        bad = [f"{c.case} {c.tensor} {c.dtype}: {c.max_abs:.3e} > {c.bound:.3e}" for r in report.cases
               for c in r.comparisons if not c.passed]
        assert not bad, f"{os.path.basename(path)}: {bad[:3]}"


def _tampered(tmp_path, change):
    """The shipped record with ``change(tensors)`` applied to its first case."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    from parity.cli import BUILTIN_RECORD

    tensors = load_file(BUILTIN_RECORD)
    with safe_open(BUILTIN_RECORD, "np") as f:
        metadata = f.metadata()
    change(tensors)
    out = tmp_path / "tampered.safetensors"
    save_file(tensors, str(out), metadata=metadata)
    return out


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_a_tampered_record_is_refused_or_fails_the_float64_gate(tmp_path):
    """One float64 element moved by 0.01 would widen every float32 bound of that tensor; the record's
    own consistency check refuses it. Moved together with its recorded spread, the spread is refused
    as implausible (over 16 x the record's own float32 error, negative, NaN, or over 2^-8 of the
    scale); moved by a plausible amount, the float64 comparison (run even with --dtype float32) fails it."""
    from parity.harness import verify

    key = "0/out/float64/forward/out"

    def move(tensors):
        tensors[key] = tensors[key].copy()
        tensors[key].flat[0] += 0.01

    with pytest.raises(ValueError, match="not a consistent record.*forward/out"):
        verify(_tampered(tmp_path, move), "torch", dtypes=("float32",))

    def move_with_spread(tensors, by=0.01, spread=1.0):
        tensors[key] = tensors[key].copy()
        tensors[key].flat[0] += by
        tensors["0/out/mca/forward/out"] = np.array(spread)

    def shift_all(tensors, spread):  # the reference moved by 0.5 in both dtypes, its spread inflated to hide it
        for dtype in ("float32", "float64"):
            tensors[f"0/out/{dtype}/forward/out"] = tensors[f"0/out/{dtype}/forward/out"] + 0.5
        tensors["0/out/mca/forward/out"] = np.array(spread)

    for spoil, message in ((move_with_spread, "spread 1.000e\\+00 is over 16 x the record's own float32 error"),
                           (lambda t: move_with_spread(t, 0.0, -1.0), "the recorded spread is \\[-1.0\\]; expected a finite value >= 0"),
                           (lambda t: move_with_spread(t, 0.0, np.nan), "expected a finite value >= 0"),
                           (lambda t: shift_all(t, 1e8), "spread 1.000e\\+08 is over 16 x"),
                           (lambda t: (shift_all(t, 1e8), t.__setitem__("0/out/float32/forward/out", t["0/out/float32/forward/out"] + 1e8)),
                            "over 2\\^-8 of the tensor's scale")):
        with pytest.raises(ValueError, match=message):
            verify(_tampered(tmp_path, spoil), "torch", dtypes=("float32",))

    # a shift and spread small enough to be plausible pass the float32 bound; the float64 gate fails them
    report = verify(_tampered(tmp_path, lambda t: move_with_spread(t, 1e-4, 1e-4)), "torch", dtypes=("float32",))
    assert not report.passed
    bad = [c for c in report.cases[0].comparisons if not c.passed]
    assert [(c.dtype, c.tensor) for c in bad][:1] == [("float64", "forward/out")] and "float64 gate" in bad[0].note
    assert all(c.passed for c in report.cases[0].comparisons if c.dtype == "float32")  # what the attack aimed at


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_each_backend_implements_the_interface_as_written(name):
    """Both backend modules define every member of ``parity.backends.interface.Backend``, each method
    with the parameters (names, order, defaults) written there."""
    import inspect

    from parity.backends import get_backend
    from parity.backends.interface import members

    module = get_backend(name)
    for member, spec in members().items():
        assert hasattr(module, member), f"{name} backend lacks {member}"
        if not callable(spec):
            continue
        want = [(p.name, p.default) for p in inspect.signature(spec).parameters.values() if p.name != "self"]
        got = [(p.name, p.default) for p in inspect.signature(getattr(module, member)).parameters.values()]
        assert got == want, f"{name} backend's {member}{inspect.signature(getattr(module, member))} differs from the interface"
