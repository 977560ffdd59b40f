"""The benchmark scripts run (at a tiny size): they are measured by hand, never timed by tests."""

from __future__ import annotations

import json

import pytest

from tests.conftest import HAVE


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_bench_block_runs_at_a_tiny_size_and_writes_json(tmp_path, capsys):
    from benchmarks.bench_block import conv_flops, main

    variants = "torch-eager,torch-idiomatic" + (",tf-function,tf1-graph" if HAVE["tf"] else "")
    out = tmp_path / "b.json"
    rc = main(["--size", "tiny", "--repeats", "1", "--warmup", "0", "--variants", variants, "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == variants.split(",")
    for r in rows:
        assert r["forward_ms"]["median"] > 0 and r["forward_backward_ms"]["median"] > 0
        assert ("init_ms" in r) == (r["variant"] in ("torch-eager", "tf-function"))  # ports without the init: none
        assert r["baseline"] == ("tf-function" if HAVE["tf"] else "torch-eager")
    assert "ema30_ms" in rows[0] and "EMA30 / (30 x block fwd+bwd)" in printed
    assert rows[0]["gemm_gflops"] > 0 and "large GEMM" in printed
    assert "torch-eager / torch-idiomatic, forward+backward" in printed
    if HAVE["tf"]:
        assert "tf-function / tf1-graph, forward+backward" in printed
    # FLOPs of the two 2x3 convolutions of a concat_elu block: 2 * positions * 6 * (2F*F + 2F*2F).
    assert conv_flops(160, 64, 32, 32) == 2 * 64 * 32 * 32 * 6 * (2 * 160 * 160 + 2 * 160 * 320)


def test_bench_block_refuses_unknown_variants(capsys):
    from benchmarks.bench_block import main

    with pytest.raises(SystemExit):
        main(["--variants", "torch-eager,jax"])
    assert "unknown variants ['jax']" in capsys.readouterr().err


def test_rounds_are_merged_by_their_medians_and_pairs_are_ratios_within_a_round():
    from benchmarks.bench_block import merge_rounds, pair_ratios

    def row(variant, rnd, ms):
        return {"size": "s", "mode": "parity", "variant": variant, "round": rnd, "forward_backward_ms": {"median": ms, "min": ms, "n": 1},
                "forward_backward_ratio": ms / 10.0}

    rows = [row("torch-eager", 0, 8.0), row("torch-idiomatic", 0, 10.0), row("torch-eager", 1, 16.0), row("torch-idiomatic", 1, 20.0),
            row("torch-eager", 2, 9.0), row("torch-idiomatic", 2, 9.0)]
    (pair,) = [p for p in pair_ratios(rows) if p["theirs"] == "torch-idiomatic" and p["ours"] == "torch-eager"]
    assert pair["ratios"] == [0.8, 0.8, 1.0] and pair["median"] == 0.8
    eager = next(r for r in merge_rounds(rows) if r["variant"] == "torch-eager")
    assert eager["forward_backward_ms"] == {"median": 9.0, "min": 8.0, "n": 3} and eager["rounds"] == 3
    assert eager["forward_backward_ratio"] == 0.9


@pytest.mark.skipif(not HAVE["tf"], reason="needs TensorFlow")
def test_the_tf_pair_runs_both_graphs_in_one_process(capsys):
    from benchmarks.bench_block import main

    assert main(["--tf-pair", "--size", "tiny", "--repeats", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "tf-function / tf1-graph: median" in out and "2 alternating calls each" in out


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_bench_model_runs_at_a_tiny_size(tmp_path, capsys):
    from benchmarks.bench_model import main

    out = tmp_path / "m.json"
    assert main(["--size", "tiny", "--repeats", "1", "--sample-steps", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["backend"] for r in rows} == ({"tf", "torch"} if HAVE["tf"] else {"torch"})
    for r in rows:
        assert r["forward_backward_ms"]["median"] > 0 and r["init_ms"]["median"] > 0 and r["sample_s_per_image"] > 0


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_bench_sampler_runs_at_a_tiny_size(tmp_path, capsys):
    from benchmarks.bench_sampler import main

    out = tmp_path / "s.json"
    assert main(["--size", "tiny", "--batch", "2", "--backend", "torch", "--naive-steps", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["torch"]
    for r in rows:
        assert r["naive_s_per_batch"] > 0 and r["cached_s_per_batch"] > 0 and r["speedup"] > 0
    assert "speed-up" in capsys.readouterr().out
    # a PixelSNAIL: the cached sampler timed over the whole draw
    assert main(["--model", "h12_pool2_smallkey", "--attn-rep", "1", "--size", "tiny", "--batch", "2", "--backend", "torch",
                 "--naive-steps", "1", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert row["model"] == "h12_pool2_smallkey" and row["cached_rows_timed"] == 8 and row["speedup"] > 0


def test_bench_train_port_refuses_a_folder_that_is_not_the_port(tmp_path, capsys):
    from benchmarks.bench_train_port import main

    (tmp_path / "model.py").write_text("")
    assert main(["--port-dir", str(tmp_path), "--json", str(tmp_path / "b.json")]) == 2
    assert "expected a checkout of pclucas14/pixel-cnn-pp; missing layers.py, utils.py" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
