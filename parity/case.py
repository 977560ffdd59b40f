"""A parity case: one block config and everything both backends are fed, made in NumPy from a seed.

All arrays are NHWC (the original layout) and float32-representable, so a float32 run and a float64
run start from exactly the same numbers, and so do the two backends.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from gated_spec import CHANNEL_MULTIPLIER, CONV_PERM, DEFAULT_POLYAK_DECAY, LAYER_KINDS
from gated_spec import TF1_SHADOW_SUFFIX as EMA_SUFFIX
from gated_spec.training import DEFAULT_EMA_ORDER, DEFAULT_EPS, DEFAULT_LR, DEFAULT_LR_DECAY, DEFAULT_MOM1, DEFAULT_MOM2
from parity.configs import model_args, normalize_config
from parity.kinds import table_for, with_kind
from parity.table import WeightRow, weight_table


class _CaseFields:
    """What every case kind shares: its fields as plain data (``to_dict``, the record's metadata, which
    ``kind(arrays=..., **meta)`` rebuilds), its weights, and its one-ulp perturbation."""

    arrays: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        """Every field but ``arrays``, in declaration order, tuples as lists (plain JSON)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self) if f.name != "arrays"}

    def weights(self, prefix: str = "weights/") -> dict[str, np.ndarray]:
        """The canonical tensors stored under ``prefix`` (TF layout; raw weights and, where the case has
        them, shadows)."""
        return under_prefix(self.arrays, prefix)

    def _settle(self, normalize: Any, make: Any) -> None:
        """The config normalised (the shadows' decay defaulting to the original scripts'), and the
        arrays made from the seed unless given."""
        self.config = normalize(self.config)
        if self.config["polyak_decay"] is None:
            self.config["polyak_decay"] = DEFAULT_POLYAK_DECAY
        if not self.arrays:
            self.arrays = make(self)

    def perturbed(self, sample: int) -> Any:
        """The same case with every float input and weight moved by at most one ulp (Monte Carlo
        sample ``sample``; reproducible)."""
        return dataclasses.replace(self, arrays=perturb_arrays(self.arrays, (self.seed, sample, 0x4D4341)))


@dataclass
class Case(_CaseFields):
    """A block config plus the sizes and seed of its inputs.

    H, W and the channel counts differ by default so that a wrong permute cannot even run.
    """

    name: str
    config: dict[str, Any]
    batch: int = 2
    height: int = 5
    width: int = 7
    seed: int = 0
    ema_steps: int = 3
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._settle(normalize_config, make_arrays)

    def ema_schedule(self) -> list[tuple[dict[str, np.ndarray], int | None]]:
        """The live weights after each of ``ema_steps`` optimiser steps, each with the ``num_updates``
        its Polyak update gets: the step on odd steps, none on even ones, so both decay rules run."""
        names = [r.tf1_name for r in weight_table(self.config, shadows=False)]
        return [({n: self.arrays[f"ema_step_{s}/{n}"] for n in names}, s if s % 2 else None)
                for s in range(1, self.ema_steps + 1)]


def random_weights(config: Mapping[str, Any], seed: int, shadows: bool = False, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """A set of canonical weights for a config of any kind (:mod:`parity.kinds`), made in NumPy:
    V ~ N(0, 0.05), g ~ U(0.5, 1.5), b ~ N(0, 0.1), hw ~ N(0, 0.05).

    Values are float32-representable whatever ``dtype``, so float32 and float64 runs start equal.
    Shadows (if asked) are the raw weights plus a small perturbation, so reading them is visible.
    """
    rng = np.random.default_rng(seed)
    table = table_for(config, shadows=False)
    out: dict[str, np.ndarray] = {}
    for row in table:
        leaf = row.tf1_name.rsplit("/", 1)[1]
        if leaf == "g":
            v = rng.uniform(0.5, 1.5, row.shape)
        elif leaf == "b":
            v = rng.normal(0.0, 0.1, row.shape)
        else:
            v = rng.normal(0.0, 0.05, row.shape)
        out[row.tf1_name] = v.astype(np.float32).astype(dtype)
    if shadows:
        for row in table:
            base = out[row.tf1_name]
            out[row.tf1_name + EMA_SUFFIX] = (base + rng.normal(0.0, 0.01, base.shape)).astype(np.float32).astype(dtype)
    return out


NOT_PERTURBED = ("dropout_mask",)  # exact 0/1 keep-masks: part of the function, not of its float32 inputs
NOT_PERTURBED_PREFIXES = ("dropout_mask/",)  # a model's, one per block


def perturb_arrays(arrays: dict[str, np.ndarray], seed: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every float array with each nonzero element moved to a neighbouring float32 at random (down,
    up, or not at all, with equal odds): the one-ulp input perturbation of the Monte Carlo floor
    (``parity.tolerance``). Zeros stay zero; ``NOT_PERTURBED`` arrays stay as they are."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in arrays.items():
        if k in NOT_PERTURBED or k.startswith(NOT_PERTURBED_PREFIXES) or v.dtype != np.float32:
            out[k] = v
            continue
        step = rng.integers(-1, 2, v.shape)
        moved = np.where(step > 0, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf)))
        out[k] = np.where((step == 0) | (v == 0), v, moved).astype(np.float32)
    return out


def under_prefix(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose key starts with ``prefix``, keyed without it."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


def make_arrays(case: Case) -> dict[str, np.ndarray]:
    """Inputs, cotangent, dropout keep-mask, weights with shadows, and the EMA weight sequence."""
    c = case.config
    rng = np.random.default_rng(case.seed)
    B, H, W, F_ = case.batch, case.height, case.width, c["num_filters"]
    arrays: dict[str, np.ndarray] = {"x": _f32(rng.normal(0.0, 1.0, (B, H, W, F_)))}
    if c["a_channels"]:
        arrays["a"] = _f32(rng.normal(0.0, 1.0, (B, H, W, c["a_channels"])))
    if c["h_channels"]:
        arrays["h"] = _f32(rng.normal(0.0, 1.0, (B, c["h_channels"])))
    arrays["cotangent"] = _f32(rng.normal(0.0, 1.0, (B, H, W, F_)))
    if c["dropout_p"] > 0:
        mult = CHANNEL_MULTIPLIER[c["nonlinearity"]]
        arrays["dropout_mask"] = _f32(rng.uniform(size=(B, H, W, mult * F_)) >= c["dropout_p"])
    weights = random_weights(c, seed=case.seed + 1, shadows=True)
    arrays.update({f"weights/{k}": v for k, v in weights.items()})
    # The live weights after each of ``ema_steps`` optimiser steps: small random walks from the start.
    current = {r.tf1_name: weights[r.tf1_name] for r in weight_table(c, shadows=False)}
    for step in range(1, case.ema_steps + 1):
        current = {k: _f32(v + rng.normal(0.0, 0.01, v.shape)) for k, v in current.items()}
        arrays.update({f"ema_step_{step}/{k}": v for k, v in current.items()})
    return arrays


def default_cases() -> list[Case]:
    """The built-in suite: every conv kind, ``a`` absent / F / 2F channels, ``h`` absent / present,
    each nonlinearity, and dropout, in a covering set rather than the full product."""
    F_ = 4
    specs = [
        ("conv2d", None, None, "concat_elu", 0.0),
        ("conv2d", F_, 3, "concat_elu", 0.5),
        ("down_shifted_conv2d", None, 3, "concat_elu", 0.0),
        ("down_shifted_conv2d", 2 * F_, None, "elu", 0.0),
        ("down_right_shifted_conv2d", F_, 3, "relu", 0.0),
        ("down_right_shifted_conv2d", 2 * F_, None, "concat_elu", 0.5),
        ("nin", 2 * F_, 3, "concat_elu", 0.0),
        ("nin", None, None, "elu", 0.0),
    ]
    cases = []
    for i, (conv, a, h, nl, p) in enumerate(specs):
        name = f"{conv}-a{a or 0}-h{h or 0}-{nl}" + (f"-drop{p}" if p else "")
        config = {"num_filters": F_, "a_channels": a, "h_channels": h, "conv": conv, "nonlinearity": nl, "dropout_p": p}
        cases.append(Case(name, config, seed=i))
    return cases


def wide_cases() -> list[Case | ModelCase]:
    """The block at PixelCNN++ width (F = 160: each conv sums 1920 products per output), on a small
    image: what the F = 4 suite cannot show, a kernel whose float32 error grows with the sum's length
    faster than the reference's. The down-shifted stream without ``a``, the down-right one with ``a``;
    then the whole model at that width (``wide_model_case``), and the released PixelSNAIL at its width
    (F = 256, M = 10, elu) with one block and one attention block, on 8x8."""
    specs = [("down_shifted_conv2d", None), ("down_right_shifted_conv2d", 160)]
    return [
        Case(f"wide-{conv}-a{a or 0}", {"num_filters": 160, "a_channels": a, "conv": conv, "nonlinearity": "concat_elu"},
             batch=2, height=8, width=8, seed=5 + i)
        for i, (conv, a) in enumerate(specs)
    ] + [wide_model_case(), ModelCase("wide-model-h12_noup_smallkey-R1-F256-M10-a1", {
        "nr_resnet": 1, "nr_filters": 256, "nr_logistic_mix": 10, "attn_rep": 1, "dropout_p": 0.5}, seed=8, model="h12_noup_smallkey")]


# -- one weight-normalised layer (the transposed convs are not part of the block) ------------------
@dataclass
class LayerCase(_CaseFields):
    """One weight-normalised conv layer: its kind, channels, filter and stride, and its inputs.

    Weights are canonical (TF layout): ``V`` is ``[kh, kw, in, out]`` for a conv and
    ``[kh, kw, out, in]`` for a transposed conv; both go to torch by the permutation ``(3, 2, 0, 1)``.
    """

    name: str
    kind: str
    in_channels: int = 3
    num_filters: int = 5
    stride: tuple[int, int] = (2, 2)
    batch: int = 2
    height: int = 4
    width: int = 6
    seed: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"Expected a layer kind in {sorted(LAYER_KINDS)}. Received: {self.kind!r}")
        self.stride = tuple(self.stride)
        if not self.arrays:
            rng = np.random.default_rng(self.seed)
            B, H, W = self.batch, self.height, self.width
            x = _f32(rng.normal(0.0, 1.0, (B, H, W, self.in_channels)))
            kh, kw = self.filter_size
            v_shape = (kh, kw, self.num_filters, self.in_channels) if self.transposed else (kh, kw, self.in_channels, self.num_filters)
            self.arrays = {
                "x": x,
                "weights/V": _f32(rng.normal(0.0, 0.05, v_shape)),
                "weights/g": _f32(rng.uniform(0.5, 1.5, self.num_filters)),
                "weights/b": _f32(rng.normal(0.0, 0.1, self.num_filters)),
            }

    @property
    def class_name(self) -> str:
        return LAYER_KINDS[self.kind][0]

    @property
    def filter_size(self) -> tuple[int, int]:
        return LAYER_KINDS[self.kind][1]

    @property
    def transposed(self) -> bool:
        return LAYER_KINDS[self.kind][2]

    @property
    def config(self) -> dict[str, Any]:
        return {"layer": self.kind, "in_channels": self.in_channels, "num_filters": self.num_filters,
                "filter_size": list(self.filter_size), "stride": list(self.stride)}



def layer_cotangent(case: LayerCase, shape: tuple[int, ...]) -> np.ndarray:
    """The cotangent for a layer's output of ``shape`` (NHWC), made from the case's seed."""
    return _f32(np.random.default_rng(case.seed + 1).normal(0.0, 1.0, tuple(shape)))


def layer_weight_rows(case: LayerCase) -> list[WeightRow]:
    """The layer's tensors: ``V`` (TF layout, permutation ``(3, 2, 0, 1)`` to torch), ``g``, ``b``."""
    v = case.arrays["weights/V"]
    return [WeightRow("V", "V", "V", tuple(v.shape), CONV_PERM),
            WeightRow("g", "g", "g", (case.num_filters,), None),
            WeightRow("b", "b", "b", (case.num_filters,), None)]


def layer_cases() -> list[LayerCase]:
    """Every weight-normalised conv layer kind alone (the transposed ones are not in the block), at
    strides (1, 1), (2, 2) and (1, 2): forward, gradients and init against the reference."""
    pairs = itertools.product(LAYER_KINDS, [(1, 1), (2, 2), (1, 2)])
    return [LayerCase(f"layer-{kind}-s{sh}x{sw}", kind, stride=(sh, sw), seed=i) for i, (kind, (sh, sw)) in enumerate(pairs)]


@dataclass
class ModelCase(_CaseFields):
    """A whole network (PixelCNN++, or the PixelSNAIL spec named by ``model``) and everything both
    backends are fed: images on the 8-bit grid (edges included), ``h`` where the model has it, weights
    with shadows, one dropout keep-mask per block, the live weights after ``ema_steps`` optimiser
    steps, and the sampler's noise."""

    name: str
    config: dict[str, Any]
    batch: int = 2
    height: int = 8
    width: int = 8
    seed: int = 0
    ema_steps: int = 2
    log_scale_shift: float = 0.0
    model: str = "pixelcnn_pp"  # the network's kind (parity.kinds); its config carries no ``model`` key
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from parity.kinds import normalize

        self._settle(lambda c: model_args(normalize(with_kind(self.model, c))), make_model_arrays)

    @property
    def kind(self) -> str:
        return self.model

    def dropout_masks(self) -> list[np.ndarray]:
        n = sum(k.startswith("dropout_mask/") for k in self.arrays)
        return [self.arrays[f"dropout_mask/{i}"] for i in range(n)]

    def ema_steps_weights(self) -> list[dict[str, np.ndarray]]:
        return [under_prefix(self.arrays, f"ema_step_{s}/") for s in range(1, self.ema_steps + 1)]

    def perturbed(self, sample: int) -> "ModelCase":
        """As every case's; the sampler's noise stays (it is part of the draw, not of its inputs)."""
        moved = super().perturbed(sample)
        moved.arrays.update({k: v for k, v in self.arrays.items() if k.startswith("noise/")})
        return moved


def make_model_arrays(case: ModelCase) -> dict[str, np.ndarray]:
    from gated_spec.model import IMAGE_CHANNELS, SAMPLER_U_MIN, output_channels
    from parity.kinds import dropout_mask_shapes

    c = case.config
    rng = np.random.default_rng(case.seed)
    B, H, W = case.batch, case.height, case.width
    x = np.round(rng.uniform(-1, 1, (B, H, W, 3)) * 127.5) / 127.5
    x.reshape(-1)[:: 7] = -1.0  # the edge branches of the loss
    x.reshape(-1)[3:: 11] = 1.0
    arrays: dict[str, np.ndarray] = {"x": _f32(x)}
    if c["h_channels"]:
        arrays["h"] = _f32(rng.normal(0.0, 1.0, (B, c["h_channels"])))
    p = c["dropout_p"] if c["dropout_p"] > 0 else 0.5
    for i, shape in enumerate(dropout_mask_shapes(with_kind(case.kind, c), B, H, W)):
        arrays[f"dropout_mask/{i}"] = _f32(rng.uniform(size=shape) >= p)
    weights = random_weights(with_kind(case.kind, c), seed=case.seed + 1, shadows=True)
    if case.log_scale_shift:  # a sharper (or flatter) mixture, as a trained network's: every log scale moved
        name = next(r.tf1_name for r in table_for(with_kind(case.kind, c), shadows=False) if r.keras_path == "nin_out/b")
        b = weights[name] = weights[name].copy()
        for ch in range(IMAGE_CHANNELS):
            b[output_channels(c["nr_logistic_mix"], "log_scales", ch)] += case.log_scale_shift
    arrays.update({f"weights/{k}": v for k, v in weights.items()})
    current = {r.tf1_name: weights[r.tf1_name] for r in table_for(with_kind(case.kind, c), shadows=False)}
    for s in range(1, case.ema_steps + 1):
        current = {k: _f32(v + rng.normal(0.0, 0.01, v.shape)) for k, v in current.items()}
        arrays.update({f"ema_step_{s}/{k}": v for k, v in current.items()})
    arrays["noise/u_mix"] = _f32(rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, c["nr_logistic_mix"])))
    arrays["noise/u_value"] = _f32(rng.uniform(SAMPLER_U_MIN, 1 - SAMPLER_U_MIN, (B, H, W, 3)))
    return arrays



def model_cases() -> list[ModelCase]:
    """Tiny PixelCNN++ models (seconds): the unconditional CIFAR-10 shape at R = 1, F = 8, a
    conditional one with elu blocks, and a sharp one (every log scale moved by -6, as a trained
    network's: most sub-pixels far out in their logistic's tails, where softplus saturates and
    ``cdf_delta`` underflows)."""
    return [
        ModelCase("model-pixelcnn_pp-R1-F8-M2", {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "dropout_p": 0.5}),
        ModelCase("model-pixelcnn_pp-R1-F4-M3-h2-elu", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 3, "h_channels": 2,
                                                        "nonlinearity": "elu", "dropout_p": 0.5}, seed=1),
        ModelCase("model-pixelcnn_pp-R1-F4-M2-sharp", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "dropout_p": 0.5},
                  seed=2, log_scale_shift=-6.0),
    ] + pixelsnail_cases()


def pixelsnail_cases() -> list[ModelCase]:
    """Tiny PixelSNAIL networks (R = 1, F = 8, one or two attention blocks; docs/pixelsnail.md): each
    spec of the family and ``model_spec``, ``h`` in the released one, keys and values pooled by 2 in
    ``h12_pool2_smallkey``, and a sharp one (every log scale moved by -6). The others keep the random
    weights' flat mixtures, whose float64 loss gradient needs the twins' sigmoids to be one formula
    (pitfall M11; docs/pixelsnail.md "Float64 and flat mixtures")."""
    small = {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "dropout_p": 0.5}
    return [
        ModelCase("model-h12_noup_smallkey-R1-F8-M2-a2-h2", {**small, "attn_rep": 2, "h_channels": 2}, seed=3,
                  model="h12_noup_smallkey"),
        ModelCase("model-h8_noup_smallkey-R1-F8-M2-a1-concat_elu", {**small, "attn_rep": 1, "nonlinearity": "concat_elu"},
                  seed=4, model="h8_noup_smallkey"),
        ModelCase("model-h12_pool2_smallkey-R1-F8-M2-a2", {**small, "attn_rep": 2}, seed=5, model="h12_pool2_smallkey"),
        ModelCase("model-model_spec-R1-F8-M2-a1", {**small, "attn_rep": 1, "nonlinearity": "concat_elu"}, seed=6,
                  model="model_spec"),
        ModelCase("model-h12_noup_smallkey-R1-F8-M2-a1-sharp", {**small, "attn_rep": 1}, seed=7, log_scale_shift=-6.0,
                  model="h12_noup_smallkey"),
    ]


def wide_model_case() -> ModelCase:
    """PixelCNN++ at its width (F = 160, M = 10) with one block per stream and resolution, on 8x8."""
    return ModelCase("wide-model-pixelcnn_pp-R1-F160-M10", {"nr_resnet": 1, "nr_filters": 160, "nr_logistic_mix": 10,
                                                              "dropout_p": 0.5}, seed=7)


# -- training: both twins stepping in lockstep ----------------------------------------------------------
@dataclass
class TrainingCase(_CaseFields):
    """A tiny network trained ``steps`` steps as the original trains it (``gated_spec.training``), from
    the same initialised weights, on the same batches (8-bit grid, edges included) and the same
    dropout keep-masks (one per block, per step), so the two twins can be compared step by step.
    With ``init``, the weights are not initialised: step 0 is the data-dependent init on batch
    ``x/0`` with masks ``dropout_mask/0/*``, as train.py runs it before its first step.
    ``resynced`` (made by :func:`parity.harness.resynced`): each step s > 1 starts from the state under
    ``state/<s - 1>/`` (weights, shadows, Adam's slots and ``adam_t``: the reference's float64 state
    after step s - 1, rounded to float32), so a step's comparison shows that step's error alone."""

    kind: ClassVar[str] = "pixelcnn_pp"
    name: str
    config: dict[str, Any]
    batch: int = 2
    height: int = 8
    width: int = 8
    seed: int = 0
    steps: int = 20
    lr: float = DEFAULT_LR
    lr_decay: float = DEFAULT_LR_DECAY
    mom1: float = DEFAULT_MOM1
    mom2: float = DEFAULT_MOM2
    eps: float = DEFAULT_EPS
    ema: str = DEFAULT_EMA_ORDER
    init: bool = False
    resynced: bool = False
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from gated_spec.model import normalize_model_config

        self._settle(normalize_model_config, make_training_arrays)

    def batches(self) -> list[tuple[np.ndarray, np.ndarray | None, list[np.ndarray] | None]]:
        """(images, per-image ``h`` or ``None``, keep-masks or ``None``) of each step, in order; with
        ``init``, the init batch first (step 0)."""
        out = []
        for s in range(0 if self.init else 1, self.steps + 1):
            masks = [self.arrays[k] for k in sorted((k for k in self.arrays if k.startswith(f"dropout_mask/{s}/")),
                                                    key=lambda k: int(k.rsplit("/", 1)[1]))]
            out.append((self.arrays[f"x/{s}"], self.arrays.get(f"h/{s}"), masks or None))
        return out


def make_training_arrays(case: TrainingCase) -> dict[str, np.ndarray]:
    from gated_spec.model import dropout_mask_shapes

    c = case.config
    rng = np.random.default_rng(case.seed)
    arrays = {f"weights/{k}": v for k, v in random_weights(with_kind(case.kind, c), seed=case.seed + 1).items()}
    # The init batch (step 0) is drawn after the steps', so a case's steps are the same with or without it.
    for s in [*range(1, case.steps + 1), *([0] if case.init else [])]:
        x = np.round(rng.uniform(-1, 1, (case.batch, case.height, case.width, 3)) * 127.5) / 127.5
        x.reshape(-1)[s % 7:: 13] = -1.0  # the loss's edge branches
        arrays[f"x/{s}"] = _f32(x)
        if c["dropout_p"] > 0:
            for i, shape in enumerate(dropout_mask_shapes(c, case.batch, case.height, case.width)):
                arrays[f"dropout_mask/{s}/{i}"] = _f32(rng.uniform(size=shape) >= c["dropout_p"])
    if c["h_channels"]:  # a conditional network: per-image h of every batch, drawn last (the rest as without)
        for s in range(0 if case.init else 1, case.steps + 1):
            arrays[f"h/{s}"] = _f32(rng.normal(0.0, 1.0, (case.batch, c["h_channels"])))
    return arrays


def training_cases() -> list[TrainingCase]:
    """A tiny PixelCNN++ with dropout trained 20 steps as the original trains (the Polyak update before
    Adam's), one elu network with the update after it and no first moment (mom1 = 0), and a
    conditional one (per-image ``h`` of 3 channels) trained 10 steps."""
    return [
        TrainingCase("training-pixelcnn_pp-R1-F4-M2", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "dropout_p": 0.5}),
        TrainingCase("training-pixelcnn_pp-R1-F4-M2-elu-post-mom1_0", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2,
                                                                        "nonlinearity": "elu", "dropout_p": 0.5},
                     seed=1, steps=20, mom1=0.0, ema="post"),
        TrainingCase("training-pixelcnn_pp-R1-F4-M2-h3", {"nr_resnet": 1, "nr_filters": 4, "nr_logistic_mix": 2, "h_channels": 3,
                                                          "dropout_p": 0.5}, seed=2, steps=10),
    ]


SUITES = {"default": default_cases, "wide": wide_cases, "layers": layer_cases, "models": model_cases, "training": training_cases}
