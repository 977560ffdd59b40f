"""The cached sampler (``torch_impl.fast_sample``, ``tf_impl.fast_sample``) against the naive one it
replaces: the same images on the 8-bit grid for the same noise, and every step's network output within
the float32 bound (``parity.tolerance``) of the naive sampler's full pass at that step."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.adapters import Adapter
from tests.conftest import BACKEND_PARAMS, HAVE

B, H, W = 2, 8, 8
TINY = {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "dropout_p": 0.5, "polyak_decay": 0.9995}
CONDITIONAL = {**TINY, "nonlinearity": "elu", "h_channels": 3, "nr_logistic_mix": 3}
SNAIL = {  # one attention block each: pooled keys with h (both twins), unpooled, the two streams with concat_elu
    "h12_pool2_smallkey": {**CONDITIONAL, "attn_rep": 1},
    "h12_noup_smallkey": {**TINY, "nonlinearity": "elu", "attn_rep": 1},
    "model_spec": {**TINY, "attn_rep": 1},
}
# tf's eager steps cost ten times torch's: the tf twin runs the first (every branch of its attention op
# but the unpooled append, one line), the torch twin all three
SNAIL_CASES = [pytest.param(backend.values[0], spec, marks=backend.marks, id=f"{backend.values[0]}-{spec}")
               for backend in BACKEND_PARAMS for spec in SNAIL if backend.values[0] == "torch" or spec == "h12_pool2_smallkey"]


class Sampling(Adapter):
    """One twin's naive and cached samplers on NHWC NumPy noise."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()
        self.fast = importlib.import_module(f"{name}_impl.fast_sample")

    def model(self, config: dict, dtype: str, seed: int = 0, kind: str = "pixelcnn_pp"):
        from parity.case import random_weights

        m = self.backend.build({"model": kind, **config}, dtype)
        self.backend.import_weights(m, random_weights({"model": kind, **config}, seed, shadows=True))
        return m

    def noise(self, config: dict, dtype: str, seed: int = 0) -> dict:
        from gated_spec.model import SAMPLER_U_MIN

        rng = np.random.default_rng(seed)
        u = {"u_mix": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, config["nr_logistic_mix"])),
             "u_value": rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, 3))}
        u = {k: self.tensor(v.astype(np.float32), dtype) for k, v in u.items()}  # float32 noise, as the parity cases'
        if self.name == "torch":  # the noise is NHWC in both twins
            u = {k: v.permute(0, 2, 3, 1) for k, v in u.items()}
        h = None
        if config.get("h_channels"):
            h = self.tensor(rng.normal(size=(B, config["h_channels"])).astype(np.float32), dtype)
        return {**u, "h": h}

    def draw(self, m, noise: dict, cached: bool, use_ema: bool = False, **kwargs) -> np.ndarray:
        draw = self.fast.sample if cached else self.impl.sample
        return self.numpy(draw(m, B, H, W, noise["h"], u_mix=noise["u_mix"], u_value=noise["u_value"], use_ema=use_ema,
                               **kwargs))

    def naive_draws(self, outputs: np.ndarray, noise: dict) -> np.ndarray:
        """The pixel the naive sampler draws at every step from the network's output there (H, W, B, 10 M)."""
        x = np.zeros((B, H, W, 3), outputs.dtype)
        for i in range(H):
            for j in range(W):
                l = self.tensor(outputs[i, j].reshape(B, 1, 1, -1))
                x[:, i, j] = self.numpy(self.impl.sample_from_discretized_mix_logistic(
                    l, noise["u_mix"][:, i:i + 1, j:j + 1], noise["u_value"][:, i:i + 1, j:j + 1]))[:, 0, 0]
        return x

    def cached_outputs(self, m, images: np.ndarray, h, use_ema: bool = False) -> np.ndarray:
        """The cached network's output at every step (H, W, B, 10 M), fed the pixels of ``images``."""
        s = self.fast.CachedSampler(m, B, H, W, h, use_ema)
        out = []
        for i in range(H):
            for j in range(W):
                out.append(self.numpy(s.output(i, j))[:, 0, 0])
                s.put(i, j, self.tensor(images[:, i, j], str(images.dtype)))
        return np.stack(out).reshape(H, W, B, -1)

    def full_pass_outputs(self, m, images: np.ndarray, h, use_ema: bool = False) -> np.ndarray:
        """The naive sampler's network output at every step (H, W, B, 10 M): the full pass on ``images``
        with the pixels from ``(i, j)`` on still zero, read at ``(i, j)``; all steps' images in one batch."""
        x = np.repeat(images.reshape(1, B, H * W, 3), H * W, axis=0)  # (step, B, pixel, 3)
        x *= (np.arange(H * W)[None, :] < np.arange(H * W)[:, None])[:, None, :, None]  # step k sees the pixels before k
        hh = None if h is None else self.tensor(np.tile(self.numpy(h), (H * W, 1)))
        l = self.backend.model_forward(m, {"x": self.tensor(x.reshape(H * W * B, H, W, 3)), "h": hh}, use_ema=use_ema)
        l = l.reshape(H * W, B, H * W, -1)
        return l[np.arange(H * W), :, np.arange(H * W)].reshape(H, W, B, -1)


@pytest.fixture(params=BACKEND_PARAMS)
def sampling(request):
    return Sampling(request.param)


def _agreement(naive: np.ndarray, cached: np.ndarray) -> str:
    """The parity row's figures on the 8-bit grid: identical share, first differing step."""
    from parity.harness import sample_agreement

    return sample_agreement(np.round(naive * 127.5), np.round(cached * 127.5), 0.0)


def test_the_cached_sampler_draws_the_naive_samplers_images(sampling):
    """concat_elu, unconditional, live weights (the conditional elu network with averaged weights: below)."""
    m = sampling.model(TINY, "float32")
    noise = sampling.noise(TINY, "float32")
    naive, cached = sampling.draw(m, noise, False), sampling.draw(m, noise, True)
    assert np.array_equal(np.round(naive * 127.5), np.round(cached * 127.5)), _agreement(naive, cached)
    # torch's convolution over two cached rows may round differently from the full map's (TensorFlow's
    # did not, here): the draws fed back differ by float32 rounding, never by more
    np.testing.assert_allclose(cached, naive, rtol=0, atol=1e-5)


def test_each_steps_output_is_within_the_full_passs_float32_bound(sampling):
    """The conditional elu network with averaged weights, teacher-forced on the cached sampler's own
    images: at every step the full pass (what the naive sampler computes there) and its draw with that
    step's noise, against the cached output and the pixel it drew: the same pixels on the 8-bit grid, the
    outputs within the float32 bound ``parity.tolerance.compare`` derives from both float64 runs (and
    within the float64 bound in float64)."""
    from parity.tolerance import compare

    m = sampling.model(CONDITIONAL, "float32")
    noise = sampling.noise(CONDITIONAL, "float32")
    seen = {}
    images = sampling.draw(m, noise, True, use_ema=True, on_step=lambda i, j, l: seen.update({(i, j): sampling.numpy(l)}))
    naive = {"float32": sampling.full_pass_outputs(m, images, noise["h"], True)}
    cached = {"float32": np.stack([seen[i, j][:, 0, 0] for i in range(H) for j in range(W)]).reshape(naive["float32"].shape)}
    drawn = sampling.naive_draws(naive["float32"], noise)
    assert np.array_equal(np.round(drawn * 127.5), np.round(images * 127.5)), _agreement(drawn, images)
    m64 = sampling.model(CONDITIONAL, "float64")
    h64 = sampling.noise(CONDITIONAL, "float64")["h"]
    naive["float64"] = sampling.full_pass_outputs(m64, images.astype(np.float64), h64, True)
    cached["float64"] = sampling.cached_outputs(m64, images.astype(np.float64), h64, True)
    for dtype in ("float32", "float64"):
        c = compare("cached sampler", "output per step", dtype, naive, cached)
        assert c.passed, c


@pytest.mark.parametrize("backend, spec", SNAIL_CASES)
def test_pixelsnail_the_naive_samplers_images_and_each_steps_output(backend, spec):
    """PixelSNAIL, averaged weights: the naive and the cached sampler draw the same images on the 8-bit
    grid; teacher-forced on the cached sampler's images, every step's output is within the float32 bound
    of the full pass there (the float64 bound in float64), and the full pass draws the same pixels."""
    from parity.tolerance import compare

    sampling, config = Sampling(backend), SNAIL[spec]
    m = sampling.model(config, "float32", kind=spec)
    noise = sampling.noise(config, "float32")
    seen = {}
    images = sampling.draw(m, noise, True, use_ema=True, on_step=lambda i, j, l: seen.update({(i, j): sampling.numpy(l)}))
    naive_images = sampling.draw(m, noise, False, use_ema=True)
    assert np.array_equal(np.round(naive_images * 127.5), np.round(images * 127.5)), _agreement(naive_images, images)
    naive = {"float32": sampling.full_pass_outputs(m, images, noise["h"], True)}
    cached = {"float32": np.stack([seen[i, j][:, 0, 0] for i in range(H) for j in range(W)]).reshape(naive["float32"].shape)}
    drawn = sampling.naive_draws(naive["float32"], noise)
    assert np.array_equal(np.round(drawn * 127.5), np.round(images * 127.5)), _agreement(drawn, images)
    m64 = sampling.model(config, "float64", kind=spec)
    h64 = sampling.noise(config, "float64")["h"]
    naive["float64"] = sampling.full_pass_outputs(m64, images.astype(np.float64), h64, True)
    cached["float64"] = sampling.cached_outputs(m64, images.astype(np.float64), h64, True)
    for dtype in ("float32", "float64"):
        c = compare(f"cached sampler ({spec})", "output per step", dtype, naive, cached)
        assert c.passed, c


@pytest.mark.skipif(not HAVE["torch"], reason="torch not installed")
def test_pixelsnail_pooled_keys_at_a_size_pooling_pads():
    """A PixelSNAIL runs on every image size: at 5 x 6 the last pooled row holds one image row (``SAME``
    pads one below), and its blocks count once their last pixel is drawn; the torch twin's cached
    sampler draws the naive sampler's images there (the tf twin shares ``gated_spec.pixelsnail.pooled_blocks``)."""
    from parity.backends import torch_backend
    from parity.case import random_weights

    config = {"model": "h12_pool2_smallkey", **TINY, "nonlinearity": "elu", "attn_rep": 1}
    m = torch_backend.build(config, "float32")
    torch_backend.import_weights(m, random_weights(config, 0, shadows=True))
    rng = np.random.default_rng(0)
    noise = {"u_mix": rng.uniform(0.01, 0.99, (B, 5, 6, 2)).astype(np.float32),
             "u_value": rng.uniform(0.01, 0.99, (B, 5, 6, 3)).astype(np.float32)}
    naive, cached = torch_backend.sample(m, noise, None, True, naive=True), torch_backend.sample(m, noise, None, True)
    assert np.array_equal(np.round(naive * 127.5), np.round(cached * 127.5)), _agreement(naive, cached)
    with pytest.raises(ValueError, match="height=0"):
        Sampling("torch").fast.CachedSampler(m, B, 0, 6)


def test_bad_arguments_are_one_line_errors(sampling):
    m = sampling.model(TINY, "float32")
    with pytest.raises(ValueError, match="multiple of 4"):
        sampling.fast.CachedSampler(m, B, 6, W)
    with pytest.raises(ValueError, match="h_channels=None; received h=a tensor"):
        sampling.fast.CachedSampler(m, B, H, W, sampling.tensor(np.zeros((B, 3), np.float32)))
    conditional = sampling.model(CONDITIONAL, "float32")
    with pytest.raises(ValueError, match="dtype"):
        sampling.fast.CachedSampler(conditional, B, H, W, sampling.tensor(np.zeros((B, 3))))  # float64 h, float32 model
    noise = sampling.noise(TINY, "float32")
    with pytest.raises(ValueError, match="u_mix"):
        sampling.fast.sample(m, B, H, W, u_mix=noise["u_mix"][:, :4], u_value=noise["u_value"])
