"""Whole-network weight files: the released checkpoint's names, original TF1 checkpoints written by a compat.v1
graph (tests/tf1_original.py), Keras files, and the sample command on a model file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import BACKEND_PARAMS, HAVE, ROOT
from tests.formats import assert_runs_as_the_graph
from tests.models import H, W, model_weights


def test_the_names_have_the_released_cifar10_checkpoints_structure():
    """R=5, F=160, M=10: conv2d_0..134, dense_0..49, deconv2d_0..3, as openai/pixel-cnn's checkpoint."""
    from gated_spec.model import block_count
    from parity.table import model_weight_table

    rows = {r.tf1_name: r.shape for r in model_weight_table({"nr_resnet": 5, "nr_filters": 160, "nr_logistic_mix": 10})}
    kinds = {}
    for name in rows:
        layer = name.split("/")[0]
        kinds.setdefault(layer.rsplit("_", 1)[0], set()).add(int(layer.rsplit("_", 1)[1]))
    assert {k: (min(v), max(v), len(v)) for k, v in kinds.items()} == {
        "conv2d": (0, 134, 135), "dense": (0, 49, 50), "deconv2d": (0, 3, 4)}
    assert rows["conv2d_0/V"] == (2, 3, 4, 160) and rows["conv2d_1/V"] == (1, 3, 4, 160) and rows["conv2d_2/V"] == (2, 1, 4, 160)
    assert rows["conv2d_3/V"] == (2, 3, 320, 160) and rows["conv2d_4/V"] == (2, 3, 320, 320)
    assert rows["dense_0/V"] == (320, 160)  # the first up-pass ul block's nin(concat_elu(u))
    assert rows["deconv2d_0/V"] == (2, 3, 160, 160) and rows["deconv2d_1/V"] == (2, 2, 160, 160)
    assert rows["dense_49/V"] == (160, 100) and rows["dense_49/b"] == (100,)
    assert block_count({"nr_resnet": 5}) == 64


SMALL = {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "nonlinearity": "concat_elu"}


def _checkpoint(tmp_path, config=SMALL, h_channels=None):
    from tests import tf1_original

    rng = np.random.default_rng(11)
    batch = lambda n: {"x": np.round(rng.uniform(-1, 1, (n, H, W, 3)) * 127.5).astype(np.float32) / np.float32(127.5),  # noqa: E731
                       **({"h": rng.normal(size=(n, h_channels)).astype(np.float32)} if h_channels else {})}
    init_batch, test_batch = batch(4), batch(2)
    prefix = str(tmp_path / "model.ckpt")
    graph = tf1_original.write_model_checkpoint(prefix, config, init_batch, test_batch)
    return prefix, test_batch, graph


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (TF1 checkpoints)")
def test_a_whole_model_tf1_checkpoint_converts_and_runs_like_the_graph(tmp_path, capsys):
    """The compat.v1 graph's init pass, EMA and Saver; convert infers R, F, M, skips and counts the
    Adam slots; both twins reproduce the graph's float32 outputs, live and averaged."""
    from parity.cli import main

    prefix, test_batch, graph = _checkpoint(tmp_path)
    out = str(tmp_path / "m.safetensors")
    assert main(["convert", prefix, out, "--model", "pixelcnn_pp", "--nr-resnet", "1"]) == 0
    said = capsys.readouterr().out
    assert '"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2' in said and "optimiser slot" in said
    from parity.formats.canonical import load_canonical
    from parity.table import model_weight_table

    tensors, config, initialized = load_canonical(out)
    assert initialized and len(tensors) == len(model_weight_table(config)) and config["polyak_decay"] == 0.9995
    assert_runs_as_the_graph(out, test_batch, graph, tmp_path)
    capsys.readouterr()
    assert main(["convert", prefix, str(tmp_path / "bad.safetensors"), "--model", "pixelcnn_pp", "--nr-filters", "16"]) == 2
    assert "the shapes say nr_filters=8; the options say nr_filters=16" in capsys.readouterr().err


def test_a_whole_model_checkpoint_that_does_not_fit_names_every_tensor_in_call_order():
    """The model mapping shares the block's checks: each tensor missing, misshapen or not finite is
    named, the first in call order first; an optimiser slot is skipped, an unknown variable is not."""
    from parity.formats.tf1 import map_model_checkpoint
    from parity.errors import WeightError
    from parity.table import model_weight_table

    config = {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "polyak_decay": 0.9995}
    good = {f"model/{k}": v.astype(np.float32) for k, v in model_weights(config).items()}
    mapped = map_model_checkpoint({**good, "model/conv2d_0/V/Adam": good["model/conv2d_0/V"]})
    assert len(mapped.tensors) == len(model_weight_table(config)) and mapped.skipped_slots == ["model/conv2d_0/V/Adam"]
    bad = {**good, "model/conv2d_5/g": np.full_like(good["model/conv2d_5/g"], np.nan), "model/extra_0/W": np.zeros(2)}
    del bad["model/dense_0/b"]
    with pytest.raises(WeightError, match=r"(?s)checkpoint do not fit the model \(4 problem\(s\)\).*"
                                          r"first mismatch: model/conv2d_5/g: holds NaN or Inf values.*"
                                          r"model/dense_0/b: missing.*model/extra_0/W: in the checkpoint but not part of the network"):
        map_model_checkpoint(bad)


def test_sample_command_draws_the_same_images_on_both_backends(tmp_path, capsys):
    from gated_spec.model import SAMPLER_U_MIN
    from parity.cli import main
    from parity.case import random_weights
    from parity.formats.canonical import save_canonical

    config = {"model": "pixelcnn_pp", **SMALL, "polyak_decay": 0.9995}
    w = random_weights({"model": "pixelcnn_pp", **config}, 3, shadows=True)
    save_canonical(tmp_path / "m.safetensors", w, config, initialized=True)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "u.npz", u_mix=rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (1, 4, 4, 2)).astype(np.float32),
             u_value=rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (1, 4, 4, 3)).astype(np.float32))
    drawn = {}
    for backend in [b for b in ("tf", "torch") if HAVE[b]]:
        out = tmp_path / f"s_{backend}.npz"
        assert main(["sample", "--weights", str(tmp_path / "m.safetensors"), "--backend", backend, "--noise",
                     str(tmp_path / "u.npz"), "--out", str(out), "--ema"]) == 0
        with np.load(out) as f:
            drawn[backend] = f["x"]
        assert drawn[backend].shape == (1, 4, 4, 3) and np.abs(drawn[backend]).max() <= 1
    if len(drawn) == 2:  # float32: equal to rounding, and on the 8-bit grid
        np.testing.assert_allclose(drawn["tf"], drawn["torch"], atol=1e-5)
    # the cached sampler (the default) draws the naive sampler's images; --png writes them as a grid
    backend = "torch" if HAVE["torch"] else "tf"
    assert main(["sample", "--weights", str(tmp_path / "m.safetensors"), "--backend", backend, "--noise", str(tmp_path / "u.npz"),
                 "--out", str(tmp_path / "naive.npz"), "--ema", "--naive", "--png", str(tmp_path / "naive.png")]) == 0
    with np.load(tmp_path / "naive.npz") as f:
        np.testing.assert_array_equal(np.round(f["x"] * 127.5), np.round(drawn[backend] * 127.5))
    assert (tmp_path / "naive.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["sample", "--weights", str(tmp_path / "m.safetensors"), "--noise", str(tmp_path / "u.npz"),
                 "--out", str(tmp_path / "o.npz"), "--png", str(tmp_path / "no" / "x.png")]) == 2
    np.savez(tmp_path / "bad.npz", u_mix=np.zeros((1, 4, 4, 2), np.float32), u_value=np.zeros((1, 4, 4, 3), np.float32))
    capsys.readouterr()
    assert main(["sample", "--weights", str(tmp_path / "m.safetensors"), "--noise", str(tmp_path / "bad.npz"),
                 "--out", str(tmp_path / "o.npz")]) == 2
    assert "expected u_mix strictly inside (0, 1)" in capsys.readouterr().err and not (tmp_path / "o.npz").exists()


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (Keras files)")
def test_a_whole_model_goes_through_a_keras_weights_file_and_back(tmp_path, capsys):
    from parity.cli import main
    from parity.formats import read_any
    from parity.case import random_weights
    from parity.formats.canonical import save_canonical

    config = {"model": "pixelcnn_pp", **SMALL, "h_channels": 2, "polyak_decay": 0.9995}
    w = random_weights({"model": "pixelcnn_pp", **config}, 4, shadows=True)
    save_canonical(tmp_path / "m.safetensors", w, config, initialized=True)
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "m.weights.h5")]) == 0
    assert main(["convert", str(tmp_path / "m.weights.h5"), str(tmp_path / "back.safetensors"), "--polyak-decay", "0.9995"]) == 0
    back = read_any(str(tmp_path / "back.safetensors"))
    assert back.initialized and sorted(back.tensors) == sorted(w)
    assert all(np.array_equal(back.tensors[k], w[k]) for k in w)  # bit for bit, shadows included
    assert {k: back.config[k] for k in SMALL if k != "dropout_p"} == {k: v for k, v in SMALL.items() if k != "dropout_p"}
    assert back.config["h_channels"] == 2  # read from the blocks' hw
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "m.weights.h5"), str(tmp_path / "o.safetensors"), "--model", "pixelcnn_pp",
                 "--nr-filters", "5"]) == 2
    assert "the shapes say nr_filters=8; the options say nr_filters=5" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (Keras files)")
def test_keras_model_files_that_do_not_fit_are_one_line_errors(tmp_path, capsys):
    import h5py

    from parity.cli import main
    from parity.formats import write_any
    from parity.case import random_weights

    config = {"model": "pixelcnn_pp", **SMALL, "polyak_decay": None}
    good = tmp_path / "good.weights.h5"
    write_any(str(good), random_weights({"model": "pixelcnn_pp", **config}, 5, shadows=False), config, True)
    with h5py.File(good, "r") as f:
        top = list(f["layers"])[0]
        first_block = sorted(f[f"layers/{top}/up_u"])[0]
    root = f"layers/{top}"
    for name, edit, expect in (
        ("extra", lambda f: f.create_dataset(f"{root}/attention/vars/0", data=np.zeros(2)), "holds layers ['attention']"),
        ("short", lambda f: f.__delitem__(f"{root}/nin_out/vars/2"), "layer 'nin_out' does not fit a model"),
        ("shape", lambda f: (f.__delitem__(f"{root}/up_u/{first_block}/conv_output/vars/1"),
                             f.create_dataset(f"{root}/up_u/{first_block}/conv_output/vars/1", data=np.zeros(3, np.float32))),
         "layer 'up_u.0/conv_output' does not fit a model"),
        ("blocks", lambda f: f.__delitem__(f"{root}/up_u/{first_block}"), "up_u blocks and an output of"),
        ("dataset", lambda f: f.create_dataset(f"{root}/u_init/stray", data=np.zeros(2)), "found a dataset"),
    ):
        path = tmp_path / f"{name}.weights.h5"
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "a") as f:
            edit(f)
        capsys.readouterr()
        assert main(["convert", str(path), str(tmp_path / "o.safetensors")]) == 2, name
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not (tmp_path / "o.safetensors").exists()


FULL_SIZE = os.environ.get("PARITY_FULL_SIZE") == "1"


@pytest.mark.slow
@pytest.mark.skipif(not (FULL_SIZE and HAVE["tf"]), reason="full-size checkpoint: set PARITY_FULL_SIZE=1 (minutes; not in CI)")
def test_a_full_size_cifar10_shaped_checkpoint_converts_and_runs(tmp_path, capsys):
    """R=5, F=160, M=10, as the released PixelCNN++ CIFAR-10 checkpoint: written by the compat.v1 graph,
    converted, and run by both twins within the float32 tolerance of the graph's outputs."""
    from parity.cli import main

    prefix, test_batch, graph = _checkpoint(tmp_path, {"nr_resnet": 5, "nr_filters": 160, "nr_logistic_mix": 10})
    out = str(tmp_path / "m.safetensors")
    assert main(["convert", prefix, out, "--model", "pixelcnn_pp", "--nr-resnet", "5", "--nr-filters", "160",
                 "--nr-logistic-mix", "10"]) == 0
    print(capsys.readouterr().out)
    np.savez(tmp_path / "x.npz", **test_batch)
    for backend in [b for b in ("tf", "torch") if HAVE[b]]:
        y = str(tmp_path / f"y_{backend}.npz")
        assert main(["run", "--weights", out, "--inputs", str(tmp_path / "x.npz"), "--backend", backend, "--out", y, "--ema"]) == 0
        with np.load(y) as f:
            err = np.abs(f["out"] - graph["ema_out"]).max()
            print(f"{backend}: max abs error against the graph {err:.3e} (output scale {np.abs(graph['ema_out']).max():.2f})")
            np.testing.assert_allclose(f["out"], graph["ema_out"], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_load_into_takes_a_whole_network_and_refuses_one_that_does_not_fit(tmp_path, name):
    from parity.backends import get_backend
    from parity.case import random_weights
    from parity.formats import write_any
    from parity.running import load_into

    config = {"model": "pixelcnn_pp", **SMALL, "polyak_decay": 0.9995}
    w = random_weights(config, 6, shadows=True)
    write_any(str(tmp_path / "m.torch.safetensors"), w, config, True)
    backend = get_backend(name)
    net = backend.build(config)
    load_into(net, str(tmp_path / "m.torch.safetensors"))
    got = backend.export_weights(net)
    assert sorted(got) == sorted(w) and all(np.array_equal(got[k], w[k]) for k in w)
    other = backend.build({**config, "nr_filters": 4})
    before = backend.export_weights(other)
    with pytest.raises(ValueError, match="holds a model with nr_filters=8; the target model has nr_filters=4"):
        load_into(other, str(tmp_path / "m.torch.safetensors"))
    assert all(np.array_equal(before[k], v) for k, v in backend.export_weights(other).items())
    block = backend.build({"num_filters": 8})
    with pytest.raises(ValueError, match="holds a model; the target is a block"):
        load_into(block, str(tmp_path / "m.torch.safetensors"))


@pytest.mark.skipif(not (HAVE["tf"] and HAVE["torch"]), reason="needs both frameworks")
def test_run_and_sample_read_keras_and_tf1_files_in_tensorflows_worker_and_run_torch_in_its_own(tmp_path, capsys):
    """The command's process holds neither framework: a Keras file is read in TensorFlow's worker and
    the torch twin runs in torch's, so no process ever holds both (PyPI's torch wheel brings triton,
    which aborts a process holding TensorFlow); the outputs are the canonical file's."""
    import subprocess
    import sys

    from gated_spec.model import SAMPLER_U_MIN
    from parity.case import random_weights
    from parity.cli import main
    from parity.formats.canonical import save_canonical
    from parity.running import apply_file

    config = {"model": "pixelcnn_pp", **SMALL, "polyak_decay": 0.9995}
    save_canonical(tmp_path / "m.safetensors", random_weights(config, 9, shadows=True), config, initialized=True)
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "m.weights.h5")]) == 0
    x = np.round(np.random.default_rng(0).uniform(-1, 1, (1, 4, 4, 3)) * 127.5).astype(np.float32) / np.float32(127.5)
    a = apply_file(str(tmp_path / "m.safetensors"), {"x": x}, backend="torch")
    b = apply_file(str(tmp_path / "m.weights.h5"), {"x": x}, backend="torch")
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np; from parity.running import apply_file; "
              f"apply_file({str(tmp_path / 'm.weights.h5')!r}, {{'x': np.load({str(tmp_path / 'x.npy')!r})}}, backend='torch'); "
              "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'triton') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", (proc.returncode, proc.stdout, proc.stderr[-2000:])
    np.testing.assert_array_equal(a["out"], b["out"])
    assert a["loss"] == b["loss"]
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "u.npz", u_mix=rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (1, 4, 4, 2)).astype(np.float32),
             u_value=rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (1, 4, 4, 3)).astype(np.float32))
    for name in ("m.safetensors", "m.weights.h5"):
        assert main(["sample", "--weights", str(tmp_path / name), "--noise", str(tmp_path / "u.npz"),
                     "--out", str(tmp_path / f"{name}.npz")]) == 0
    with np.load(tmp_path / "m.safetensors.npz") as f, np.load(tmp_path / "m.weights.h5.npz") as g:
        np.testing.assert_array_equal(f["x"], g["x"])
