"""PixelSNAIL weight files: the released model's names at its width, original TF1 checkpoints written by
the compat.v1 graph of tests/tf1_original.py converted with ``--model`` (train.py's names and aliases),
and both twins reproducing the graph."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import HAVE
from tests.formats import assert_runs_as_the_graph


def test_the_released_model_has_the_originals_names_and_shapes():
    """h12_noup_smallkey at R 4, F 256, M 10: conv2d_0..97 (2 + 2 x 4 x 12), dense_0..108 (9 x 12 + 1)."""
    from parity.kinds import table_for

    rows = {r.tf1_name: r.shape for r in table_for({"model": "h12_noup_smallkey"}, shadows=False)}
    kinds: dict[str, set] = {}
    for name in rows:
        layer = name.split("/")[0]
        kinds.setdefault(layer.rsplit("_", 1)[0], set()).add(int(layer.rsplit("_", 1)[1]))
    assert {k: (min(v), max(v), len(v)) for k, v in kinds.items()} == {"conv2d": (0, 97, 98), "dense": (0, 108, 109)}
    assert rows["conv2d_0/V"] == (1, 3, 4, 256) and rows["conv2d_1/V"] == (2, 1, 4, 256) and rows["conv2d_2/V"] == (2, 2, 256, 256)
    assert rows["dense_0/V"] == (265, 265) and rows["dense_2/V"] == (265, 144) and rows["dense_5/V"] == (262, 16)
    assert rows["dense_7/V"] == (128, 256) and rows["dense_108/V"] == (256, 100)


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (TF1 checkpoints)")
def test_a_tf1_checkpoint_converts_with_its_train_py_name_and_runs_like_the_graph(tmp_path, capsys):
    """h12_pool2_smallkey (pooled keys and mask) with elu, as released: convert infers R, F, M and
    attn_rep from the names, takes elu from the options; both twins reproduce the graph, live and averaged."""
    from parity.cli import main
    from tests import tf1_original

    spec, alias, extra = "h12_pool2_smallkey", "h12_pool2_smallkey", ["--nonlinearity", "elu"]
    config = {"model": spec, "nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "attn_rep": 2, "nonlinearity": "elu"}
    rng = np.random.default_rng(11)
    batch = lambda n: {"x": np.round(rng.uniform(-1, 1, (n, 8, 8, 3)) * 127.5).astype(np.float32) / np.float32(127.5)}  # noqa: E731
    init_batch, test_batch = batch(4), batch(2)
    prefix = str(tmp_path / "model.ckpt")
    graph = tf1_original.write_model_checkpoint(prefix, config, init_batch, test_batch)
    out = str(tmp_path / "m.safetensors")
    assert main(["convert", prefix, out, "--model", alias, *extra]) == 0
    said = capsys.readouterr().out
    assert f'"model": "{spec}"' in said and '"attn_rep": 2' in said and '"nr_resnet": 1, "nr_filters": 8' in said, said
    assert_runs_as_the_graph(out, test_batch, graph, tmp_path)
    capsys.readouterr()
    assert main(["convert", prefix, str(tmp_path / "bad.safetensors"), "--model", alias, "--nr-filters", "16", *extra]) == 2
    assert "the shapes say nr_filters=8; the options say nr_filters=16" in capsys.readouterr().err
    assert main(["convert", prefix, str(tmp_path / "bad.safetensors")]) == 2  # no --model: a network, not a block
    assert "a whole network, not one block; convert it with --model a PixelSNAIL spec, one of ['h12_noup_smallkey'" in capsys.readouterr().err


def test_model_takes_train_pys_names_and_aliases(capsys):
    from parity.cli import main
    from parity.kinds import model_name

    assert [model_name(n) for n in ("pxpp", "pixelcnn_pp", "pixelsnail", "model", "h8_noup_smallkey")] == [
        "pixelcnn_pp", "pixelcnn_pp", "h12_noup_smallkey", "model_spec", "h8_noup_smallkey"]
    with pytest.raises(SystemExit) as e:
        main(["convert", "a", "b", "--model", "h6_noup"])
    assert e.value.code == 2 and "expected --model one of" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow (Keras files)")
def test_a_pixelsnail_goes_through_a_keras_weights_file_and_back(tmp_path, capsys):
    """canonical -> Keras .weights.h5 -> canonical, bit for bit (shadows included); the spec from
    --model, R, F, M, attn_rep and h from the shapes, elu from the options; no --model: exit 2."""
    from parity.case import random_weights
    from parity.cli import main
    from parity.formats import read_any
    from parity.formats.canonical import save_canonical

    config = {"model": "h8_noup_smallkey", "nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "attn_rep": 1,
              "nonlinearity": "elu", "h_channels": 2, "polyak_decay": 0.9995}
    w = random_weights(config, 4, shadows=True)
    save_canonical(tmp_path / "m.safetensors", w, config, initialized=True)
    keras_file, back = str(tmp_path / "m.weights.h5"), str(tmp_path / "back.safetensors")
    assert main(["convert", str(tmp_path / "m.safetensors"), keras_file]) == 0
    assert main(["convert", keras_file, back, "--model", "h8_noup_smallkey", "--nonlinearity", "elu",
                 "--polyak-decay", "0.9995"]) == 0
    loaded = read_any(back)
    assert loaded.initialized and sorted(loaded.tensors) == sorted(w)
    assert all(np.array_equal(loaded.tensors[k], w[k]) for k in w)
    assert {k: loaded.config[k] for k in ("model", "nr_resnet", "nr_filters", "nr_logistic_mix", "attn_rep", "h_channels")} == {
        "model": "h8_noup_smallkey", "nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "attn_rep": 1, "h_channels": 2}
    capsys.readouterr()
    assert main(["convert", keras_file, str(tmp_path / "o.safetensors")]) == 2
    assert "name its spec with --model" in capsys.readouterr().err
