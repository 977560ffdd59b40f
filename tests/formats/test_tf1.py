"""Original TF1 checkpoints: written by a ``tf.compat.v1`` graph of docs/spec.md (tests/tf1_original.py),
converted with ``gated-resnet-parity convert``, run in both backends, compared with the graph's own
outputs (live and averaged weights) and its own init pass, within the parity bound."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BACKEND_PARAMS, HAVE

pytestmark = pytest.mark.skipif(not HAVE["tf"], reason="writing TF1 checkpoints needs TensorFlow")

CONVS = ["conv2d", "down_shifted_conv2d", "down_right_shifted_conv2d", "nin"]
F_, A, K = 4, 3, 5


def _batch(rng, B, with_a, with_h, H=5, W=6):
    out = {"x": rng.normal(size=(B, H, W, F_)).astype(np.float32)}
    if with_a:
        out["a"] = rng.normal(size=(B, H, W, A)).astype(np.float32)
    if with_h:
        out["h"] = rng.normal(size=(B, K)).astype(np.float32)
    return out


_WRITTEN: dict = {}


def _checkpoint(tmp_path_factory, conv, with_ah, nonlinearity="concat_elu"):
    """One checkpoint per config, written once per session."""
    from tests import tf1_original

    key = (conv, with_ah, nonlinearity)
    if key not in _WRITTEN:
        rng = np.random.default_rng(len(_WRITTEN))
        init_batch, test_batch = _batch(rng, 4, with_ah, with_ah), _batch(rng, 2, with_ah, with_ah)
        prefix = str(tmp_path_factory.mktemp("tf1") / "model.ckpt")
        config = {"conv": conv, "nonlinearity": nonlinearity}
        graph_out = tf1_original.write_checkpoint(prefix, config, init_batch, test_batch)
        _WRITTEN[key] = (prefix, config, init_batch, test_batch, graph_out)
    return _WRITTEN[key]


_REFERENCES: dict = {}


def _references(prefix, config, init_batch, test_batch):
    """The TF1 graph's numbers from the checkpoint, float32 and float64 (the bound's reference floor)."""
    from parity.formats.tf1 import read_checkpoint
    from tests import tf1_original

    if prefix not in _REFERENCES:
        variables = read_checkpoint(prefix)
        _REFERENCES[prefix] = {
            "float32": tf1_original.init_float32(variables, config, test_batch, init_batch),
            "float64": tf1_original.run_float64(variables, config, test_batch, init_batch),
        }
    return _REFERENCES[prefix]


def _backend_run(backend, path, test_batch, init_batch):
    """Forward (live, EMA) and the data-dependent init from the converted file's V, in both dtypes."""
    from parity.backends import get_backend
    from parity.table import EMA_SUFFIX, weight_table
    from parity.formats.canonical import load_canonical

    module = get_backend(backend)
    tensors, config, initialized = load_canonical(path)
    assert initialized
    out = {}
    with module.parity_mode("cpu"):
        for dtype in ("float32", "float64"):
            r = {}
            block = module.build(config, dtype)
            module.import_weights(block, tensors, initialized=True)
            r["out"] = module.apply(block, test_batch)["out"]
            r["ema_out"] = module.apply(block, test_batch, use_ema=True)["out"]
            fresh = module.build(config, dtype)
            raw = {k: v for k, v in tensors.items() if not k.endswith(EMA_SUFFIX)}
            module.import_weights(fresh, raw, initialized=False)
            module.apply(fresh, init_batch, init=True)
            exported = module.export_weights(fresh)
            r.update({f"init/{row.tf1_name}": exported[row.tf1_name]
                      for row in weight_table(config, shadows=False) if row.tf1_name[-1] in "gb"})
            out[dtype] = r
    return out


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("with_ah", [True, False], ids=["with-a-h", "plain"])
@pytest.mark.parametrize("conv", CONVS)
def test_tf1_checkpoint_runs_in_both_backends_within_the_parity_bound(tmp_path_factory, tmp_path, conv, with_ah, backend):
    from parity.cli import main
    from parity.tolerance import compare

    prefix, config, init_batch, test_batch, graph_out = _checkpoint(tmp_path_factory, conv, with_ah)
    dst = str(tmp_path / "block.safetensors")
    assert main(["convert", prefix, dst]) == 0
    ref = _references(prefix, config, init_batch, test_batch)
    # Reloading the checkpoint into the graph reproduces the graph's outputs as written.
    np.testing.assert_array_equal(ref["float32"]["out"], graph_out["out"])
    np.testing.assert_array_equal(ref["float32"]["ema_out"], graph_out["ema_out"])
    assert not np.array_equal(graph_out["out"], graph_out["ema_out"]), "the shadows must differ from the live weights"

    got = _backend_run(backend, dst, test_batch, init_batch)
    assert set(got["float32"]) == set(ref["float32"])
    for tensor in ref["float32"]:
        for dtype in ("float32", "float64"):
            c = compare(conv, tensor, dtype, {d: ref[d][tensor] for d in ref}, {d: got[d][tensor] for d in got})
            assert c.passed, f"{tensor} {dtype}: max abs {c.max_abs:.3e} > bound {c.bound:.3e} ({c.source}) {c.note}"


@pytest.mark.parametrize("with_ah", [True, False], ids=["with-a-h", "plain"])
@pytest.mark.parametrize("conv", CONVS)
def test_tf_impl_as_a_tf_function_reproduces_the_tf1_graph_bit_for_bit(tmp_path_factory, tmp_path, conv, with_ah):
    """On the CPU, tf_impl's forward as a tf.function (what `run --backend tf` does) equals the original
    graph's output in every bit, with live and with averaged weights; so does the first layer's
    data-dependent init (g, b). Later layers' init does not: the eager init feeds them the first
    layer's output computed op by op, where the graph fuses (a few ulps)."""
    from parity.cli import main
    from parity.backends import get_backend
    from parity.table import EMA_SUFFIX
    from parity.formats.canonical import load_canonical

    prefix, config, init_batch, test_batch, graph_out = _checkpoint(tmp_path_factory, conv, with_ah)
    dst = str(tmp_path / "block.safetensors")
    assert main(["convert", prefix, dst]) == 0
    module = get_backend("tf")
    tensors, cfg, _ = load_canonical(dst)
    block = module.build(cfg, "float32")
    module.import_weights(block, tensors)
    np.testing.assert_array_equal(module.apply(block, test_batch)["out"], graph_out["out"])
    np.testing.assert_array_equal(module.apply(block, test_batch, use_ema=True)["out"], graph_out["ema_out"])
    ref = _references(prefix, config, init_batch, test_batch)["float32"]
    fresh = module.build(cfg, "float32")
    module.import_weights(fresh, {k: v for k, v in tensors.items() if not k.endswith(EMA_SUFFIX)}, initialized=False)
    module.apply(fresh, init_batch, init=True)
    first = "dense_0" if conv == "nin" else "conv2d_0"
    for name in ("g", "b"):
        np.testing.assert_array_equal(module.export_weights(fresh)[f"{first}/{name}"], ref[f"init/{first}/{name}"])


def test_convert_reports_skipped_optimizer_slots_and_writes_both_raw_and_shadows(tmp_path_factory, tmp_path, capsys):
    from parity.cli import main
    from parity.formats.tf1 import read_checkpoint
    from parity.table import EMA_SUFFIX
    from parity.formats.canonical import load_canonical

    prefix, *_ = _checkpoint(tmp_path_factory, "down_shifted_conv2d", True)
    names = read_checkpoint(prefix)
    slots = [n for n in names if n.startswith("Variable") or "_adam_" in n or n == "adam_t"]
    assert any(n.startswith("Variable_") for n in slots) and any(n.endswith("_adam_mg") for n in slots)
    dst = str(tmp_path / "w.safetensors")
    assert main(["convert", prefix, dst]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {len(slots)} optimiser slot(s)" in printed
    assert "10 weights, 10 shadows" in printed
    tensors, config, initialized = load_canonical(dst)
    assert config["conv"] == "down_shifted_conv2d" and config["a_channels"] == A and config["h_channels"] == K
    assert config["polyak_decay"] == 0.9995 and initialized
    assert sum(k.endswith(EMA_SUFFIX) for k in tensors) == 10
    np.testing.assert_array_equal(tensors["conv2d_1/V" + EMA_SUFFIX], names["model/conv2d_1/V/ExponentialMovingAverage"])


def test_the_names_cannot_tell_a_2x3_conv2d_from_a_down_shifted_one(tmp_path_factory, tmp_path):
    """The same checkpoint read as a conv2d with a 2x3 filter would need --conv; a 3x3 conv2d
    checkpoint forced to down_shifted is an error naming the first mismatch."""
    from parity.formats.tf1 import read_tf1
    from parity.errors import WeightError

    prefix, *_ = _checkpoint(tmp_path_factory, "conv2d", True)
    with pytest.raises(WeightError, match=r"first mismatch: model/conv2d_0/V: shape \(3, 3, 8, 4\) in the checkpoint; "
                                          r"expected \(2, 3, 8, 4\)"):
        read_tf1(prefix, {"conv": "down_shifted_conv2d"})
    with pytest.raises(WeightError, match=r"first mismatch: model/dense_0/V: shape \(6, 4\) in the checkpoint; expected \(8, 4\)"):
        read_tf1(prefix, {"conv": "nin", "nonlinearity": "concat_elu"})


def test_elu_and_relu_need_the_nonlinearity_option(tmp_path_factory, tmp_path, capsys):
    from parity.cli import main
    from parity.formats.canonical import load_canonical

    prefix, *_ = _checkpoint(tmp_path_factory, "down_right_shifted_conv2d", True, nonlinearity="elu")
    dst = str(tmp_path / "w.safetensors")
    assert main(["convert", prefix, dst]) == 2
    assert "pass --nonlinearity" in capsys.readouterr().err
    assert main(["convert", prefix, dst, "--nonlinearity", "elu"]) == 0
    assert load_canonical(dst)[1]["nonlinearity"] == "elu"


def test_scope_and_counters_pick_a_block_out_of_a_larger_model(tmp_path_factory, tmp_path):
    """A second block in the same template continues the counters; --counters reads it, and a
    wrong scope names the scopes the checkpoint has."""
    from parity.formats.tf1 import map_checkpoint, parse_counters, read_checkpoint
    from parity.table import TF1Namer
    from parity.errors import WeightError

    prefix, *_ = _checkpoint(tmp_path_factory, "conv2d", True)
    names = read_checkpoint(prefix)
    # Two blocks in one model: the second block's names continue the per-kind counters.
    second = {}
    for n, v in names.items():
        for kind, shift in (("conv2d_", 2), ("dense_", 1), ("conditional_weights_", 1)):
            if n.startswith("model/" + kind):
                k, rest = n[len("model/" + kind):].split("/", 1)
                second[f"model/{kind}{int(k) + shift}/{rest}"] = v * 2
    both = {**names, **second}
    with pytest.raises(WeightError, match="not part of the block"):
        map_checkpoint(both)
    namer = TF1Namer()
    first = map_checkpoint(both, namer=namer)
    assert namer.counters == {"conv2d": 2, "dense": 1, "conditional_weights": 1}
    nxt = map_checkpoint(both, namer=namer)
    assert len(first.other_variables) == len(nxt.other_variables) == 20
    np.testing.assert_array_equal(nxt.tensors["conv2d_0/V"], 2 * first.tensors["conv2d_0/V"])
    picked = map_checkpoint(both, namer=parse_counters("conv2d=2,dense=1,conditional_weights=1"))
    np.testing.assert_array_equal(picked.tensors["dense_0/g"], nxt.tensors["dense_0/g"])
    # Naming some kinds only: the others cannot be told where the checkpoint holds more of them.
    with pytest.raises(ValueError, match=r"--counters names \['conv2d'\] but not dense \(2 in the checkpoint, 1 in the block\), "
                       r"conditional_weights \(2 in the checkpoint, 1 in the block\)"):
        map_checkpoint(both, namer=parse_counters("conv2d=2"))
    only_first = {k: v for k, v in both.items() if not k.startswith(("model/dense_1/", "model/conditional_weights_1/"))}
    assert map_checkpoint(only_first, namer=parse_counters("conv2d=0")).tensors.keys() == first.tensors.keys()
    with pytest.raises(WeightError, match=r"no variables under scope 'pixel_cnn'.*\['model'\]"):
        map_checkpoint(names, scope="pixel_cnn")
    with pytest.raises(ValueError, match="expected counters like"):
        parse_counters("conv=2")


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path_factory, tmp_path):
    import shutil

    from parity.formats.tf1 import read_checkpoint

    prefix, *_ = _checkpoint(tmp_path_factory, "nin", False)
    broken = str(tmp_path / "broken.ckpt")
    shutil.copy(prefix + ".index", broken + ".index")
    data = [p for p in __import__("glob").glob(prefix + ".data-*")]
    for p in data:
        with open(p, "rb") as f:
            body = f.read()
        with open(broken + p[len(prefix):], "wb") as f:
            f.write(body[: len(body) // 2])
    with pytest.raises(ValueError, match="could not read it as a TF1 checkpoint"):
        read_checkpoint(broken)
    with pytest.raises(FileNotFoundError, match="expected a TF1 checkpoint prefix"):
        read_checkpoint(str(tmp_path / "nothing"))


def test_a_checkpoint_is_read_variable_by_variable_for_the_block_only(tmp_path_factory):
    """The optimiser slots (and any variable outside the block) are listed by name, never read."""
    from parity.formats.tf1 import LazyCheckpoint, map_checkpoint

    prefix, *_ = _checkpoint(tmp_path_factory, "conv2d", True)
    lazy = LazyCheckpoint(prefix)
    mapped = map_checkpoint(lazy)
    read = set(lazy._read)
    assert read == {f"model/{k}" for k in mapped.tensors}
    assert mapped.skipped_slots and not read & set(mapped.skipped_slots)


def test_a_network_checkpoint_without_model_and_a_scalar_v_are_named(tmp_path):
    """A whole network's checkpoint converted as a block is named as a network (it asked for
    --nonlinearity); a scalar V in a network's checkpoint is a WeightError line, not an IndexError."""
    import tensorflow as tf

    from parity.case import random_weights
    from parity.errors import WeightError
    from parity.formats import read_any, write_any

    config = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "nonlinearity": "elu", "polyak_decay": None}
    write_any(str(tmp_path / "m.ckpt"), random_weights(config, 0), config, True)
    with pytest.raises(ValueError, match=r"holds 57 weight-normalised layers under 'model', a whole network, not one block; "
                                         r"convert it with --model pixelcnn_pp"):
        read_any(str(tmp_path / "m.ckpt"))
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        variables = [v1.Variable(np.float32(1.0), name="model/conv2d_0/V", use_resource=False)]
        with v1.Session(graph=graph) as sess:
            sess.run(v1.variables_initializer(variables))
            v1.train.Saver(variables).save(sess, str(tmp_path / "s.ckpt"), write_meta_graph=False, write_state=False)
    with pytest.raises(WeightError, match=r"tensor 'conv2d_0/V' has shape \(\); expected a 4-D one"):
        read_any(str(tmp_path / "s.ckpt"), {"model": "pixelcnn_pp"})
