"""Training runs: the data formats, the original loader's order, the ``train`` command, and a run
killed with SIGKILL and resumed ending exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import HAVE, ROOT

TINY = ["--nr-resnet", "1", "--nr-filters", "4", "--nr-logistic-mix", "2", "--batch-size", "4", "--init-batch-size", "4"]


def _images(tmp_path, n: int = 20, seed: int = 0) -> str:
    path = str(tmp_path / "d.npz")
    np.savez(path, x=np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))
    return path


def test_cifar10_binary_batches_are_read_without_pickle_and_the_python_version_is_refused(tmp_path):
    from parity.data import CIFAR_RECORD, load_images, read_cifar_bin

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    records = np.concatenate([np.array([[7]] * 3, np.uint8), images.transpose(0, 3, 1, 2).reshape(3, -1)], axis=1)
    assert records.shape[1] == CIFAR_RECORD
    (tmp_path / "cifar").mkdir()
    records.tofile(tmp_path / "cifar" / "data_batch_1.bin")
    records[:1].tofile(tmp_path / "cifar" / "data_batch_2.bin")
    records[1:].tofile(tmp_path / "cifar" / "test_batch.bin")
    np.testing.assert_array_equal(read_cifar_bin(str(tmp_path / "cifar" / "data_batch_1.bin")), images)
    np.testing.assert_array_equal(load_images(str(tmp_path / "cifar")), np.concatenate([images, images[:1]]))
    np.testing.assert_array_equal(load_images(str(tmp_path / "cifar"), "test"), images[1:])
    (tmp_path / "bad.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="expected CIFAR-10 binary records of 3073 bytes; the file has 100 bytes"):
        load_images(str(tmp_path / "bad.bin"))
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "data_batch_1").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ValueError, match="python version .* use the binary version"):
        load_images(str(tmp_path / "py"))


def test_npz_images_in_both_layouts_and_bad_ones_are_one_line_errors(tmp_path):
    from parity.data import load_images

    x = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "planes.npz", data=x.transpose(0, 3, 1, 2).reshape(4, -1), labels=np.arange(4))
    np.testing.assert_array_equal(load_images(str(tmp_path / "x.npz")), x)
    np.testing.assert_array_equal(load_images(str(tmp_path / "planes.npz")), x)
    np.savez(tmp_path / "f.npz", x=x.astype(np.float32))
    with pytest.raises(ValueError, match=r"expected x uint8 \[N, H, W, 3\]; received float32"):
        load_images(str(tmp_path / "f.npz"))
    (tmp_path / "t.npz").write_text("not an archive")
    with pytest.raises(ValueError, match="received a file that is not a zip archive"):
        load_images(str(tmp_path / "t.npz"))


def test_png_folders_are_read_in_name_order_as_rgb_and_bad_ones_are_one_line_errors(tmp_path):
    """Pillow decodes: RGB as it is, RGBA without its alpha, gray and palette images as RGB, and the
    PNGs this project writes (``parity.images.save_png``) back to their pixels; 16-bit PNGs (gray, and
    RGB, which Pillow would open as 8-bit), a JPEG named .png, a truncated file and a second size are
    refused in one line."""
    Image = pytest.importorskip("PIL.Image")
    from parity.data import load_images
    from parity.images import png_bytes, save_png

    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 5, 3), dtype=np.uint8)
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.fromarray(rgb[0]).save(folder / "b.png")
    Image.fromarray(np.dstack([rgb[1], np.full((6, 5), 7, np.uint8)])).save(folder / "a.png")
    Image.fromarray(rgb[2][..., 0]).save(folder / "c.png")
    palette = Image.fromarray(rgb[3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(folder / "d.png")
    save_png(rgb[4], folder / "e.png")
    got = load_images(str(folder))
    expected = [rgb[1], rgb[0], np.repeat(rgb[2][..., :1], 3, axis=2), np.asarray(palette.convert("RGB")), rgb[4]]
    np.testing.assert_array_equal(got, np.stack(expected))

    def refused(name, write, message):
        bad = tmp_path / name
        bad.mkdir()
        Image.fromarray(rgb[0]).save(bad / "a.png")
        write(bad / "b.png")
        with pytest.raises(ValueError, match=message) as info:
            load_images(str(bad))
        assert "\n" not in str(info.value)

    refused("deep", lambda p: Image.fromarray(rgb[0][..., 0].astype(np.uint16) * 257).save(p),
            r"b.png: expected a PNG of 8 bits a sample at most \(gray, palette or RGB, alpha allowed\); received PNG in "
            r"mode I;16, 16 bits a sample")
    refused("deep_rgb", lambda p: p.write_bytes(png_bytes(rgb[0].astype(np.uint16) * 257)),  # Pillow writes no 16-bit RGB
            "b.png: .*received PNG in mode RGB, 16 bits a sample")
    refused("jpeg", lambda p: Image.fromarray(rgb[0]).save(p, format="JPEG"), "b.png: expected a PNG of 8 bits .*received JPEG")
    refused("cut", lambda p: p.write_bytes((folder / "b.png").read_bytes()[:60]), "b.png: expected a PNG image; it could not be read")
    refused("sizes", lambda p: Image.fromarray(rgb[0][:5]).save(p), r"b.png: expected every image \(6, 5\) like the first")


def test_a_run_trains_on_a_png_folder_and_its_files_name_no_input(tmp_path, capsys):
    """``--data`` a PNG folder; ``--out`` that folder (the samples would join its images), or a folder
    whose ``last.safetensors`` is the ``--init-from`` file, refused in one line before any work."""
    Image = pytest.importorskip("PIL.Image")
    if not HAVE["torch"]:
        pytest.skip("torch not installed")
    import shutil

    from parity.cli import main

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(folder), *TINY, "--steps", "2", "--out", out]) == 0
    listing = sorted(os.listdir(folder))
    capsys.readouterr()
    assert main(["train", "--data", str(folder), *TINY, "--steps", "2", "--out", str(folder), "--sample-every", "1"]) == 2
    assert f"error: --out {folder} is the folder --data names; expected a folder that holds no input" in capsys.readouterr().err
    assert sorted(os.listdir(folder)) == listing
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(os.path.join(out, "last.safetensors"), again / "last.safetensors")
    before = (again / "last.safetensors").read_bytes()
    assert main(["train", "--data", str(folder), *TINY, "--steps", "2", "--init-from", str(again / "last.safetensors"),
                 "--out", str(again)]) == 2
    assert "names the same file as --init-from" in capsys.readouterr().err
    assert os.listdir(again) == ["last.safetensors"] and (again / "last.safetensors").read_bytes() == before


def test_the_loader_order_is_the_originals_and_a_function_of_seed_and_step():
    from parity.data import Batches

    b = Batches(10, 3, seed=5, shuffle=True, init_batch_size=4)
    rng = np.random.RandomState(5)
    first = np.arange(10)[rng.permutation(10)]  # the init's epoch ...
    second = first[rng.permutation(10)]  # ... then the loader rewinds: training's first epoch permutes again
    third = second[rng.permutation(10)]
    np.testing.assert_array_equal(b.init(), first[:4])
    assert b.per_epoch == 3  # the last incomplete batch is dropped
    np.testing.assert_array_equal(np.concatenate([b.batch(s) for s in (1, 2, 3)]), second[:9])
    np.testing.assert_array_equal(b.batch(4), third[:3])
    again = Batches(10, 3, seed=5, shuffle=True, init_batch_size=4)
    np.testing.assert_array_equal(again.batch(5), b.batch(5))  # replayed from the seed alone
    plain = Batches(10, 3, seed=5, shuffle=False, init_batch_size=4)
    np.testing.assert_array_equal(plain.init(), np.arange(4))
    np.testing.assert_array_equal(plain.batch(4), np.arange(3))


def _train(*args: str, out: str, start_new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "parity", "train", *args, "--out", out], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=start_new_session)


def _steps_logged(out: str) -> int:
    try:
        with open(os.path.join(out, "log.jsonl")) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("backend", [pytest.param(b, marks=pytest.mark.skipif(not HAVE[b], reason=f"{b} not installed"))
                                     for b in ("torch", "tf")])
def test_a_run_killed_with_sigkill_and_resumed_ends_where_an_uninterrupted_run_ends(tmp_path, backend):
    from parity.formats.canonical import load_canonical

    data = _images(tmp_path)
    args = ["--data", data, *TINY, "--steps", "9", "--save-every", "2", "--backend", backend]
    whole = _train(*args, out=str(tmp_path / "whole"))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    killed = _train(*args, out=str(tmp_path / "killed"), start_new_session=True)
    deadline = time.monotonic() + 240
    while _steps_logged(str(tmp_path / "killed")) < 4 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the command and its backend worker, mid-run
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    logged = _steps_logged(str(tmp_path / "killed"))
    assert 4 <= logged < 9, logged
    resumed = _train(*args, "--resume", out=str(tmp_path / "killed"))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "from step " in out
    a, config_a, _ = load_canonical(tmp_path / "whole" / "last.safetensors")
    b, config_b, _ = load_canonical(tmp_path / "killed" / "last.safetensors")
    assert config_a == config_b and sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bit for bit, shadows included
    with open(tmp_path / "whole" / "log.jsonl") as f, open(tmp_path / "killed" / "log.jsonl") as g:
        assert f.read() == g.read()


def test_a_run_refuses_to_overwrite_a_run_and_a_resume_that_does_not_fit(tmp_path):
    if not HAVE["torch"]:
        pytest.skip("torch not installed")
    from parity.cli import main

    data = _images(tmp_path)
    out = str(tmp_path / "run")
    assert main(["train", "--data", data, *TINY, "--steps", "2", "--out", out]) == 0
    with open(os.path.join(out, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    assert [e["step"] for e in log] == [1, 2] and all({"loss", "bpd", "lr"} <= set(e) for e in log)
    before = open(os.path.join(out, "checkpoint.safetensors"), "rb").read()
    assert main(["train", "--data", data, *TINY, "--steps", "2", "--out", out]) == 2
    assert main(["train", "--data", data, *TINY, "--steps", "3", "--out", out, "--resume", "--lr", "0.01"]) == 2
    assert open(os.path.join(out, "checkpoint.safetensors"), "rb").read() == before
    assert main(["train", "--data", data, *TINY, "--steps", "3", "--out", str(tmp_path / "none"), "--resume"]) == 2
    # the checkpoint reads as a weight file, and its last.safetensors runs
    assert main(["convert", os.path.join(out, "checkpoint.safetensors"), str(tmp_path / "w.safetensors")]) == 0


def test_the_released_pixelsnail_trains_and_resumes(tmp_path, capsys):
    """train --model h12_noup_smallkey (12 attention blocks; R 1, F 4 here, 4x4 images): one step, then
    a resume to step 2; the checkpoint keeps the spec and its attention blocks."""
    if not HAVE["torch"]:
        pytest.skip("torch not installed")
    from parity.cli import main
    from parity.formats.canonical import load_canonical

    data = str(tmp_path / "d.npz")
    np.savez(data, x=np.random.default_rng(0).integers(0, 256, (4, 4, 4, 3), dtype=np.uint8))
    args = ["train", "--model", "h12_noup_smallkey", "--data", data, "--nr-resnet", "1", "--nr-filters", "4",
            "--nr-logistic-mix", "2", "--batch-size", "2", "--init-batch-size", "2", "--out", str(tmp_path / "run")]
    assert main([*args, "--steps", "1"]) == 0
    assert main([*args, "--steps", "2", "--resume"]) == 0
    assert "trained 2 steps (from step 1)" in capsys.readouterr().out
    with open(tmp_path / "run" / "log.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]
    _, config, _ = load_canonical(tmp_path / "run" / "last.safetensors")
    assert config["model"] == "h12_noup_smallkey" and config["attn_rep"] == 12


@pytest.mark.parametrize("nonlinearity", ["concat_elu", "elu"])
def test_a_run_goes_on_from_its_original_style_tf1_checkpoint_as_if_never_stopped(tmp_path, nonlinearity):
    """A torch run's checkpoint converted to an original TF1 checkpoint (weights, shadows, the trainer's
    Variable_k slots and t) and given to --init-from: the step count goes on from t - 1, and the run
    ends bit for bit where an uninterrupted run ends (float32 travels through the TF1 file exactly)."""
    if not (HAVE["torch"] and HAVE["tf"]):
        pytest.skip("needs PyTorch (the run) and TensorFlow (the TF1 checkpoint)")
    from parity.cli import main
    from parity.formats.canonical import load_canonical

    data = _images(tmp_path)
    common = ["--data", data, *TINY, "--backend", "torch", "--nonlinearity", nonlinearity]  # elu: the shapes cannot tell
    assert main(["train", *common, "--steps", "4", "--out", str(tmp_path / "whole")]) == 0
    assert main(["train", *common, "--steps", "2", "--out", str(tmp_path / "half")]) == 0
    prefix = str(tmp_path / "half" / "model.ckpt-2")
    assert main(["convert", str(tmp_path / "half" / "checkpoint.safetensors"), prefix]) == 0
    assert main(["train", *common, "--steps", "4", "--init-from", prefix, "--out", str(tmp_path / "on")]) == 0
    with open(tmp_path / "on" / "log.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [3, 4]
    a, _, _ = load_canonical(tmp_path / "whole" / "last.safetensors")
    b, _, _ = load_canonical(tmp_path / "on" / "last.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.skipif(not (HAVE["tf"] and HAVE["torch"]), reason="needs both TensorFlow and PyTorch")
def test_the_twins_train_in_lockstep_within_the_derived_float32_bound():
    """A short run of the training suite's first case: every step's loss, weights, shadows and Adam state
    of the torch twin within the bound the harness derives from TensorFlow's own float32 spread (the
    reference re-run from inputs and weights moved by one ulp); the first failing tensor would name the
    step and the layer where the twins part."""
    import dataclasses

    from parity.case import training_cases
    from parity.harness import check

    case = training_cases()[0]
    case = dataclasses.replace(case, steps=6, arrays={})
    report = check([case], dtypes=("float32",))
    assert report.passed, report.cases[0].first_failure
    tensors = [c.tensor for c in report.cases[0].comparisons]
    assert tensors[0] == "step_1/loss" and tensors[-1].startswith("step_6/") and len(tensors) == 6 * (1 + 171 * 4)


@pytest.mark.skipif(not (HAVE["tf"] and HAVE["torch"]), reason="needs both TensorFlow and PyTorch")
def test_a_training_case_records_and_verifies_without_tensorflow_in_the_checker(tmp_path):
    """``record --suite training`` then ``verify``, on two steps of the elu case (update after Adam's,
    no first moment): the case comes back with its optimiser settings and torch trains within the bound."""
    import dataclasses

    from parity.case import TrainingCase, training_cases
    from parity.harness import load_record, record, verify

    case = dataclasses.replace(training_cases()[1], steps=2, arrays={})
    path = tmp_path / "training.safetensors"
    record(path, backend="tf", cases=[case])
    _, [(loaded, results)] = load_record(path)
    assert isinstance(loaded, TrainingCase) and (loaded.steps, loaded.mom1, loaded.ema) == (2, 0.0, "post")
    assert list(results["float32"])[0] == "step_1/loss" and any(k.startswith("step_2/") for k in results["float32"])
    report = verify(path, backend="torch")
    assert report.passed, report.cases[0].first_failure


def test_sample_every_writes_samples_curves_and_test_bits_per_dim_and_leaves_the_run_as_it_was(tmp_path, capsys):
    if not HAVE["torch"]:
        pytest.skip("torch not installed")
    import zlib

    from parity.cli import main
    from parity.formats.canonical import load_canonical

    data = _images(tmp_path)
    plain, shown = str(tmp_path / "plain"), str(tmp_path / "shown")
    assert main(["train", "--data", data, *TINY, "--steps", "2", "--out", plain]) == 0
    capsys.readouterr()
    assert main(["train", "--data", data, *TINY, "--steps", "2", "--out", shown, "--sample-every", "2", "--test-data", data]) == 0
    at_end = float(capsys.readouterr().out.rsplit("test bits/dim (averaged weights) ", 1)[1].split()[0])
    a, _, _ = load_canonical(os.path.join(plain, "last.safetensors"))
    b, _, _ = load_canonical(os.path.join(shown, "last.safetensors"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # drawing and testing consume nothing of the run
    with open(os.path.join(shown, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    assert [("test_bpd_ema" in e) for e in log] == [False, True]  # every 2 steps (and at the end)
    assert round(log[-1]["test_bpd_ema"], 4) == at_end
    for name, (width, height) in (("samples_000002.png", (35, 35)), ("curves.png", (480, 300))):
        png = open(os.path.join(shown, name), "rb").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (width, height), name
        idat = png.index(b"IDAT")
        raw = zlib.decompress(png[idat + 4: idat + 4 + int.from_bytes(png[idat - 4: idat], "big")])
        assert len(raw) == height * (1 + 3 * width)
    assert not any(n.startswith("samples_") for n in os.listdir(plain))
    assert main(["train", "--data", data, *TINY, "--steps", "2", "--out", str(tmp_path / "bad"), "--sample-every", "0"]) == 2


def test_a_conditional_run_trains_on_one_hot_labels_and_its_model_file_samples_and_scores_with_them(tmp_path, capsys):
    if not HAVE["torch"]:
        pytest.skip("torch not installed")
    from parity.cli import main
    from parity.data import CIFAR_RECORD, load_labels, one_hot, to_model_range
    from parity.formats.canonical import load_canonical
    from parity.formats.training import read_checkpoint

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    data = str(tmp_path / "d.npz")
    np.savez(data, x=x, y=y)
    args = ["train", *TINY, "--steps", "2", "--conditional"]
    assert main([*args, "--data", data, "--out", str(tmp_path / "a"), "--test-data", data]) == 0
    tested = float(capsys.readouterr().out.rsplit("test bits/dim (averaged weights) ", 1)[1].split()[0])
    _, adam, _ = read_checkpoint(str(tmp_path / "a" / "checkpoint.safetensors"))
    hw = [k for k in adam if k.endswith("hw_adam_v")]
    assert hw and all(np.abs(adam[k]).max() > 0 for k in hw)  # h reaches the steps: its weights have gradients
    last = str(tmp_path / "a" / "last.safetensors")
    _, config, _ = load_canonical(last)
    assert config["h_channels"] == 3  # the original's num_labels: the largest label + 1
    # the model file with the test images' one-hot h gives the test bits/dim the run printed
    np.savez(tmp_path / "in.npz", x=to_model_range(x[:4]), h=one_hot(y[:4], 3))
    assert main(["run", "--weights", last, "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "o1.npz"), "--ema"]) == 0
    np.savez(tmp_path / "in2.npz", x=to_model_range(x[4:]), h=one_hot(y[4:], 3))
    assert main(["run", "--weights", last, "--inputs", str(tmp_path / "in2.npz"), "--out", str(tmp_path / "o2.npz"), "--ema"]) == 0
    loss = sum(float(np.load(tmp_path / f"o{i}.npz")["loss"]) for i in (1, 2))
    assert abs(loss / (np.log(2) * 8 * 8 * 8 * 3) - tested) < 1e-4
    noise = {"u_mix": rng.uniform(1e-5, 1 - 1e-5, (2, 8, 8, 2)).astype(np.float32),
             "u_value": rng.uniform(1e-5, 1 - 1e-5, (2, 8, 8, 3)).astype(np.float32)}
    np.savez(tmp_path / "noise.npz", **noise)
    np.savez(tmp_path / "h.npz", h=one_hot(np.array([0, 2]), 3))
    sample = ["sample", "--weights", last, "--noise", str(tmp_path / "noise.npz"), "--ema"]
    assert main([*sample, "--inputs", str(tmp_path / "h.npz"), "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["x"].shape == (2, 8, 8, 3)
    assert main([*sample, "--out", str(tmp_path / "s2.npz")]) == 2  # a conditional model file needs h
    # labels: CIFAR-10's label byte; an .npz without y, or with bad y, and PNG folders are one-line errors
    records = np.concatenate([np.array([[3], [9]], np.uint8), rng.integers(0, 256, (2, CIFAR_RECORD - 1), dtype=np.uint8)], 1)
    records.tofile(tmp_path / "c.bin")
    np.testing.assert_array_equal(load_labels(str(tmp_path / "c.bin")), [3, 9])
    np.savez(tmp_path / "nolabels.npz", x=x)
    np.savez(tmp_path / "neg.npz", x=x, y=-y)
    with pytest.raises(ValueError, match=r"expected an array y \[N\] of integer labels"):
        load_labels(str(tmp_path / "nolabels.npz"))
    assert main([*args, "--data", str(tmp_path / "neg.npz"), "--out", str(tmp_path / "neg")]) == 2
    assert not os.path.exists(tmp_path / "neg")
    np.savez(tmp_path / "t9.npz", x=x, y=np.full(8, 9))
    assert main([*args, "--data", data, "--test-data", str(tmp_path / "t9.npz"), "--out", str(tmp_path / "t9")]) == 2
