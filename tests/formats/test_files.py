"""Weight files of one block: the canonical file, torch and Keras files, round trips between the twins,
strict all-or-nothing loads, and the original's names in the weight table."""

from __future__ import annotations

import numpy as np
import pytest

from parity.case import random_weights
from parity.errors import WeightError
from parity.formats.canonical import load_canonical, save_canonical
from parity.table import EMA_SUFFIX, weight_table
from tests.conftest import BOTH, HAVE, run_cli


@pytest.mark.parametrize("first,second", [("tf", "torch"), ("torch", "tf")])
@BOTH
def test_round_trips_are_bit_exact(tmp_path, first, second):
    from parity.backends import get_backend

    config = {"num_filters": 4, "a_channels": 8, "h_channels": 3, "conv": "down_shifted_conv2d", "polyak_decay": 0.99}
    w = random_weights(config, 11, shadows=True)
    a, b = get_backend(first), get_backend(second)
    block_a = a.build(config)
    a.import_weights(block_a, w)
    save_canonical(tmp_path / "w.safetensors", a.export_weights(block_a), config, True)
    tensors, cfg, init = load_canonical(tmp_path / "w.safetensors")
    block_b = b.build(cfg)
    b.import_weights(block_b, tensors, init)
    back = a.build(cfg)
    a.import_weights(back, b.export_weights(block_b), init)
    final = a.export_weights(back)
    assert set(final) == set(w)
    for k in w:
        np.testing.assert_array_equal(final[k], w[k], err_msg=k)


@pytest.mark.parametrize("name", ["tf", "torch"])
def test_strict_load_lists_every_problem_and_changes_nothing(name):
    if not HAVE[name]:
        pytest.skip(f"{name} not installed")
    from parity.backends import get_backend

    backend = get_backend(name)
    config = {"num_filters": 4, "a_channels": 3, "conv": "conv2d"}
    block = backend.build(config)
    before = backend.export_weights(block)
    bad = random_weights(config, 0)
    del bad["dense_0/g"]
    bad["conv2d_1/V"] = bad["conv2d_1/V"][..., :4]
    bad["extra/V"] = np.zeros(3, np.float32)
    with pytest.raises(WeightError) as err:
        backend.import_weights(block, bad)
    msg = str(err.value)
    assert "missing tensor 'dense_0/g'" in msg
    assert "unexpected tensor 'extra/V'" in msg
    assert "tensor 'conv2d_1/V' has shape (3, 3, 8, 4); expected (3, 3, 8, 8)" in msg
    after = backend.export_weights(block)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_weight_table_names_follow_the_original_counters():
    table = weight_table({"num_filters": 2, "a_channels": 2, "h_channels": 1, "conv": "nin"}, shadows=True)
    names = [r.tf1_name for r in table]
    assert names[:10] == ["dense_0/V", "dense_0/g", "dense_0/b", "dense_1/V", "dense_1/g", "dense_1/b",
                          "dense_2/V", "dense_2/g", "dense_2/b", "conditional_weights_0/hw"]
    assert names[10] == "dense_0/V" + EMA_SUFFIX
    table = weight_table({"num_filters": 2, "a_channels": 2, "conv": "down_right_shifted_conv2d"})
    assert [r.tf1_name for r in table if r.tf1_name.endswith("/V")] == ["conv2d_0/V", "dense_0/V", "conv2d_1/V"]


def test_canonical_file_refuses_pickles_and_garbage(tmp_path):
    pickle_file = tmp_path / "w.safetensors"
    pickle_file.write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    with pytest.raises(ValueError, match="never unpickled"):
        load_canonical(pickle_file)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="expected a safetensors file"):
        load_canonical(junk)


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_cli_run_and_convert(tmp_path, backend):
    if not HAVE[backend]:
        pytest.skip(f"{backend} not installed")
    config = {"num_filters": 3, "a_channels": 2, "conv": "down_right_shifted_conv2d", "polyak_decay": 0.9}
    w = random_weights(config, 2, shadows=True)
    save_canonical(tmp_path / "w.safetensors", w, config, True)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x=rng.normal(size=(2, 4, 5, 3)).astype(np.float32),
             a=rng.normal(size=(2, 4, 5, 2)).astype(np.float32))
    outs = {}
    for flag in ([], ["--ema"]):
        r = run_cli("run", "--weights", str(tmp_path / "w.safetensors"), "--inputs", str(tmp_path / "x.npz"),
                 "--backend", backend, "--out", str(tmp_path / "y.npz"), *flag)
        assert r.returncode == 0, r.stderr[-2000:]
        outs[bool(flag)] = np.load(tmp_path / "y.npz")["out"]
    assert outs[False].shape == (2, 4, 5, 3)
    assert np.abs(outs[False] - outs[True]).max() > 1e-4  # the shadows differ from the raw weights
    # canonical -> torch state_dict file -> canonical is bit-exact
    r = run_cli("convert", str(tmp_path / "w.safetensors"), str(tmp_path / "w.torch.safetensors"))
    assert r.returncode == 0, r.stderr
    r = run_cli("convert", str(tmp_path / "w.torch.safetensors"), str(tmp_path / "back.safetensors"))
    assert r.returncode == 0, r.stderr
    back, cfg, init = load_canonical(tmp_path / "back.safetensors")
    assert init and cfg["conv"] == "down_right_shifted_conv2d"
    for k in w:
        np.testing.assert_array_equal(back[k], w[k])


@pytest.mark.skipif(not HAVE["tf"], reason="tf not installed")
def test_convert_keras_weights_file_round_trip(tmp_path):
    from parity.formats import convert

    config = {"num_filters": 3, "a_channels": 2, "h_channels": 2, "conv": "down_shifted_conv2d", "polyak_decay": 0.9}
    w = random_weights(config, 4, shadows=True)
    save_canonical(tmp_path / "w.safetensors", w, config, True)
    convert(str(tmp_path / "w.safetensors"), str(tmp_path / "w.weights.h5"))
    convert(str(tmp_path / "w.weights.h5"), str(tmp_path / "back.safetensors"), polyak_decay=0.9)
    back, cfg, init = load_canonical(tmp_path / "back.safetensors")
    assert init and cfg == {**config, "nonlinearity": "concat_elu", "dropout_p": 0.0}
    for k in w:
        np.testing.assert_array_equal(back[k], w[k])
    with pytest.raises(ValueError, match="pickle files are refused"):
        convert(str(tmp_path / "w.pt"), str(tmp_path / "x.safetensors"))


def test_a_weight_error_crosses_a_process_boundary_whole():
    """Workers return exceptions by pickle: the problems, where and what survive, and so does the message."""
    import pickle

    err = WeightError(["missing tensor 'dense_0/g'", "tensor 'conv2d_1/V' has shape (3,)"], "w.safetensors", "model")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is WeightError and str(back) == str(err)
    assert (back.problems, back.where, back.what) == (err.problems, "w.safetensors", "model")
    assert str(back).startswith("w.safetensors do not fit the model (2 problem(s)):")
