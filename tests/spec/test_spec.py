"""The framework-free facts (``gated_spec``) and the registry built on them (``parity.kinds``): one list
of conv kinds that both twins build from, one V permutation, one entry per kind."""

from __future__ import annotations

import numpy as np
import pytest

from gated_spec import CONV_KINDS, LAYER_KINDS, TORCH_PERM, v_from_torch, v_tf_shape, v_to_torch
from tests.conftest import BACKEND_PARAMS


@pytest.mark.parametrize("name", BACKEND_PARAMS)
def test_each_twin_builds_exactly_the_conv_kinds_of_the_spec(name):
    from parity.backends import get_backend

    impl = get_backend(name).IMPL
    assert tuple(impl.CONV_LAYERS) == tuple(CONV_KINDS)
    for kind, filt in CONV_KINDS.items():  # nin has no filter; the others are the layer kinds of that name
        want = "Nin" if filt is None else LAYER_KINDS[kind][0]
        assert impl.CONV_LAYERS[kind].__name__ == want, kind
        assert filt is None or LAYER_KINDS[kind][1] == filt, kind


def test_the_v_permutation_round_trips_and_takes_tf_layouts_to_torchs():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(2, 3, 5, 7))  # [kh, kw, in, out]
    assert v_to_torch(conv).shape == (7, 5, 2, 3)  # (out, in, kh, kw)
    assert v_to_torch(conv)[6, 4, 1, 2] == conv[1, 2, 4, 6]
    dense = rng.normal(size=(5, 7))  # [in, out]
    assert v_to_torch(dense).shape == (7, 5) and v_to_torch(dense)[6, 4] == dense[4, 6]
    for v in (conv, dense):
        np.testing.assert_array_equal(v_from_torch(v_to_torch(v)), v)
        assert v_tf_shape(v_to_torch(v).shape) == v.shape
        assert v_to_torch(v).flags["C_CONTIGUOUS"]
    assert set(TORCH_PERM) == {2, 4}
    assert v_tf_shape((4,)) == (4,)  # g, b, hw: as they are


def test_every_kind_has_a_config_a_table_and_a_twin_class():
    from parity.kinds import KINDS, MODELS, kind_of, kind_of_net, normalize, table_for

    assert MODELS == ("pixelcnn_pp", "h12_noup_smallkey", "h8_noup_smallkey", "h12_pool2_smallkey", "model_spec")
    block = {"num_filters": 2}
    model = {"model": "pixelcnn_pp", "nr_resnet": 1, "nr_filters": 2, "nr_logistic_mix": 1}
    assert kind_of(block) is KINDS["block"] and kind_of(model) is KINDS["pixelcnn_pp"]
    assert normalize(model)["model"] == "pixelcnn_pp" and "model" not in normalize(block)
    assert [r.tf1_name for r in table_for(block)][:3] == ["conv2d_0/V", "conv2d_0/g", "conv2d_0/b"]
    assert len(table_for(model)) > len(table_for(block))
    for kind in KINDS.values():  # a twin's class, or a user's subclass of it, is of its kind (a PixelSNAIL's spec names it)
        twin = type(kind.twin_class, (), {"spec": kind.name} if kind.twin_class == "PixelSNAIL" else {})
        assert kind_of_net(twin()) is kind and kind_of_net(type("Mine", (twin,), {})()) is kind
    with pytest.raises(ValueError, match="expected a twin's GatedResnet or PixelCNNpp or PixelSNAIL; received a dict"):
        kind_of_net({})
    with pytest.raises(ValueError, match=r"expected model one of \['pixelcnn_pp', 'h12_noup_smallkey', .*\]; received model='pixelsnail9'"):
        kind_of({"model": "pixelsnail9"})


def test_one_minus_decay_is_tensorflows_float32(twin):
    assert twin.impl.one_minus_decay(0.9995) == float(np.float32(1) - np.float32(0.9995))
    assert np.float32(twin.impl.one_minus_decay(0.9995)) == np.float32(5.0002337e-4)
    # num_updates caps the decay at (1 + n) / (10 + n): n = 0 -> 1/10, 1 -> 2/11, 9 -> 10/19.
    assert twin.impl.one_minus_decay(0.9995, 0) == float(np.float32(1) - np.float32(0.1))
    assert twin.impl.one_minus_decay(0.9995, 1) == float(np.float32(1) - np.float32(2) / np.float32(11))
    assert twin.impl.one_minus_decay(0.9995, 9) == float(np.float32(1) - np.float32(10) / np.float32(19))
    assert twin.impl.one_minus_decay(0.9, 10**6) == float(np.float32(1) - np.float32(0.9))
