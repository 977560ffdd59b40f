"""Every file the project writes is written whole or not at all (parity.atomic)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import HAVE

CONFIG = {"num_filters": 3, "conv": "down_shifted_conv2d", "polyak_decay": 0.999}


def _weights():
    from parity.case import random_weights

    return random_weights(CONFIG, seed=0, shadows=True)


def test_a_failed_write_leaves_the_destination_as_it_was(tmp_path, monkeypatch):
    import safetensors.numpy

    from parity.formats.canonical import load_canonical, save_canonical

    dst = tmp_path / "w.safetensors"
    save_canonical(dst, _weights(), CONFIG, initialized=True)
    before = dst.read_bytes()

    def broken(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="No space left"):
        save_canonical(dst, _weights(), CONFIG, initialized=False)
    assert dst.read_bytes() == before and load_canonical(dst)[2] is True
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]  # no temporary file left behind


def test_writing_into_a_missing_directory_or_onto_a_directory_is_a_clear_error(tmp_path):
    from parity.formats.canonical import save_canonical

    with pytest.raises(FileNotFoundError, match="expected an existing directory"):
        save_canonical(tmp_path / "nope" / "w.safetensors", _weights(), CONFIG, initialized=True)
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(IsADirectoryError, match="received a directory"):
        save_canonical(tmp_path / "d.safetensors", _weights(), CONFIG, initialized=True)


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_convert_can_write_over_its_own_input(tmp_path):
    from parity.formats import convert, read_any
    from parity.formats.canonical import save_canonical

    src = tmp_path / "w.safetensors"
    save_canonical(src, _weights(), CONFIG, initialized=True)
    torch_file = str(tmp_path / "w.torch.safetensors")
    convert(str(src), torch_file)
    convert(torch_file, torch_file)
    loaded = read_any(torch_file)
    tensors, config, initialized = loaded.tensors, loaded.config, loaded.initialized
    assert initialized and config["polyak_decay"] == 0.999
    for k, v in _weights().items():
        np.testing.assert_array_equal(tensors[k], v)


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_run_writes_exactly_the_out_path_it_prints(tmp_path, capsys):
    from parity.cli import main
    from parity.formats.canonical import save_canonical

    w = tmp_path / "w.safetensors"
    save_canonical(w, _weights(), CONFIG, initialized=True)
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 4, 5, 3), np.float32))
    out = tmp_path / "y.result"  # no .npz ending: still written under this exact name
    assert main(["run", "--weights", str(w), "--inputs", str(tmp_path / "x.npz"), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with np.load(out) as f:
        assert f["out"].shape == (1, 4, 5, 3)
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors", "x.npz", "y.result"]
    assert main(["run", "--weights", str(w), "--inputs", str(tmp_path / "x.npz"), "--out",
                 str(tmp_path / "missing" / "y.npz")]) == 2
    assert "expected an existing directory" in capsys.readouterr().err


def test_a_written_file_gets_the_permissions_open_would_give(tmp_path):
    from parity.formats.canonical import save_canonical

    umask = os.umask(0o022)
    try:
        save_canonical(tmp_path / "w.safetensors", _weights(), CONFIG, initialized=True)
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "w.safetensors").st_mode & 0o777 == 0o644
