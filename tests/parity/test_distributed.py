"""Data-parallel training (parity.distributed): two CPU workers on gloo, on 127.0.0.1 only, each test
bounded in time and stopping its workers. The workers are started as torchrun starts them (its
environment: RANK, WORLD_SIZE, MASTER_ADDR, ...) without torchrun, so that a test can kill one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Iterator

import numpy as np
import pytest

from tests.conftest import HAVE, ROOT, run_cli

pytestmark = pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")

TINY = ["--nr-resnet", "1", "--nr-filters", "8", "--nr-logistic-mix", "2", "--batch-size", "4", "--init-batch-size", "4"]


def _images(tmp_path, n: int = 24) -> str:
    path = str(tmp_path / "d.npz")
    np.savez(path, x=np.random.default_rng(3).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))
    return path


@contextlib.contextmanager
def _workers(per_rank: list[list[str]], store: str) -> Iterator[list[subprocess.Popen]]:
    """``python -m parity train ARGS`` once per rank, in torchrun's environment, meeting through the
    file ``store`` (no TCP store listening on every interface) and talking over gloo on 127.0.0.1
    (GLOO_SOCKET_IFNAME=lo); every worker (and its backend worker) is killed on the way out."""
    size = len(per_rank)
    procs = []
    try:
        for rank, args in enumerate(per_rank):
            env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1", "RANK": str(rank),
                   "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_WORLD_SIZE": str(size),
                   "PARITY_DIST_INIT": f"file://{store}", "GLOO_SOCKET_IFNAME": "lo"}
            procs.append(subprocess.Popen([sys.executable, "-m", "parity", "train", *args], cwd=ROOT, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True))
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _finish(procs: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    outputs = [p.communicate(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outputs)]


def test_two_workers_compute_what_one_process_computes_on_the_concatenated_batch(tmp_path):
    """The 2-worker run's starting weights are the mean of the workers' own single-process inits (bit
    for bit: a 2-term float32 sum halved), its shadows worker 0's own init; each step's loss and the
    weights, shadows and Adam state after 3 steps are those of one process stepping on the
    concatenated batches with the loss halved, within the training suite's derived float32 bound."""
    data, out = _images(tmp_path), str(tmp_path / "run")
    args = ["--data", data, *TINY, "--steps", "3", "--no-shuffle", "--out", out]
    with _workers([args, args], str(tmp_path / "store")) as procs:
        results = _finish(procs)
    assert [r[0] for r in results] == [0, 0], results
    assert sorted(os.listdir(out)) == ["checkpoint.safetensors", "init.safetensors", "last.safetensors", "log.jsonl"]
    check = subprocess.run([sys.executable, "-m", "parity.distributed_check", "--data", data, out], cwd=ROOT, text=True,
                           capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert check.returncode == 0, check.stdout + check.stderr
    init, steps = check.stdout.splitlines()
    assert init.startswith("init: 171 weights bit for bit the mean of the workers' own inits") and init.endswith("says: yes")
    assert steps.startswith(f"steps: {3 + 171 * 4} tensors") and f"{3 + 171 * 4} within the bound" in steps, steps


def test_a_conditional_two_worker_run_is_checked_with_its_labels_and_refused_with_others(tmp_path):
    """``--conditional`` on 2 workers: each worker's init and steps see its images' one-hot labels as
    ``h``, and the check recomputes them so (the conditional weights ``hw`` included); data whose labels
    are not the run's is refused in one line."""
    x = np.random.default_rng(3).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    data, other, out = str(tmp_path / "d.npz"), str(tmp_path / "e.npz"), str(tmp_path / "run")
    np.savez(data, x=x, y=np.arange(24) % 3)
    np.savez(other, x=x, y=(np.arange(24) + 1) % 3)
    args = ["--data", data, *TINY, "--steps", "2", "--no-shuffle", "--conditional", "--out", out]
    with _workers([args, args], str(tmp_path / "store")) as procs:
        results = _finish(procs)
    assert [r[0] for r in results] == [0, 0], results
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    check = subprocess.run([sys.executable, "-m", "parity.distributed_check", "--data", data, out], cwd=ROOT, text=True,
                           capture_output=True, timeout=120, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    init, steps = check.stdout.splitlines()
    weights = int(init.split()[1])
    assert weights > 171 and init.startswith(f"init: {weights} weights bit for bit") and init.endswith("says: yes")
    assert f"{2 + weights * 4} within the bound" in steps, steps
    refused = subprocess.run([sys.executable, "-m", "parity.distributed_check", "--data", other, out], cwd=ROOT, text=True,
                             capture_output=True, timeout=120, env=env)
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: {other}: not the run's labels (digest "), refused.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAVE["tf"] or os.environ.get("PARITY_TF_WORKERS") != "1",
                    reason="TensorFlow's workers take over a minute on 2 cores: PARITY_TF_WORKERS=1 runs them")
def test_two_tensorflow_workers_compute_what_one_process_computes(tmp_path):
    """As the torch test, with two MultiWorkerMirroredStrategy workers (TF_CONFIG on 127.0.0.1)."""
    import socket

    data, out = _images(tmp_path), str(tmp_path / "run")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for rank in range(2):
            env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1",
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": rank}})}
            procs.append(subprocess.Popen([sys.executable, "-m", "parity", "train", "--backend", "tf", "--data", data, *TINY,
                                           "--steps", "2", "--no-shuffle", "--out", out], cwd=ROOT, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True))
        results = _finish(procs, timeout=300)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert [r[0] for r in results] == [0, 0], results
    check = subprocess.run([sys.executable, "-m", "parity.distributed_check", "--data", data, out], cwd=ROOT, text=True,
                           capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1",
                                                                  "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert check.returncode == 0, check.stdout + check.stderr
    init, steps = check.stdout.splitlines()[-2:]
    assert init.startswith("init: 171 weights bit for bit") and f"{2 + 171 * 4} within the bound" in steps, steps


def test_workers_given_different_options_are_refused_at_start(tmp_path):
    data = _images(tmp_path)
    args = ["--data", data, *TINY, "--steps", "2", "--out", str(tmp_path / "run")]
    with _workers([args, [*args, "--lr", "0.002"]], str(tmp_path / "store")) as procs:
        results = _finish(procs)
    for code, out, err in results:
        assert code == 2 and err.count("\n") == 1, err
        assert "worker 1 runs with lr=0.002; worker 0 with lr=0.001: every worker must be given the same options" in err
    assert not os.path.exists(tmp_path / "run" / "log.jsonl")


def test_a_worker_killed_mid_run_stops_the_other_with_one_line_and_the_run_resumes_with_one_worker(tmp_path):
    """Killing worker 1 (SIGKILL, with its backend worker) mid-run: worker 0 exits within the bound with
    one line that names the lost collective; the run goes on from its last checkpoint in one process."""
    data, out = _images(tmp_path), str(tmp_path / "run")
    args = ["--data", data, *TINY, "--steps", "500", "--save-every", "2", "--worker-timeout", "20", "--out", out]
    with _workers([args, args], str(tmp_path / "store")) as procs:
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(out, "checkpoint.safetensors")) and time.monotonic() < deadline:
            assert procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.05)
        os.killpg(procs[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        code, _, err = _finish(procs[:1], timeout=40)[0]
        took = time.monotonic() - killed
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: worker 0 of 2: ") and "--resume" in err, err
    assert took < 30, took
    with open(os.path.join(out, "log.jsonl")) as f:
        logged = sum(1 for _ in f)
    assert 2 <= logged < 500
    resumed = run_cli("train", "--data", data, *TINY, "--steps", str(logged + 2), "--out", out, "--resume",
                      env_extra={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr
    with open(os.path.join(out, "log.jsonl")) as f:
        assert [int(line.split(",")[0].split(":")[1]) for line in f][-2:] == [logged + 1, logged + 2]


def test_worker_batches_are_the_shards_of_one_order_or_each_workers_own():
    from parity.data import Batches
    from parity.distributed import WorkerBatches

    plain = [WorkerBatches(20, 3, 5, False, 2, r, 2) for r in range(2)]
    np.testing.assert_array_equal(plain[1].init(), [2, 3])  # worker r inits on images [r I, (r + 1) I)
    np.testing.assert_array_equal(np.concatenate([w.batch(2) for w in plain]), np.arange(6, 12))  # step 2: the next N B
    assert plain[0].per_epoch == 3  # 20 // (2 x 3)
    shards = [WorkerBatches(20, 3, 5, True, 2, r, 2) for r in range(2)]
    whole = Batches(20, 6, 5, True, 4)
    np.testing.assert_array_equal(np.concatenate([w.init() for w in shards]), whole.init())
    for step in (1, 3, 4):  # disjoint shards of each epoch's permutation
        np.testing.assert_array_equal(np.concatenate([w.batch(step) for w in shards]), whole.batch(step))
    own = WorkerBatches(20, 3, 5, True, 2, 1, 2, "independent")
    np.testing.assert_array_equal(own.batch(4), Batches(20, 3, 6, True, 2).batch(4))  # the original's: seed + rank
    with pytest.raises(ValueError, match="with --no-shuffle every worker would take the same images"):
        WorkerBatches(20, 3, 5, False, 2, 1, 2, "independent")
    with pytest.raises(ValueError, match="2 workers take 2 x 12 images a step"):
        WorkerBatches(20, 12, 5, True, 2, 0, 2)


def test_the_environment_is_read_and_checked_before_any_process_group(monkeypatch):
    from parity.distributed import World, env_world, join

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert env_world() == (0, 1, 0) and type(join("torch", "cpu")) is World
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="expected 0 <= RANK < WORLD_SIZE; received RANK=2, WORLD_SIZE=2"):
        env_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="expected integer RANK and WORLD_SIZE"):
        env_world()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="meet through TF_CONFIG, not torchrun's environment"):
        join("tf", "cpu")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}')
    with pytest.raises(ValueError, match="expected TF_CONFIG as"):
        join("tf", "cpu")
