"""Every file the project writes is written whole or not at all (parity.atomic)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import HAVE, ROOT

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


def _block_files(tmp_path):
    from parity.formats.canonical import save_canonical

    w = tmp_path / "w.safetensors"
    save_canonical(w, _weights(), CONFIG, initialized=True)
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 4, 5, 3), np.float32))
    return str(w), str(tmp_path / "x.npz")


def _tree(folder):
    """Every entry of ``folder``: name -> (kind, bytes of a regular file or a link's target)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        out[name] = ("link", os.readlink(p)) if os.path.islink(p) else ("file", open(p, "rb").read()) if os.path.isfile(p) else ("other", None)
    return out


def test_an_output_that_names_an_input_or_another_output_is_refused_and_nothing_changes(tmp_path, capsys):
    """One check for every command (parity.atomic.check_outputs), before any work: the same file by
    its name, a symbolic link, a hard link, or a TF1 prefix and its .index."""
    from parity.cli import main

    w, x = _block_files(tmp_path)
    os.symlink(w, tmp_path / "link.safetensors")
    os.link(w, tmp_path / "hard.safetensors")
    (tmp_path / "m.ckpt.index").write_bytes(b"index")
    before = _tree(tmp_path)
    y = str(tmp_path / "y.npz")
    for argv, clash in (
        (["run", "--weights", w, "--inputs", x, "--out", w], "--out {t}/w.safetensors names the same file as --weights"),
        (["run", "--weights", w, "--inputs", x, "--out", x], "--out {t}/x.npz names the same file as --inputs"),
        (["run", "--weights", w, "--inputs", x, "--out", str(tmp_path / "link.safetensors")], "as --weights"),
        (["run", "--weights", w, "--inputs", x, "--out", str(tmp_path / "hard.safetensors")], "as --weights"),
        (["run", "--weights", w, "--inputs", x, "--init", "--save-weights", y, "--out", y], "--save-weights {t}/y.npz names the same file as --out"),
        (["sample", "--weights", w, "--noise", x, "--out", w], "as --weights"),
        (["sample", "--weights", w, "--noise", x, "--out", x], "as --noise"),
        (["convert", w, w], "destination {t}/w.safetensors names the same file as source"),
        (["convert", str(tmp_path / "m.ckpt"), str(tmp_path / "m.ckpt.index")], "as source"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and clash.format(t=tmp_path) in err and len(err.splitlines()) == 1, (argv, err)
        assert _tree(tmp_path) == before, argv


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_outputs_follow_links_write_into_fifos_and_devices_and_refuse_the_rest(tmp_path, capsys):
    """What an output path may name, decided once (parity.atomic.destination): a link is followed (the
    file it names is replaced, the link stays), a FIFO or a character device is written into (never
    replaced by a regular file), a dangling link is refused before any work."""
    import stat
    import threading

    from parity.cli import main

    w, x = _block_files(tmp_path)
    run = ["run", "--weights", w, "--inputs", x, "--out"]
    (tmp_path / "target.npz").write_bytes(b"old")
    os.symlink("target.npz", tmp_path / "link.npz")
    assert main(run + [str(tmp_path / "link.npz")]) == 0
    assert os.readlink(tmp_path / "link.npz") == "target.npz"
    with np.load(tmp_path / "target.npz") as f:
        assert f["out"].shape == (1, 4, 5, 3)

    os.mkfifo(tmp_path / "pipe")
    got = []
    reader = threading.Thread(target=lambda: got.append(open(tmp_path / "pipe", "rb").read()), daemon=True)
    reader.start()
    assert main(run + [str(tmp_path / "pipe")]) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode) and got and got[0].startswith(b"PK")  # an .npz came through
    assert main(run + [os.devnull]) == 0 and stat.S_ISCHR(os.stat(os.devnull).st_mode)

    os.symlink("nowhere.npz", tmp_path / "dangling.npz")
    capsys.readouterr()
    assert main(run + [str(tmp_path / "dangling.npz")]) == 2
    assert "a symbolic link that leads nowhere" in capsys.readouterr().err
    assert not (tmp_path / "nowhere.npz").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


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


def test_a_write_that_hits_a_size_limit_is_one_line_and_leaves_the_destination(tmp_path):
    """A full disk as safetensors reports it (its own SafetensorError, not an OSError: a traceback
    before): the write fails in one line, exit 2, the old file stays, no temporary file stays. A
    file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes the write fail as a full disk would."""
    import resource
    import signal
    import subprocess
    import sys

    from parity.formats.canonical import save_canonical

    save_canonical(tmp_path / "w.safetensors", _weights(), CONFIG, initialized=True)
    (tmp_path / "old.torch.safetensors").write_bytes(b"old")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    done = subprocess.run([sys.executable, "-m", "parity", "convert", str(tmp_path / "w.safetensors"),
                           str(tmp_path / "old.torch.safetensors")], capture_output=True, text=True, preexec_fn=limit,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "could not write it" in done.stderr and len(done.stderr.splitlines()) == 1
    assert (tmp_path / "old.torch.safetensors").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["old.torch.safetensors", "w.safetensors"]
