"""Hostile weight files and hostile inputs: each fails loudly with a clear message and changes nothing,
or (inputs) is carried through the parity check and reported. docs/hostile_files.md lists the cases."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from tests.conftest import BACKEND_PARAMS, BOTH, HAVE, ROOT

CONFIG = {"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": "down_shifted_conv2d", "polyak_decay": 0.9995}


class _Payload:
    """Unpickling this would create the marker file: the test proves it never happens."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _good():
    from parity.case import random_weights

    return random_weights(CONFIG, seed=3, shadows=True)


def _save(path, tensors, metadata=None):
    import json

    from safetensors.numpy import save_file

    from parity.formats.canonical import FORMAT_TAG as FORMAT

    from parity.configs import normalize_config

    meta = {"format": FORMAT, "config": json.dumps(normalize_config(CONFIG)), "initialized": "true"}
    meta.update(metadata or {})
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)


def _with(**changes):
    def make(path):
        tensors = _good()
        for k, v in changes.items():
            k = k.replace("__", "/")
            if v is None:
                tensors.pop(k)
            else:
                tensors[k] = v(tensors.get(k)) if callable(v) else v
        _save(path, tensors)

    return make


def _truncated(path):
    _save(path, _good())
    body = open(path, "rb").read()
    open(path, "wb").write(body[: len(body) // 2])


def _bytes(data):
    def make(path):
        open(path, "wb").write(data)

    return make


def _pickle(path):
    with open(path, "wb") as f:
        pickle.dump({"conv2d_0/V": _Payload(str(path) + ".unpickled")}, f, protocol=2)


def _zip(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:  # what torch.save writes: a zip holding data.pkl
        z.writestr("archive/data.pkl", pickle.dumps({"conv2d_0/V": _Payload(str(path) + ".unpickled")}))


def _meta(**metadata):
    def make(path):
        _save(path, _good(), metadata)

    return make


def _nan(v):
    v = v.copy()
    v.flat[1] = np.nan
    return v


def _inf(v):
    v = v.copy()
    v.flat[0] = -np.inf
    return v


# (case id, file name, writer, message pattern). The ids are listed in docs/hostile_files.md.
HOSTILE = [
    ("truncated", "w.safetensors", _truncated, r"expected a safetensors file; could not read it"),
    ("not-safetensors", "w.safetensors", _bytes(b"hello, I am not a weight file at all"), r"expected a safetensors file; could not read it"),
    ("empty", "w.safetensors", _bytes(b""), r"expected a safetensors file; could not read it"),
    ("pickle", "w.safetensors", _pickle, r"received a pickle/zip file .* refused: it is never unpickled"),
    ("torch-save-zip", "w.safetensors", _zip, r"received a pickle/zip file .* refused: it is never unpickled"),
    ("pickle-suffix", "w.pt", _pickle, r"pickle files are refused \(never unpickled\)"),
    ("int-dtype", "w.safetensors", _with(conv2d_0__g=lambda v: v.astype(np.int32)), r"tensor 'conv2d_0/g' has dtype int32; expected float32 or float64"),
    ("float16", "w.safetensors", _with(dense_0__V=lambda v: v.astype(np.float16)), r"tensor 'dense_0/V' has dtype float16; expected float32 or float64"),
    ("mixed-dtypes", "w.safetensors", _with(conv2d_1__b=lambda v: v.astype(np.float64)), r"tensors mix dtypes \['float32', 'float64'\]"),
    ("nan", "w.safetensors", _with(conv2d_1__V=_nan), r"tensor 'conv2d_1/V' holds NaN or Inf values"),
    ("inf-shadow", "w.safetensors", _with(conv2d_0__V__ExponentialMovingAverage=_inf), r"tensor 'conv2d_0/V/ExponentialMovingAverage' holds NaN or Inf values"),
    ("missing", "w.safetensors", _with(dense_0__V=None), r"missing tensor 'dense_0/V' \(expected shape \(6, 4\)\)"),
    ("extra", "w.safetensors", _with(conv2d_9__V=np.zeros((2, 3, 8, 4), np.float32)), r"unexpected tensor 'conv2d_9/V' with shape \(2, 3, 8, 4\)"),
    ("broadcastable-g", "w.safetensors", _with(conv2d_0__g=np.ones(1, np.float32)), r"tensor 'conv2d_0/g' has shape \(1,\); expected \(4,\)"),
    ("broadcastable-V", "w.safetensors", _with(conv2d_1__V=np.zeros((1, 1, 8, 8), np.float32)), r"tensor 'conv2d_1/V' has shape \(1, 1, 8, 8\); expected \(2, 3, 8, 8\)"),
    ("transposed-hw", "w.safetensors", _with(conditional_weights_0__hw=lambda v: np.ascontiguousarray(v.T)), r"tensor 'conditional_weights_0/hw' has shape \(8, 2\); expected \(2, 8\)"),
    ("metadata-config-contradicts", "w.safetensors", _meta(config='{"num_filters": 8, "a_channels": 3, "h_channels": 2, "conv": "down_shifted_conv2d", "polyak_decay": 0.9995}'),
     r"tensors against the config in its metadata.*tensor 'conv2d_0/V' has shape \(2, 3, 8, 4\); expected \(2, 3, 16, 8\)"),
    ("metadata-unknown-key", "w.safetensors", _meta(config='{"num_filters": 4, "filters": 4}'), r"unknown keys: \['filters'\]"),
    ("metadata-initialized", "w.safetensors", _meta(initialized='"yes"'), r"expected metadata initialized to be true or false; received 'yes'"),
    ("metadata-not-json", "w.safetensors", _meta(config="num_filters=4"), r"expected metadata 'config' \(JSON\)"),
    ("metadata-nested-json", "w.safetensors", _meta(config="[" * 100000 + "]" * 100000), r"expected metadata 'config' \(JSON\)"),
    ("metadata-config-types", "w.safetensors", _meta(config='{"num_filters": 4.0, "a_channels": 3, "h_channels": 2, "conv": "down_shifted_conv2d"}'),
     r"Expected a strictly positive integer. Received: num_filters=4.0"),
    ("metadata-dropout-range", "w.safetensors", _meta(config='{"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": "down_shifted_conv2d", "dropout_p": 5}'),
     r"Expected dropout_p to be a number in \[0, 1\). Received: dropout_p=5"),
    ("metadata-decay-type", "w.safetensors", _meta(config='{"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": "down_shifted_conv2d", "polyak_decay": "abc"}'),
     r"Expected polyak_decay to be a number in \[0, 1\]. Received: polyak_decay='abc'"),
    ("metadata-shadows-no-decay", "w.safetensors", _meta(config='{"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": "down_shifted_conv2d"}'),
     r"holds Polyak shadows \(\*/ExponentialMovingAverage\) but its config has polyak_decay=None"),
    ("metadata-format", "w.safetensors", _meta(format="something-else/2"), r"expected metadata format 'gated-resnet-parity/1' \(canonical\).*received format='something-else/2'"),
]


def _snapshot(backend, block):
    if backend == "torch":
        return {k: v.detach().clone().numpy() for k, v in block.state_dict().items()}
    return {v.path: np.array(v.numpy()) for v in block.weights}


def _build(backend):
    from parity.backends import get_backend

    module = get_backend(backend)
    block = module.build(CONFIG)
    return block


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("case_id,name,write,pattern", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_weight_file_is_refused_and_changes_nothing(tmp_path, backend, case_id, name, write, pattern):
    from parity.running import load_into

    path = str(tmp_path / name)
    write(path)
    block = _build(backend)
    before = _snapshot(backend, block)
    with pytest.raises((ValueError, RuntimeError)) as err:
        load_into(block, path)
    import re

    assert re.search(pattern, str(err.value), re.S), f"{case_id}: message was {err.value}"
    after = _snapshot(backend, block)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=f"{case_id} changed {k}")
    assert not os.path.exists(path + ".unpickled"), "a pickle was unpickled"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_a_good_file_loads_and_a_different_config_is_named(tmp_path, backend):
    from parity.running import load_into
    from parity.formats.canonical import save_canonical

    path = str(tmp_path / "w.safetensors")
    save_canonical(path, _good(), CONFIG, initialized=True)
    block = _build(backend)
    load_into(block, path)
    assert bool(block.initialized)
    other = str(tmp_path / "other.safetensors")
    save_canonical(other, {k: v for k, v in _good().items() if "dense_0" not in k},
                   {**CONFIG, "a_channels": None}, initialized=True)
    before = _snapshot(backend, block)
    with pytest.raises(ValueError, match=r"holds a block with a_channels=None; the target block has a_channels=3"):
        load_into(block, other)
    for k, v in _snapshot(backend, block).items():
        np.testing.assert_array_equal(before[k], v)


def test_the_docs_list_every_hostile_case():
    text = open(os.path.join(ROOT, "docs", "hostile_files.md")).read()
    missing = [h[0] for h in HOSTILE if f"`{h[0]}`" not in text]
    assert not missing, f"docs/hostile_files.md does not list {missing}"


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_torch_load_state_dict_is_all_or_nothing():
    """torch's own load_state_dict copies what fits, then raises; torch_impl's checks everything first."""
    import torch

    import torch_impl

    block = torch_impl.GatedResnet(4, a_channels=3, h_channels=2, polyak_decay=0.9)
    before = {k: v.clone() for k, v in block.state_dict().items()}
    good = {k: v + 1 if v.is_floating_point() else v for k, v in block.state_dict().items()}
    hostile = [
        ({**good, "conv_input.g": torch.ones(1)}, r"'conv_input.g': expected shape \(4,\); received \(1,\) \(no broadcasting\)"),
        ({k: v for k, v in good.items() if k != "hw_ema"}, r"missing key 'hw_ema' \(expected shape \(2, 8\)"),
        ({**good, "conv_input.V_avg": torch.ones(1)}, r"unexpected key 'conv_input.V_avg'"),
        ({**good, "nin_skip.V": good["nin_skip.V"].long()}, r"'nin_skip.V': expected a floating dtype like torch.float32; received torch.int64"),
        ({**good, "conv_output.b": torch.full((8,), float("nan"))}, r"'conv_output.b': holds NaN or Inf values"),
        ({**good, "conv_input.initialized": torch.tensor(1.0)}, r"'conv_input.initialized': expected dtype torch.bool"),
    ]
    for state, pattern in hostile:
        with pytest.raises(torch_impl.StateDictError, match=pattern):
            block.load_state_dict(state)
        for k, v in block.state_dict().items():
            assert torch.equal(v, before[k]), f"{pattern}: {k} changed"
    block.load_state_dict(good)
    assert torch.equal(block.conv_input.V, good["conv_input.V"])


# -- hostile inputs ------------------------------------------------------------------------------
def _case(**kw):
    from parity.case import Case

    config = {"num_filters": 4, "a_channels": 3, "h_channels": 2, "conv": kw.pop("conv", "down_shifted_conv2d"),
              "nonlinearity": kw.pop("nonlinearity", "concat_elu"), "dropout_p": kw.pop("dropout_p", 0.0)}
    return Case(kw.pop("name", "hostile"), config, **kw)


def _parity(case):
    from parity.harness import check

    return check([case]).cases[0]


@BOTH
@pytest.mark.parametrize("nonlinearity", ["concat_elu", "elu", "relu"])
@pytest.mark.parametrize("where", ["x", "a", "h"])
def test_nan_and_inf_inputs_are_compared_by_position(where, nonlinearity):
    case = _case(nonlinearity=nonlinearity)
    arr = case.arrays[where].copy()
    arr.flat[0] = np.nan
    arr.flat[-1] = np.inf if where != "x" else -np.inf
    case.arrays[where] = arr
    report = _parity(case)
    bad = [f"{c.tensor} {c.dtype}: {c.note or c.max_abs}" for c in report.comparisons if not c.passed]
    assert not bad, bad[:5]
    out = next(c for c in report.comparisons if c.tensor == "forward/out")
    assert "NaN/Inf entries, same positions" in out.note


def test_nan_positions_that_differ_fail_the_comparison():
    from parity.tolerance import compare

    ref = np.array([1.0, np.nan, 3.0, np.inf], np.float32)
    same = {"float32": ref, "float64": ref.astype(np.float64)}
    moved = np.array([1.0, 2.0, np.nan, np.inf], np.float32)
    c = compare("t", "x", "float32", same, {"float32": moved, "float64": moved.astype(np.float64)})
    assert not c.passed and "NaN/Inf positions differ (2 in reference, 2 here)" in c.note
    flipped = np.array([1.0, np.nan, 3.0, -np.inf], np.float32)
    assert not compare("t", "x", "float32", same, {"float32": flipped, "float64": flipped.astype(np.float64)}).passed
    assert compare("t", "x", "float32", same, same).passed


@BOTH
@pytest.mark.parametrize("conv", ["nin", "conv2d", "down_shifted_conv2d", "down_right_shifted_conv2d"])
def test_a_zero_variance_init_batch_stays_finite_and_is_reported(conv):
    """A constant init batch: the variance is 0 up to rounding, so g = init_scale / sqrt(v + eps) is
    1e4..1e5 and each later layer initialises on rounding noise amplified that much. The problem is
    ill-conditioned (float32 and float64 runs of one backend differ by O(1) and more): init must stay
    finite, the harness must report it, and the first conv layer's g, b (well-conditioned) agree."""
    from parity.harness import compare_runs, run_backend

    case = _case(conv=conv)
    for k in ("x", "a"):
        case.arrays[k] = np.full_like(case.arrays[k], 0.5)
    case.arrays["h"] = np.full_like(case.arrays["h"], 0.25)
    runs = {backend: run_backend(backend, case) for backend in ("tf", "torch")}
    for backend, by_dtype in runs.items():
        for dtype, got in by_dtype.items():
            for k, v in got.items():
                if k.startswith("init/"):
                    assert np.all(np.isfinite(v)), f"{backend} {dtype} {k} is not finite"
    report = compare_runs(case.name, runs["tf"], runs["torch"])
    assert len(report.comparisons) > 50
    if conv != "nin":
        first = [c for c in report.comparisons if c.tensor in ("init/conv2d_0/g", "init/conv2d_0/b")]
        assert len(first) == 4 and all(c.passed for c in first), [(c.tensor, c.max_abs, c.bound) for c in first]


@BOTH
@pytest.mark.parametrize("conv", ["conv2d", "down_shifted_conv2d", "down_right_shifted_conv2d", "nin"])
@pytest.mark.parametrize("size", [(1, 1, 1), (1, 1, 6), (2, 5, 1)], ids=["1x1x1", "B1-H1", "W1"])
def test_batch_of_one_and_unit_height_or_width(conv, size):
    batch, height, width = size
    report = _parity(_case(conv=conv, batch=batch, height=height, width=width))
    bad = [f"{c.tensor} {c.dtype}: {c.max_abs:.3e} > {c.bound:.3e} {c.note}" for c in report.comparisons if not c.passed]
    assert not bad, bad[:5]


@BOTH
def test_huge_magnitudes_are_reported_not_a_crash():
    from parity.cli import format_report
    from parity.harness import Report

    case = _case()
    case.arrays["x"] = case.arrays["x"] * np.float32(1e30)
    case_report = _parity(case)
    report = Report("tf", "torch", [case_report])
    text = format_report(report, verbose=True)
    assert "forward/out" in text and ("PASS" in text or "FAIL" in text)
    out = next(c for c in case_report.comparisons if c.tensor == "forward/out" and c.dtype == "float32")
    assert out.passed, f"forward/out with |x| ~ 1e30: {out.max_abs:.3e} > {out.bound:.3e} {out.note}"


def test_comparing_a_big_tensor_needs_a_few_chunks_of_memory_not_float64_copies():
    """20M float32 elements (80 MB): float64 copies of r and o would need 320 MB; chunks need ~50."""
    from parity.harness import peak_memory
    from parity.tolerance import compare

    rng = np.random.default_rng(0)
    r32 = rng.standard_normal(20_000_000, dtype=np.float32)
    o32 = r32 + np.float32(1e-7) * np.sign(r32)
    r64, o64 = r32.astype(np.float64), o32.astype(np.float64)
    with peak_memory() as peak:
        c = compare("big", "t", "float32", {"float32": r32, "float64": r64}, {"float32": o32, "float64": o64})
    assert c.max_abs > 0 and c.ulp >= 1
    assert peak[0] < 64, f"peak extra memory {peak[0]:.1f} MiB"


# -- initialize: every argument checked before the first write; a failure changes nothing ----------
def _fresh_block(twin, **config):
    config = {"num_filters": 3, "a_channels": 2, "h_channels": 2, "conv": "down_shifted_conv2d", "dropout_p": 0.5, **config}
    return twin.make("GatedResnet", **config)


def _flags(block):
    return [m.is_initialized for m in block.wn_layers]


_RNG = np.random.default_rng(3)
_X, _A, _H = _RNG.normal(size=(2, 4, 5, 3)), _RNG.normal(size=(2, 4, 5, 2)), _RNG.normal(size=(2, 2))


@pytest.mark.parametrize("what", ["a missing", "h missing", "batch 0", "mask of the wrong type"])
def test_a_refused_initialize_changes_nothing_and_can_be_retried(twin, what):
    block = _fresh_block(twin)
    before = [(twin.get(layer, "g").copy(), twin.get(layer, "b").copy()) for layer in block.wn_layers]
    x, a, h, mask = twin.tensor(_X), twin.tensor(_A), twin.tensor(_H), None
    if what == "a missing":
        a = None
    elif what == "h missing":
        h = None
    elif what == "batch 0":
        x, a, h = twin.tensor(_X[:0]), twin.tensor(_A[:0]), twin.tensor(_H[:0])
    else:
        mask = np.ones((2, 4, 5, 6)) if twin.name == "torch" else twin.tensor(np.ones((2, 4, 5, 6), np.int32))
    expected = {"a missing": "expected `a`", "h missing": "expected `h`", "batch 0": "at least one image",
                "mask of the wrong type": "dropout_mask"}[what]
    with pytest.raises(ValueError, match=expected):
        block.initialize(x, a, h, dropout_mask=mask)
    assert _flags(block) == [False] * len(block.wn_layers)
    for layer, (g, b) in zip(block.wn_layers, before):
        np.testing.assert_array_equal(twin.get(layer, "g"), g)
        np.testing.assert_array_equal(twin.get(layer, "b"), b)
    block.initialize(twin.tensor(_X), twin.tensor(_A), twin.tensor(_H))  # the retry works
    assert _flags(block) == [True] * len(block.wn_layers)


def test_a_layer_refuses_an_empty_init_batch(twin):
    layer = twin.make("DownShiftedConv2D", 3, 4)
    with pytest.raises(ValueError, match="at least one image"):
        twin.initialize(layer, _X[:0])
    assert not layer.is_initialized


def test_a_block_called_before_initialize_warns_once(twin):
    import warnings

    block = _fresh_block(twin, dropout_p=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            block(twin.tensor(_X), twin.tensor(_A), twin.tensor(_H))
    assert [str(w.message) for w in caught if "before initialize()" in str(w.message)] and \
        sum("before initialize()" in str(w.message) for w in caught) == 1
    block2 = _fresh_block(twin, dropout_p=0.0)
    block2.initialize(twin.tensor(_X), twin.tensor(_A), twin.tensor(_H))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        block2(twin.tensor(_X), twin.tensor(_A), twin.tensor(_H))
    assert not [w for w in caught if "before initialize()" in str(w.message)]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_a_model_run_by_its_backend_before_initialize_warns(backend):
    """The backends run nets inside tf.function / as torch modules: an uninitialised model warns in
    both (TensorFlow's check read the flags only when eager, and a traced call skipped it)."""
    import warnings

    from parity.backends import get_backend
    from parity.case import random_weights

    module = get_backend(backend)
    config = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "polyak_decay": None}
    model = module.build(config, "float32")
    module.import_weights(model, random_weights(config, 0), False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.apply(model, {"x": np.zeros((1, 4, 4, 3), np.float32)}, use_ema=False, init=False)
    assert any("called before initialize()" in str(w.message) for w in caught)


@pytest.mark.parametrize("value,message", [(1e39, "beyond float32's range"), (1e-40, "below float32's smallest normal")])
def test_float64_values_that_float32_cannot_hold_are_refused_on_load(twin, tmp_path, value, message):
    """Checked in the dtype they will have after loading: a float64 file into a float32 block."""
    from parity.running import load_into
    from parity.errors import WeightError
    from parity.case import random_weights
    from parity.formats.canonical import save_canonical

    config = {"num_filters": 3, "conv": "down_shifted_conv2d"}
    w = random_weights(config, seed=0, dtype=np.float64)
    w["conv2d_0/g"][1] = value
    save_canonical(tmp_path / "w64.safetensors", w, config, initialized=True)
    block = twin.make("GatedResnet", 3, conv="down_shifted_conv2d", dtype="float32")
    before = twin.get(block.conv_input, "g").copy()
    with pytest.raises(WeightError, match=message):
        load_into(block, str(tmp_path / "w64.safetensors"))
    np.testing.assert_array_equal(twin.get(block.conv_input, "g"), before)


def test_torch_load_state_dict_refuses_values_the_parameter_dtype_cannot_hold():
    torch = pytest.importorskip("torch")
    import torch_impl

    layer = torch_impl.DownShiftedConv2D(3, 4)
    state = {k: v.double() if v.is_floating_point() else v for k, v in layer.state_dict().items()}
    state["g"] = state["g"].clone()
    state["g"][0] = 1e39
    state["b"] = state["b"].clone()
    state["b"][0] = 1e-300
    with pytest.raises(torch_impl.StateDictError) as err:
        layer.load_state_dict(state)
    assert "beyond torch.float32's range" in str(err.value) and "smallest normal" in str(err.value)
    assert torch.all(layer.g == 1)


# -- the command line: a user's mistake is one line on stderr and exit code 2, never a traceback ----
def _cli_files(tmp_path, shadows=True):
    """A good canonical file (with or without shadows), its torch state_dict file, and good inputs."""
    from parity.formats.torch_file import write_torch_file
    from parity.case import random_weights
    from parity.formats.canonical import save_canonical

    config = dict(CONFIG) if shadows else {**CONFIG, "polyak_decay": None}
    w = random_weights(config, seed=0, shadows=shadows)
    save_canonical(tmp_path / "w.safetensors", w, config, initialized=True)
    write_torch_file(str(tmp_path / "w.torch.safetensors"), w, config, initialized=True)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(2, 4, 5, 4)).astype(np.float32), "a": rng.normal(size=(2, 4, 5, 3)).astype(np.float32),
              "h": rng.normal(size=(2, 2)).astype(np.float32)}
    np.savez(tmp_path / "x.npz", **inputs)
    return inputs


def _rewrite_torch_file(path, change, metadata=None):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
    tensors, meta = change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _npz(**arrays):
    """Rewrite the inputs file with ``arrays`` changed (``None``: left out)."""
    def write(tmp_path, inputs):
        merged = {**inputs, **arrays}
        np.savez(tmp_path / "x.npz", **{k: v for k, v in merged.items() if v is not None})
    return write


def _edit_canonical(path, name, value):
    from parity.formats.canonical import load_canonical, save_canonical

    tensors, config, initialized = load_canonical(path)
    tensors[name] = np.full_like(tensors[name], value)
    save_canonical(path, tensors, config, initialized)


def _npz_with_huge_member(path, name):
    """An .npz whose member ``name`` declares 4 GiB (a sparse hole, stored uncompressed): reading it would cost 4 GiB."""
    import zipfile

    header = b"\x93NUMPY\x01\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1073741824,), }".ljust(118) + b"\n"
    with zipfile.ZipFile(path, "a") as z, z.open(name + ".npy", "w", force_zip64=True) as member:
        member.write(header)
        member.write(bytes(1 << 20))  # the first MiB of the 4 GiB it declares is enough to make it a member


CLI_CASES = [  # (case id, how to spoil the files, extra arguments, message). Listed in docs/hostile_files.md.
    ("npy-inputs", lambda t, i: np.save(t / "x.npz.npy", i["x"]), ["--inputs", "{t}/x.npz.npy"], "expected an .npz archive of named arrays"),
    ("input-int", _npz(x=np.zeros((2, 4, 5, 4), np.int32)), [], "expected `x` of dtype float32 or float64 (no silent casts); received dtype int32"),
    ("input-complex", _npz(h=np.zeros((2, 2), np.complex64)), [], "expected `h` of dtype float32 or float64 (no silent casts); received dtype complex64"),
    ("input-unknown-name", _npz(y=np.zeros(1, np.float32)), [], "x, and a, h where the block or model has them); received also ['y']"),
    ("input-missing-a", _npz(a=None), [], "expected `a` (this block was built with a_channels=3); received none"),
    ("weights-overflow", lambda t, i: _edit_canonical(t / "w.safetensors", "conv2d_0/g", 3e38), [],
     "finite weights and inputs gave NaN/Inf ("),
    ("input-batch-0", _npz(x=np.zeros((0, 4, 5, 4), np.float32), a=np.zeros((0, 4, 5, 3), np.float32), h=np.zeros((0, 2), np.float32)),
     ["--backend", "tf"], "expected `x` with at least one image; received shape (0, 4, 5, 4)"),
    ("input-nhwc-channels", _npz(x=np.zeros((2, 4, 5, 5), np.float32)), [],
     "GatedResnet: expected `x` with 4 channels on axis 3, NHWC (B, H, W, C); received shape (2, 4, 5, 5)"),
    ("input-nhwc-a-size", _npz(a=np.zeros((2, 4, 6, 3), np.float32)), [],
     "GatedResnet: expected `a` with the B/H/W of `x` (B=2, H=4, W=5); received shape (2, 4, 6, 3)"),
    ("npz-text", lambda t, i: (t / "x.npz").write_text("x = 1, 2, 3\n"), [], "received a file that is not a zip archive"),
    ("npz-empty", lambda t, i: (t / "x.npz").write_bytes(b""), [], "received an empty file"),
    ("npz-truncated", lambda t, i: (t / "x.npz").write_bytes((t / "x.npz").read_bytes()[:-200]), [], "x.npz: expected an .npz archive"),
    ("npz-huge-member", lambda t, i: _npz_with_huge_member(t / "x.npz", "y"), [], "received also ['y']"),
    ("directory-as-weights", lambda t, i: os.mkdir(t / "dir.safetensors"), ["--weights", "{t}/dir.safetensors"], "error: "),
    ("symlink-loop", lambda t, i: (os.symlink(t / "b.safetensors", t / "a.safetensors"), os.symlink(t / "a.safetensors", t / "b.safetensors")),
     ["--weights", "{t}/a.safetensors"], "Too many levels of symbolic links"),
    ("torch-module-prefix", lambda t, i: _rewrite_torch_file(t / "w.torch.safetensors", lambda ts, m: ({f"module.{k}": v for k, v in ts.items()}, m)),
     ["--weights", "{t}/w.torch.safetensors"], "every key starts with 'module.'"),
    ("torch-shadows-no-config", lambda t, i: _rewrite_torch_file(t / "w.torch.safetensors", lambda ts, m: (ts, {})),
     ["--weights", "{t}/w.torch.safetensors"], "holds Polyak shadows (*_ema) but no config, so their decay is not known; pass --polyak-decay"),
    ("torch-stray-initialized", lambda t, i: _rewrite_torch_file(t / "w.torch.safetensors", lambda ts, m: ({**ts, "extra.initialized": np.ones((), bool)}, m)),
     ["--weights", "{t}/w.torch.safetensors"], "unexpected tensor 'extra.initialized'"),
    ("torch-bad-json-config", lambda t, i: _rewrite_torch_file(t / "w.torch.safetensors", lambda ts, m: (ts, {**m, "config": "{num_filters: 4"})),
     ["--weights", "{t}/w.torch.safetensors"], "expected a JSON block config in the metadata"),
]


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
@pytest.mark.parametrize("case_id,spoil,extra,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_a_user_mistake_on_the_command_line_is_one_line(tmp_path, capsys, case_id, spoil, extra, message):
    from parity.cli import main

    inputs = _cli_files(tmp_path)
    spoil(tmp_path, inputs)
    args = {"--weights": str(tmp_path / "w.safetensors"), "--inputs": str(tmp_path / "x.npz")}
    extra = [e.format(t=tmp_path) for e in extra]
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    argv = ["run", "--backend", "torch", "--out", str(tmp_path / "y.npz")] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert not (tmp_path / "y.npz").exists()


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_ema_on_a_file_without_shadows_and_cuda_without_a_gpu_are_refused(tmp_path, capsys):
    import torch

    from parity.cli import main

    _cli_files(tmp_path, shadows=False)
    base = ["run", "--weights", str(tmp_path / "w.safetensors"), "--inputs", str(tmp_path / "x.npz"), "--out", str(tmp_path / "y.npz")]
    assert main(base + ["--ema"]) == 2
    assert "holds no averaged weights" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(base + ["--device", "cuda"]) == 2
        assert "expected a CUDA device for device='cuda'" in capsys.readouterr().err


def test_the_docs_list_every_command_line_case():
    text = open(os.path.join(ROOT, "docs", "hostile_files.md")).read()
    missing = [c[0] for c in CLI_CASES if f"`{c[0]}`" not in text]
    assert not missing, f"docs/hostile_files.md does not list {missing}"


def _sparse_safetensors(path, name, shape, metadata):
    """A safetensors file whose header declares one huge float32 tensor, its data a hole (sparse)."""
    import json
    import struct

    size = int(np.prod(shape)) * 4
    header = json.dumps({name: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, size]},
                         "__metadata__": metadata}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + size)


def test_a_file_declaring_a_huge_tensor_is_refused_from_its_header_alone(tmp_path, monkeypatch):
    """Names and shapes are checked against the table before any tensor is read: a small sparse file
    that declares a 1 GiB tensor costs nothing."""
    import json

    import parity.formats.canonical as canonical
    from parity.formats.canonical import FORMAT_TAG as FORMAT, load_canonical
    from parity.errors import WeightError
    from parity.configs import normalize_config

    path = tmp_path / "huge.safetensors"
    _sparse_safetensors(path, "conv2d_0/V", (16384, 16384),
                        {"format": FORMAT, "config": json.dumps(normalize_config(CONFIG)), "initialized": "true"})
    assert os.stat(path).st_blocks * 512 < 1 << 20  # the hole takes no disk

    def no_reading(*args, **kwargs):
        raise AssertionError("tensor data was read before the header was checked")

    monkeypatch.setattr(canonical, "read_safetensors", no_reading)
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(WeightError, match=r"tensor 'conv2d_0/V' has shape \(16384, 16384\); expected \(2, 3, 8, 4\)"):
            load_canonical(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"the header check allocated {peak / 2**20:.0f} MiB"  # the tensor would be 1024 MiB


def test_a_record_with_tensors_its_cases_do_not_name_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from parity.cli import BUILTIN_RECORD
    from parity.harness import load_record

    tensors = load_file(BUILTIN_RECORD)
    with safe_open(BUILTIN_RECORD, "np") as f:
        metadata = f.metadata()
    save_file({**tensors, "0/out/float32/forward/extra": np.zeros(1, np.float32)}, str(tmp_path / "r.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"do not match the cases in its metadata: unexpected \['0/out/float32/forward/extra'\]"):
        load_record(tmp_path / "r.safetensors")


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (Keras files)")
def test_keras_files_that_are_not_a_block_are_one_line_errors(tmp_path, capsys):
    import h5py

    from parity.cli import main

    text = tmp_path / "text.weights.h5"
    text.write_text("not hdf5")
    assert main(["convert", str(text), str(tmp_path / "o.safetensors"), "--polyak-decay", "0.9"]) == 2
    assert "expected a Keras .weights.h5 (HDF5) file; could not read it" in capsys.readouterr().err
    rank3 = tmp_path / "rank3.weights.h5"
    with h5py.File(rank3, "w") as f:
        f.create_dataset("layers/gated_resnet/conv_input/vars/0", data=np.zeros((2, 3, 4), np.float32))
    assert main(["convert", str(rank3), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "conv_input's V has shape (2, 3, 4); expected a 2-D (nin) or 4-D (conv) V" in err and "Traceback" not in err

    from parity.formats import write_any

    for name, edit, expect in (
        ("extra", lambda f: f.create_dataset("layers/gated_resnet/attention/vars/0", data=np.zeros(2)), "holds layers ['attention']"),
        ("short", lambda f: f.__delitem__("layers/gated_resnet/conv_output/vars/6"), "layer 'conv_output' does not fit"),
        ("shape", lambda f: (f.__delitem__("layers/gated_resnet/conv_input/vars/1"),
                             f.create_dataset("layers/gated_resnet/conv_input/vars/1", data=np.zeros(5, np.float32))),
         "layer 'conv_input' does not fit"),
    ):
        path = tmp_path / f"{name}.weights.h5"
        write_any(str(path), _good(), CONFIG, True)
        with h5py.File(path, "a") as f:
            edit(f)
        assert main(["convert", str(path), str(tmp_path / "o.safetensors")]) == 2, name
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)


def test_a_torch_file_with_a_rank_1_v_is_a_clear_error(tmp_path, capsys):
    from safetensors.numpy import save_file

    from parity.cli import main

    save_file({"conv_input.V": np.zeros(4, np.float32)}, str(tmp_path / "w.torch.safetensors"))
    assert main(["convert", str(tmp_path / "w.torch.safetensors"), str(tmp_path / "o.safetensors")]) == 2
    assert "tensor 'conv_input.V' has shape (4,); expected a 2-D (nin) or 4-D (conv) V" in capsys.readouterr().err


def test_check_and_verify_refuse_a_device_they_cannot_use_in_one_line(capsys):
    """``--device`` is cpu, cuda or cuda:N, checked before any work; cuda without a GPU is a one-line
    error with exit 2 (exit 1 is a parity FAIL), not a traceback from the report's header."""
    from parity.cli import main

    for argv in (["check", "--device", "foo"], ["verify", "--device", "meta"], ["verify", "--backend", "tf", "--device", "gpu"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "expected cpu, cuda or cuda:N" in capsys.readouterr().err
    if HAVE["torch"]:
        import torch

        if not torch.cuda.is_available():
            for command in ("check", "verify"):
                assert main([command, "--device", "cuda"]) == 2
                err = capsys.readouterr().err
                assert err.startswith("error: expected a CUDA device for device='cuda'") and "Traceback" not in err


def _with_metadata(src, dst, change):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(src), "np") as f:
        metadata = f.metadata()
    save_file(load_file(str(src)), str(dst), metadata=change(dict(metadata)))


def test_a_config_declaring_a_huge_network_is_refused_from_the_header_count(tmp_path):
    """``nr_resnet: 1000000`` in a small file's metadata (model file, torch file, record) is one line,
    checked against the number of tensors the header lists before any table is built."""
    import json
    import tracemalloc

    from parity.case import random_weights
    from parity.cli import BUILTIN_RECORD
    from parity.formats import read_any, write_any
    from parity.harness import load_record

    config = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "polyak_decay": None}
    huge = lambda m: {**m, "config": json.dumps({**json.loads(m["config"]), "nr_resnet": 1000000})}  # noqa: E731
    for name in ("m.safetensors", "m.torch.safetensors"):
        write_any(str(tmp_path / name), random_weights(config, 0), config, True)
        _with_metadata(tmp_path / name, tmp_path / ("huge-" + name), huge)
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=r"its config declares a model of 99000072 tensors \(nr_resnet=1000000\); "
                                                 r"the file holds \d+$"):
                read_any(str(tmp_path / ("huge-" + name)))
            assert tracemalloc.get_traced_memory()[1] < 4 << 20
        finally:
            tracemalloc.stop()

    def record_case(m, **change):
        cases = json.loads(m["cases"])
        cases[0].update(change)
        return {**m, "cases": json.dumps(cases)}

    _with_metadata(BUILTIN_RECORD, tmp_path / "r.safetensors", lambda m: record_case(m, filters=4))
    with pytest.raises(ValueError, match=r"case 0 \(Case\) has metadata keys \['filters'\] it does not know"):
        load_record(tmp_path / "r.safetensors")
    _with_metadata(BUILTIN_RECORD, tmp_path / "r.safetensors",
                   lambda m: record_case(m, config={"model": "pixelcnn_pp", "nr_resnet": 1000000}))
    with pytest.raises(ValueError, match=r"case 0: its config declares a model of \d+ tensors \(nr_resnet=1000000\)"):
        load_record(tmp_path / "r.safetensors")


def test_options_that_disagree_with_a_stored_config_are_refused(tmp_path, capsys):
    """``--nr-resnet``, ``--model``, ``--nonlinearity`` must agree with what a canonical or torch file
    holds (they were ignored, or overrode the stored config: a relu block read as elu)."""
    from parity.case import random_weights
    from parity.cli import main
    from parity.formats import write_any

    model = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "polyak_decay": None}
    block = {**CONFIG, "nonlinearity": "elu", "polyak_decay": None}
    for name, config in (("m", model), ("b", block)):
        for suffix in (".safetensors", ".torch.safetensors"):
            write_any(str(tmp_path / (name + suffix)), random_weights(config, 0), config, True)
    out = str(tmp_path / "o.safetensors")
    for src, options, message in (
        ("m", ["--model", "pixelcnn_pp", "--nr-resnet", "3"], "holds a model with nr_resnet=1; the options say nr_resnet=3"),
        ("b", ["--model", "pixelcnn_pp"], "holds a block (block); the options name model='pixelcnn_pp'"),
        ("b", ["--nonlinearity", "relu"], "holds a block with nonlinearity='elu'; the options say nonlinearity='relu'"),
    ):
        for suffix in (".safetensors", ".torch.safetensors"):
            assert main(["convert", str(tmp_path / (src + suffix)), out, *options]) == 2, (src, suffix, options)
            err = capsys.readouterr().err
            assert message in err and len(err.splitlines()) == 1, (suffix, err)
    assert not os.path.exists(out)


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (Keras files)")
def test_keras_files_are_read_lazily_and_refuse_links_outside_storage_and_casts(tmp_path, capsys):
    """A ``.weights.h5`` is checked from its groups, shapes and dtypes before any value is read: a
    huge compressed dataset (claimed or not) costs nothing, empty groups cannot declare a deep network,
    and what Keras never writes (soft or external links, external or virtual storage) is refused, as
    are the casts the safetensors readers refuse (int weights, float64 values into float32)."""
    import tracemalloc

    import h5py

    from parity.case import random_weights
    from parity.cli import main
    from parity.formats import write_any

    good = tmp_path / "good.weights.h5"
    write_any(str(good), _good(), CONFIG, True)
    model = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "polyak_decay": None}
    good_model = tmp_path / "model.weights.h5"
    write_any(str(good_model), random_weights(model, 0), model, True)
    (tmp_path / "secret.bin").write_bytes(np.arange(192, dtype=np.float32).tobytes())
    with h5py.File(good, "r") as f:
        top = list(f["layers"])[0]
    with h5py.File(good_model, "r") as f:
        mtop = list(f["layers"])[0]
    block, root = f"layers/{top}", f"layers/{mtop}"

    def replace(f, name, **kw):
        del f[name]
        f.create_dataset(name, **kw)

    huge = dict(shape=(1 << 15, 1 << 15), dtype=np.float32, chunks=(1024, 1024), compression="gzip")  # 4 GiB declared
    for src, name, edit, message in (
        (good, "external", lambda f: replace(f, f"{block}/conv_input/vars/0", shape=(2, 3, 8, 4), dtype=np.float32,
                                               external=[(str(tmp_path / "secret.bin"), 0, 192 * 4)]),
         "conv_input/vars/0 is stored outside the file (external storage), refused"),
        (good, "external-link", lambda f: (f.__delitem__(f"{block}/nin_skip"), f.__setitem__(f"{block}/nin_skip", h5py.ExternalLink(str(good_model), root))),
         "holds a ExternalLink at layers/"),
        (good, "soft-link-loop", lambda f: (f.__delitem__(f"{block}/conv_output"),
                                            f.__setitem__(f"{block}/conv_output", h5py.SoftLink(f"/{block}/conv_output"))),
         "holds a SoftLink at layers/"),
        (good, "huge-claimed", lambda f: replace(f, f"{block}/conv_output/vars/0", **huge), "layer 'conv_output' does not fit"),
        (good, "huge-extra", lambda f: f.create_dataset(f"{block}/attention/vars/0", **huge), "holds layers ['attention']"),
        (good, "int-weights", lambda f: replace(f, f"{block}/conv_output/vars/1", data=np.ones(8, np.int32)),
         "vars/1 has dtype int32; expected float32 (no silent casts)"),
        (good, "float64-into-float32", lambda f: replace(f, f"{block}/conv_output/vars/1", data=np.full(8, 1e-40)),
         "vars/1 has dtype float64; expected float32 (no silent casts)"),
        (good_model, "empty-groups", lambda f: [f.create_group(f"{root}/up_u/gated_resnet_{k}/conv_input/vars") for k in range(3, 1500)],
         "its config declares a model of"),
    ):
        path = tmp_path / f"{name}.weights.h5"
        path.write_bytes(src.read_bytes())
        with h5py.File(path, "a") as f:
            edit(f)
        tracemalloc.start()
        try:
            assert main(["convert", str(path), str(tmp_path / "o.safetensors")]) == 2, name
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert peak < 64 << 20, (name, peak)
        assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_sample_refuses_what_run_refuses_and_checks_noise_in_the_models_dtype(tmp_path, capsys):
    """``sample --inputs`` refuses int, string and complex ``h`` and complex noise as ``run`` does (no
    silent casts), and float64 noise is checked inside (0, 1) after the cast to the model's float32
    (``1 - 1e-10`` becomes 1.0 there, which would force a pixel)."""
    from parity.case import random_weights
    from parity.cli import main
    from parity.formats import write_any

    model = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "h_channels": 2, "polyak_decay": None}
    write_any(str(tmp_path / "m.safetensors"), random_weights(model, 0), model, True)
    rng = np.random.default_rng(0)
    noise = {"u_mix": rng.uniform(0.1, 0.9, (1, 4, 4, 2)), "u_value": rng.uniform(0.1, 0.9, (1, 4, 4, 3))}
    h = rng.normal(size=(1, 2))
    for name, n, hh, message in (
        ("h-int", noise, h.astype(np.int32), "expected `h` of dtype float32 or float64 (no silent casts); received dtype int32"),
        ("h-string", noise, np.array([["a", "b"]]), "expected `h` of dtype float32 or float64 (no silent casts); received dtype <U1"),
        ("h-complex", noise, h.astype(np.complex64), "received dtype complex64"),
        ("noise-complex", {**noise, "u_mix": noise["u_mix"].astype(np.complex128)}, h, "expected `u_mix` of dtype float32 or float64"),
        ("noise-rounds-to-1", {**noise, "u_value": np.full((1, 4, 4, 3), 1 - 1e-10)}, h,
         "expected u_value strictly inside (0, 1) in the model's float32"),
        ("weights-overflow", noise, h, "finite weights and inputs gave NaN/Inf ("),
    ):
        if name == "weights-overflow":
            _edit_canonical(tmp_path / "m.safetensors", "conv2d_0/g", 3e38)
        np.savez(tmp_path / "noise.npz", **n)
        np.savez(tmp_path / "h.npz", h=hh)
        assert main(["sample", "--weights", str(tmp_path / "m.safetensors"), "--noise", str(tmp_path / "noise.npz"),
                     "--inputs", str(tmp_path / "h.npz"), "--out", str(tmp_path / "x.npz")]) == 2, name
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, (name, err)
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow")
def test_the_tf_worker_gives_a_layers_error_itself_not_keras_call_report(tmp_path, capsys):
    """Keras wraps an error raised in a layer's call in a report of its arguments ("Exception
    encountered when calling PixelCNNpp.call()." as the first line); the worker turns that off."""
    from parity.case import random_weights
    from parity.cli import main
    from parity.formats import write_any

    model = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "polyak_decay": None}
    write_any(str(tmp_path / "m.safetensors"), random_weights(model, 0), model, True)
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 5, 4, 3), np.float32))
    assert main(["run", "--backend", "tf", "--weights", str(tmp_path / "m.safetensors"), "--inputs", str(tmp_path / "x.npz"),
                 "--out", str(tmp_path / "y.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PixelCNNpp: expected H a positive multiple of 4") and len(err.splitlines()) == 1, err


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_long_commands_show_progress_on_a_terminal_and_keep_json_clean(capsys, monkeypatch):
    """check, record, verify and pitfalls print one line per case on stderr when it is a terminal;
    stdout (the report, --json) stays as it was, and nothing is printed when stderr is not a terminal."""
    import json
    import sys

    from parity.cli import main

    assert main(["verify", "--json"]) == 0
    quiet = capsys.readouterr()
    assert "verify: [" not in quiet.err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["verify", "--json"]) == 0
    shown = capsys.readouterr()
    lines = [line for line in shown.err.splitlines() if line.startswith("verify: [")]
    assert lines[0].startswith("verify: [1/8] ") and lines[-1].startswith("verify: [8/8] ")
    assert len(json.loads(shown.out)["cases"]) == 8
