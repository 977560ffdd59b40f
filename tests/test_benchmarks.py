"""The benchmark scripts run (at a tiny size): they are measured by hand, never timed by tests."""

from __future__ import annotations

import json

import pytest

from tests.conftest import HAVE


@pytest.mark.skipif(not HAVE["torch"], reason="needs PyTorch")
def test_bench_block_runs_at_a_tiny_size_and_writes_json(tmp_path, capsys):
    from benchmarks.bench_block import conv_flops, main

    variants = "torch-eager" + (",tf-function" if HAVE["tf"] else "")
    out = tmp_path / "b.json"
    rc = main(["--size", "tiny", "--repeats", "1", "--warmup", "0", "--variants", variants, "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == variants.split(",")
    for r in rows:
        assert r["forward_ms"]["median"] > 0 and r["forward_backward_ms"]["median"] > 0 and r["init_ms"]["median"] > 0
        assert r["baseline"] == ("tf-function" if HAVE["tf"] else "torch-eager")
    assert "ema30_ms" in rows[0] and "EMA30 / (30 x block fwd+bwd)" in printed
    # FLOPs of the two 2x3 convolutions of a concat_elu block: 2 * positions * 6 * (2F*F + 2F*2F).
    assert conv_flops(160, 64, 32, 32) == 2 * 64 * 32 * 32 * 6 * (2 * 160 * 160 + 2 * 160 * 320)


def test_bench_block_refuses_unknown_variants(capsys):
    from benchmarks.bench_block import main

    with pytest.raises(SystemExit):
        main(["--variants", "torch-eager,jax"])
    assert "unknown variants ['jax']" in capsys.readouterr().err
