"""PixelSNAIL twins: names in call order, the causal attention and the networks against the NumPy
float64 reference (forward, dropout masks, EMA, init, loss), the twins against each other (gradients,
Polyak, samples), and causality with the attention and its pooling in the path."""

from __future__ import annotations

import numpy as np
import pytest

from tests import reference as ref
from tests.conftest import BACKEND_PARAMS, BOTH
from tests.models import assert_initialized_as, assert_twins_agree_in_float64
from tests.twins.test_model import Twin

B, H, W = 2, 8, 8
BASE = {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "dropout_p": 0.5, "polyak_decay": 0.9995, "attn_rep": 2}
CONFIGS = {  # one per spec: h in the released one, concat_elu in the first PixelSNAIL
    "h12_noup_smallkey": {**BASE, "h_channels": 2, "nonlinearity": "elu"},
    "h12_pool2_smallkey": {**BASE, "nonlinearity": "elu"},
    "model_spec": {**BASE, "nonlinearity": "concat_elu", "attn_rep": 1},
}
SPECS = list(CONFIGS)


class SnailTwin(Twin):
    def model(self, weights, config=None, initialized=True, spec="h12_noup_smallkey"):
        m = self.backend.build({"model": spec, **(config or CONFIGS[spec])}, "float64")
        if weights is not None:
            self.backend.import_weights(m, weights, initialized)
        return m


@pytest.fixture(params=BACKEND_PARAMS)
def twin(request):
    return SnailTwin(request.param)


def data(spec: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-1, 1, (B, H, W, 3)) * 127.5) / 127.5
    x[0, 0, :2], x[1, -1, -2:] = -1.0, 1.0
    h = CONFIGS[spec].get("h_channels")
    return {"x": x, **({"h": rng.normal(size=(B, h))} if h else {})}


def weights(spec: str, seed: int = 0) -> dict:
    from parity.case import random_weights

    return random_weights({"model": spec, **CONFIGS[spec]}, seed, shadows=True, dtype=np.float64)


def masks(spec: str, seed: int = 1) -> list:
    from gated_spec.pixelsnail import pixelsnail_dropout_mask_shapes

    rng = np.random.default_rng(seed)
    c = CONFIGS[spec]
    return [(rng.uniform(size=s) >= c["dropout_p"]).astype(np.float64) for s in pixelsnail_dropout_mask_shapes(spec, c, B, H, W)]


def reference(spec, x, w, h=None, **kw):
    c = CONFIGS[spec]
    return ref.pixelsnail(x, w, spec, c["nr_resnet"], c["attn_rep"], c["nonlinearity"], h=h, **kw)


# -- names and structure ---------------------------------------------------------------------------------
def test_tf1_names_follow_the_originals_call_order():
    """One counter per kind over the whole network: the two first convs, the stream's block, then the
    attention: key block (nin convs: dense), key nin, query block, query nin, the block with ``a``."""
    from parity.kinds import table_for

    rows = table_for({"model": "h12_noup_smallkey", **CONFIGS["h12_noup_smallkey"]}, shadows=False)
    names = {r.torch_key: r.tf1_name for r in rows}
    F_ = 8
    want = {"ul_init_down.V": "conv2d_0/V", "ul_init_right.V": "conv2d_1/V", "ul.0.conv_output.V": "conv2d_3/V",
            "key_block.0.conv_input.V": "dense_0/V", "key_block.0.conv_output.V": "dense_1/V", "key_nin.0.V": "dense_2/V",
            "query_block.0.conv_output.V": "dense_4/V", "query_nin.0.V": "dense_5/V", "mix_block.0.nin_skip.V": "dense_7/V",
            "ul.1.conv_input.V": "conv2d_4/V", "mix_block.1.conv_output.V": "dense_17/V", "nin_out.V": "dense_18/V",
            "mix_block.1.hw": "conditional_weights_7/hw"}
    assert {k: names[k] for k in want} == want
    shapes = {r.torch_key: r.shape for r in rows}
    assert shapes["key_block.0.conv_input.V"] == (F_ + 9, F_ + 9)  # concat([x, ul, background]): 3 + F + 6, elu
    assert shapes["key_nin.0.V"] == (F_ + 9, F_ // 2 + 16) and shapes["query_nin.0.V"] == (F_ + 6, 16)
    assert shapes["mix_block.0.nin_skip.V"] == (F_ // 2, F_)
    first = table_for({"model": "model_spec", **CONFIGS["model_spec"]}, shadows=False)
    shapes = {r.torch_key: r.shape for r in first}
    assert shapes["key_nin.0.V"] == (F_ + 9, 2 * F_) and shapes["query_nin.0.V"] == (F_ + 6, F_)
    assert shapes["key_block.0.conv_input.V"] == (2 * (F_ + 9), F_ + 9)  # concat_elu doubles the input
    assert shapes["ul.0.nin_skip.V"] == (2 * F_, F_) and first[0].tf1_name == "conv2d_0/V" and first[0].torch_key == "u_init.V"


def test_released_defaults_and_bad_arguments():
    from gated_spec.pixelsnail import normalize_pixelsnail_config

    c = normalize_pixelsnail_config("h12_pool2_smallkey", {})
    assert c == {"nr_resnet": 4, "nr_filters": 256, "nr_logistic_mix": 10, "nonlinearity": "elu", "h_channels": None,
                 "dropout_p": 0.5, "polyak_decay": 0.9995, "attn_rep": 12}
    assert normalize_pixelsnail_config("h8_noup_smallkey", {})["attn_rep"] == 8
    with pytest.raises(ValueError, match="attn_rep=0"):
        normalize_pixelsnail_config("model_spec", {"attn_rep": 0})
    with pytest.raises(ValueError, match="expected a PixelSNAIL spec"):
        normalize_pixelsnail_config("h6_noup", {})


def test_a_torch_network_loads_all_or_nothing():
    """A state dict with one tensor of another shape is refused whole, naming it; the network is unchanged
    (torch's own load_state_dict copies what fits, then raises)."""
    torch = pytest.importorskip("torch")
    from torch_impl import StateDictError
    from torch_impl.pixelsnail import PixelSNAIL

    net = PixelSNAIL("h12_pool2_smallkey", nr_resnet=1, nr_filters=8, nr_logistic_mix=2, attn_rep=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bad = {k: v + 1 if v.is_floating_point() else v for k, v in before.items()}
    bad["key_nin.0.V"] = torch.zeros(20, 14)
    with pytest.raises(StateDictError, match=r"'key_nin.0.V': expected shape \(20, 17\); received \(20, 14\)"):
        net.load_state_dict(bad)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


# -- the attention -------------------------------------------------------------------------------------
def _attention(twin, key, mixin, query, downsample, dtype="float64"):
    """The twin's attention on NHWC arrays (the backend's adapter moves them to NCHW for torch)."""
    return twin.numpy(twin.impl.causal_attention(*(twin.tensor(a, dtype) for a in (key, mixin, query)), downsample))


@pytest.mark.parametrize("downsample,size", [(1, (8, 8)), (2, (8, 8)), (2, (5, 7)), (3, (6, 6))])
def test_attention_matches_the_reference_and_the_first_pixel_gets_exactly_zero(twin, downsample, size):
    rng = np.random.default_rng(downsample)
    hh, ww = size
    key, query = rng.normal(size=(2, hh, ww, 16)) * 3, rng.normal(size=(2, hh, ww, 16)) * 3
    mixin = rng.normal(size=(2, hh, ww, 5))
    want = ref.causal_attention(key, mixin, query, downsample)
    got = _attention(twin, key, mixin, query, downsample)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    for dtype in ("float64", "float32"):
        out = _attention(twin, key.astype(dtype), mixin.astype(dtype), query.astype(dtype), downsample, dtype)
        assert np.all(out[:, 0, 0] == 0.0), dtype  # nothing comes before the first pixel: e = 0, 0 / 1e-6
    if downsample > 1 and hh % downsample == 0 and ww % downsample == 0:  # no block lies wholly before these pixels
        first = (downsample - 1) * ww + downsample
        assert np.all(got.reshape(2, -1, 5)[:, :first] == 0.0) and np.all(got.reshape(2, -1, 5)[:, first] != 0.0)
    # against a plain softmax: where a pixel sees earlier keys the two differ only by the 1e-6
    plain = _masked_softmax_attention(key, mixin, query) if downsample == 1 else None
    if plain is not None:
        np.testing.assert_allclose(want[:, 1:], plain[:, 1:], rtol=1e-5, atol=1e-6)


def _masked_softmax_attention(key, mixin, query):
    b, hh, ww, k = query.shape
    n = hh * ww
    dot = query.reshape(b, n, k) @ key.reshape(b, n, k).transpose(0, 2, 1) / np.sqrt(k)
    dot = np.where(np.tril(np.ones((n, n)), -1) > 0, dot, -np.inf)
    with np.errstate(invalid="ignore"):
        p = np.exp(dot - dot.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
    return (np.nan_to_num(p) @ mixin.reshape(b, n, -1)).reshape(b, hh, ww, -1)


def test_the_pooled_mask_keeps_only_blocks_wholly_before_the_query():
    from gated_spec.pixelsnail import causal_mask

    m = causal_mask(4, 4, 2)  # 16 queries x 4 blocks of 2x2
    assert m.shape == (16, 4)
    assert m[:5].sum() == 0  # the first block ends at pixel 5: no query up to 5 sees it
    assert m[6].tolist() == [1, 0, 0, 0] and m[13].tolist() == [1, 1, 0, 0] and m[15].tolist() == [1, 1, 1, 0]
    assert causal_mask(3, 3)[0].sum() == 0 and causal_mask(3, 3)[4].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


# -- the networks against the reference -----------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_forward_dropout_ema_and_loss_match_the_reference(twin, spec):
    w, d = weights(spec), data(spec)
    m = twin.model(w, spec=spec)
    want = reference(spec, d["x"], w, d.get("h"))
    got = twin.forward(m, d)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    k = masks(spec)
    np.testing.assert_allclose(twin.forward(m, d, masks=k), reference(spec, d["x"], w, d.get("h"), masks=k, p=0.5),
                               rtol=1e-10, atol=1e-11)
    shadows = {n[: -len("/ExponentialMovingAverage")]: v for n, v in w.items() if n.endswith("/ExponentialMovingAverage")}
    np.testing.assert_allclose(twin.forward(m, d, use_ema=True), reference(spec, d["x"], shadows, d.get("h")),
                               rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(twin.loss(d["x"], got), ref.mix_logistic_loss(d["x"], want), rtol=1e-12)


@pytest.mark.parametrize("spec", ["h12_noup_smallkey", "model_spec"])
def test_init_runs_through_the_whole_network_as_the_reference_does(twin, spec):
    """Every layer's g and b (attention blocks and nins included) from the init pass, with masks;
    and a failed init (the last block's mask does not fit) leaves every weight as it was."""
    w, d = weights(spec), data(spec)
    raw = {k: v for k, v in w.items() if k.endswith("/V") or k.endswith("/hw")}
    k = masks(spec)
    m = twin.model(None, spec=spec)
    twin.backend.import_weights(m, w, initialized=False)
    before = twin.backend.export_weights(m)
    bad = list(k)
    bad[-1] = bad[-1][..., :2]
    with pytest.raises(ValueError, match="dropout_mask"):
        twin.initialize(m, d, masks=bad)
    after = twin.backend.export_weights(m)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    out = twin.initialize(m, d, masks=k)
    want, new = reference(spec, d["x"], raw, d.get("h"), masks=k, p=0.5, init=True)
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-10)
    assert_initialized_as(twin.backend.export_weights(m), new, raw)


# -- the twins against each other --------------------------------------------------------------------------
@BOTH
def test_the_twins_agree_on_gradients_polyak_and_samples():
    from gated_spec.model import SAMPLER_U_MIN

    spec = "h12_pool2_smallkey"
    w, d = weights(spec), data(spec)
    tft, tot = SnailTwin("tf"), SnailTwin("torch")
    mt, mo = tft.model(w, spec=spec), tot.model(w, spec=spec)
    rows_loss = []
    for twin, m in ((tft, mt), (tot, mo)):
        from parity.kinds import table_for

        rows = table_for({"model": spec, **CONFIGS[spec]}, shadows=False)
        _, loss, grads = twin.backend.model_loss_and_gradients(m, {"x": twin.t(d["x"]), "h": None}, rows)
        rows_loss.append((float(loss), grads))
    et = assert_twins_agree_in_float64(rows_loss[0], rows_loss[1], [(tft, mt), (tot, mo)], w, 1)
    rng = np.random.default_rng(5)
    noise = {"u_mix": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, 2)),
             "u_value": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, 3))}
    st, so = tft.sample(mt, d, noise, use_ema=True), tot.sample(mo, d, noise, use_ema=True)
    np.testing.assert_allclose(so, st, rtol=0, atol=1e-12)
    assert np.array_equal(np.round(st * 127.5), np.round(so * 127.5))
    shadows = {k[: -len("/ExponentialMovingAverage")]: v for k, v in et.items() if k.endswith("/ExponentialMovingAverage")}
    draw = ref.mix_logistic_sample(reference(spec, st, shadows), noise["u_mix"], noise["u_value"])
    np.testing.assert_allclose(st[:, -1, -1], draw[:, -1, -1], rtol=1e-10, atol=1e-12)


# -- causality -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["h12_pool2_smallkey", "model_spec"])
def test_every_output_depends_only_on_strictly_earlier_pixels(twin, spec):
    """The output at (i, j) has zero gradient w.r.t. every input pixel at or after it in raster order
    (the attention's keys hold the raw pixels: a mask with its diagonal, or pooled with ``max_pool``,
    would break this), and a nonzero one w.r.t. some earlier pixel."""
    from tests.twins.test_model import _output_gradient

    w, d = weights(spec), data(spec)
    m = twin.model(w, spec=spec)
    if "h" not in d:
        d = {**d, "h": None}
    for i, j in ((0, 0), (0, 3), (1, 2), (3, 0), (4, 5), (7, 7)):
        g = _output_gradient(twin, m, d, i, j)
        flat = np.abs(g).sum(axis=(0, 3)).reshape(-1)
        pos = i * W + j
        assert np.all(flat[pos:] == 0.0), f"{twin.name}: output ({i}, {j}) depends on input pixel {int(np.argmax(flat[pos:] != 0)) + pos}"
        if pos:
            assert flat[:pos].max() > 0, f"{twin.name}: output ({i}, {j}) sees nothing before it"


# -- float32 and float64 in the harness, within the derived bounds ----------------------------------------------
@BOTH
def test_a_pixelsnail_models_suite_case_passes_in_both_dtypes():
    """The harness's whole-model comparison (forward, loss, every gradient, dropout, init, shadows, EMA
    forward, samples naive and cached) in float32 and float64 under parity.tolerance's bounds: the
    suite's smallest PixelSNAIL case (one attention block, a sharp mixture)."""
    from parity.case import pixelsnail_cases
    from parity.harness import check

    case = next(c for c in pixelsnail_cases() if c.name.endswith("-sharp"))
    report = check([case])
    comparisons = report.cases[0].comparisons
    assert report.passed, [(c.tensor, c.dtype) for c in comparisons if not c.passed][:5]
    assert {c.dtype for c in comparisons} == {"float32", "float64"}
    names = [c.tensor for c in comparisons if c.dtype == "float32"]
    assert names[:3] == ["forward/out", "loss/sum", "loss/bits_per_dim"] and "grad/dense_2/V" in names and "sample/x" in names
    # the cached sampler (docs/sampler.md "PixelSNAIL") against the reference's naive draw: the same images
    cached = next(c for c in comparisons if c.tensor == "sample/x_cached" and c.dtype == "float32")
    assert "8-bit grid: pixels identical 100%, first differing step never" in cached.note, cached.note


def test_the_table_size_is_known_without_building_it():
    """``parity.kinds.table_rows`` interpolates a PixelSNAIL's table in R and attn_rep (R blocks in each
    of attn_rep groups), so a file declaring a huge one is refused before its table is built."""
    from parity.kinds import table_for, table_rows

    for spec in ("h12_noup_smallkey", "model_spec"):
        config = {"model": spec, "nr_resnet": 3, "nr_filters": 4, "nr_logistic_mix": 1, "attn_rep": 4, "h_channels": 2}
        assert table_rows(config) == len(table_for(config))
    assert table_rows({"model": "h12_noup_smallkey", "nr_resnet": 4, "attn_rep": 1_000_000}) > 10 ** 8
