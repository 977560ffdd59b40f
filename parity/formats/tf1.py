"""Original TensorFlow 1 checkpoints (``tf.train.Saver``: ``PREFIX.index`` + ``PREFIX.data-*``).

The original trainer saves every variable of the model template (``model/conv2d_0/V``,
``model/dense_0/g``, ``model/conditional_weights_0/hw``, ...), each Polyak shadow as
``<name>/ExponentialMovingAverage``, and its own Adam's state: ``tf.Variable(value, p.name + '_adam_mg')``
passes the name as the ``trainable`` argument, so those slots are saved as ``Variable``,
``Variable_12``, ... (or ``<var>_adam_mg`` / ``<var>_adam_v`` / ``adam_t`` when named properly).

Reading uses TensorFlow's checkpoint reader (``tf.train.load_checkpoint``): no graph, no session.
:func:`map_checkpoint` walks the block's layers in the original's call order with a
:class:`parity.table.TF1Namer` (one counter per layer kind), so a whole-model port can hand it a
namer already advanced past the layers before the block, and read block after block.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from gated_spec.model import IMAGE_CHANNELS
from gated_spec.pixelsnail import SPECS as PIXELSNAIL_SPECS
from gated_spec.training import ADAM_COUNTER, ADAM_SLOTS, slot_name
from parity.atomic import destination
from parity.configs import infer_config, infer_model_config, normalize_config, shadow_decay
from parity.errors import WeightError
from parity.formats.base import Format, Loaded
from parity.kinds import kind_of, table_for
from parity.table import EMA_SUFFIX, TF1Namer, check_tensors, tensor_summary, weight_table

DEFAULT_SCOPE = "model"
# The networks' ul_init_right: a 2x1 conv on concat([x, ones]) (no block has a 2x1 filter); without
# transposed convs, a PixelSNAIL
FIRST_CONV_2X1 = (2, 1, IMAGE_CHANNELS + 1)

# Optimiser state: the original's hand-written Adam (unnamed ``Variable_k``, or ``<var>_adam_mg``,
# ``<var>_adam_v``, ``adam_t``) and TensorFlow's own (``<var>/Adam``, ``<var>/Adam_1``, beta powers).
_SLOT = re.compile(r"(^|/)(Variable(_\d+)?|adam_t|beta[12]_power(_\d+)?|global_step)$|_adam_(mg|v)$|/Adam(_\d+)?$")


def is_optimizer_slot(name: str) -> bool:
    """Whether a checkpoint name belongs to the optimiser rather than to the model."""
    return bool(_SLOT.search(name))


def is_checkpoint(path: str) -> bool:
    """A TF1 checkpoint prefix (``PREFIX.index`` exists) or its ``.index`` file."""
    return path.endswith(".index") or os.path.exists(path + ".index")


class LazyCheckpoint(Mapping[str, np.ndarray]):
    """A TF1 checkpoint's tensors by name, each read from disk only when asked for (then kept):
    mapping one block out of a whole model reads that block's variables, not the model's."""

    def __init__(self, prefix: str) -> None:
        if prefix.endswith(".index"):
            prefix = prefix[: -len(".index")]
        if not os.path.exists(prefix + ".index"):
            raise FileNotFoundError(f"{prefix}: expected a TF1 checkpoint prefix with {prefix}.index next to it; found none")
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise ImportError("reading a TF1 checkpoint needs TensorFlow (pip install -e '.[tf]')") from exc
        self.prefix = prefix
        try:
            self._reader = tf.train.load_checkpoint(prefix)
            self.shapes = {k: tuple(v) for k, v in self._reader.get_variable_to_shape_map().items()}
            self._names = sorted(self.shapes)
        except Exception as exc:  # DataLossError, NotFoundError, ... from a damaged or partial checkpoint
            raise self._error(exc) from None
        self._read: dict[str, np.ndarray] = {}

    def _error(self, exc: Exception) -> ValueError:
        return ValueError(f"{self.prefix}: could not read it as a TF1 checkpoint ({type(exc).__name__}: {exc})")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            if name not in self._names:
                raise KeyError(name)
            try:
                self._read[name] = np.asarray(self._reader.get_tensor(name))
            except Exception as exc:
                raise self._error(exc) from None
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """Every tensor of a TF1 Saver checkpoint by name, read with TensorFlow's checkpoint reader."""
    return dict(LazyCheckpoint(prefix))


class _Scoped(Mapping[str, np.ndarray]):
    """The entries of ``base`` named ``prefix + key``, by key (read from ``base`` only when asked for)."""

    def __init__(self, base: Mapping[str, np.ndarray], prefix: str, keys: list[str]) -> None:
        self._base, self._prefix, self._keys = base, prefix, keys
        self._set = set(keys)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._set:
            raise KeyError(key)
        return self._base[self._prefix + key]

    def __contains__(self, key: object) -> bool:
        return key in self._set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        """A tensor's shape, without reading it where the checkpoint can tell (``LazyCheckpoint.shapes``)."""
        shapes = getattr(self._base, "shapes", None)
        return tuple(shapes[self._prefix + key]) if shapes is not None else tuple(np.shape(self[key]))


@dataclass
class CheckpointMap:
    """The result of mapping a checkpoint onto one block."""

    tensors: dict[str, np.ndarray]  # canonical names (relative to the block), raw and shadows
    config: dict[str, Any]
    skipped_slots: list[str] = field(default_factory=list)
    other_variables: list[str] = field(default_factory=list)  # model variables outside this block

    def summary(self) -> str:
        text = f"{tensor_summary(self.tensors)}; skipped {len(self.skipped_slots)} optimiser slot(s)"
        if self.other_variables:
            text += f" and {len(self.other_variables)} variable(s) outside this block"
        return text


def _split(variables: Mapping[str, np.ndarray], scope: str) -> tuple[Mapping[str, np.ndarray], list[str], list[str]]:
    """(model tensors relative to ``scope``, optimiser slots, names outside the scope); by name
    only: no tensor is read here."""
    prefix = scope.rstrip("/") + "/" if scope else ""
    keys, slots, outside = [], [], []
    for name in variables:
        if is_optimizer_slot(name):
            slots.append(name)
        elif name.startswith(prefix):
            keys.append(name[len(prefix):])
        else:
            outside.append(name)
    return _Scoped(variables, prefix, keys), slots, outside


def _scoped(variables: Mapping[str, np.ndarray], scope: str, what: str) -> tuple[_Scoped, list[str], list[str]]:
    """:func:`_split`, refusing a scope that holds no model variable (naming the top-level scopes)."""
    model, slots, outside = _split(variables, scope)
    if not model:
        roots = sorted({n.split("/")[0] for n in variables if not is_optimizer_slot(n)})
        raise WeightError([f"no variables under scope {scope!r}; the checkpoint's top-level scopes are {roots}"], "checkpoint", what)
    return model, slots, outside


def _row_problems(model: _Scoped, table: list, scope: str) -> list[str]:
    """What does not fit ``table``, in call order: a row missing, of another shape, not float, or not finite."""
    problems = []
    for row in table:
        full = f"{scope}/{row.tf1_name}" if scope else row.tf1_name
        if row.tf1_name not in model:
            problems.append(f"{full}: missing (expected shape {row.shape})")
        elif model.shape(row.tf1_name) != row.shape:
            problems.append(f"{full}: shape {model.shape(row.tf1_name)} in the checkpoint; expected {row.shape}")
        elif model[row.tf1_name].dtype not in (np.float32, np.float64):
            problems.append(f"{full}: dtype {model[row.tf1_name].dtype}; expected float32")
        elif not np.all(np.isfinite(model[row.tf1_name])):
            problems.append(f"{full}: holds NaN or Inf values")
    return problems


def _infer(model: _Scoped, counters: Mapping[str, int], overrides: Mapping[str, Any],
           polyak_decay: float | None) -> dict[str, Any]:
    """The block config from the names and shapes at the namer's position (``--conv`` for a 2x3
    ``conv2d``, ``--nonlinearity`` for elu vs relu, where names cannot tell)."""
    conv_k, dense_k, cond_k = (counters.get(k, 0) for k in ("conv2d", "dense", "conditional_weights"))
    conv = overrides.get("conv")
    first_conv = f"conv2d_{conv_k}/V"
    if conv is None:
        conv = "nin" if first_conv not in model and f"dense_{dense_k}/V" in model else None
    shapes: dict[str, tuple[int, ...]] = {}

    shape = model.shape
    if conv == "nin":
        if f"dense_{dense_k}/V" not in model:
            raise WeightError([f"missing tensor {f'dense_{dense_k}/V'!r} (the nin conv_input)"], "checkpoint")
        shapes["conv_input/V"] = shape(f"dense_{dense_k}/V")
        if f"dense_{dense_k + 2}/V" in model:  # conv_input, nin_skip, conv_output
            shapes["nin_skip/V"] = shape(f"dense_{dense_k + 1}/V")
    else:
        if first_conv not in model:
            found = sorted({n.split("/")[0] for n in model})
            raise WeightError([f"missing tensor {first_conv!r}; the scope holds {found}"], "checkpoint")
        shapes["conv_input/V"] = shape(first_conv)
        if f"dense_{dense_k}/V" in model:
            shapes["nin_skip/V"] = shape(f"dense_{dense_k}/V")
    if f"conditional_weights_{cond_k}/hw" in model:
        shapes["hw"] = shape(f"conditional_weights_{cond_k}/hw")
    over = dict(overrides)
    if conv is not None:
        over["conv"] = conv
    config = infer_config(shapes, over, None)
    decay = shadow_decay(any(k.endswith(EMA_SUFFIX) for k in model), polyak_decay)
    return normalize_config({**config, "polyak_decay": decay})


def map_checkpoint(
    variables: Mapping[str, np.ndarray],
    overrides: Mapping[str, Any] | None = None,
    scope: str = DEFAULT_SCOPE,
    namer: TF1Namer | None = None,
    polyak_decay: float | None = None,
) -> CheckpointMap:
    """Map checkpoint tensors onto one ``GatedResnet``.

    ``namer`` says where the block starts in the model (a fresh one: the model's first layers);
    it is advanced past the block, ready for the next. Without a namer, every model variable in
    ``scope`` must belong to the block; with one, the others are counted and left alone.
    A checkpoint that does not fit the config raises :class:`WeightError` naming the first mismatch
    in call order, then every other problem.
    """
    overrides = dict(overrides or {})
    whole = namer is None
    namer = namer or TF1Namer()
    model, slots, outside = _scoped(variables, scope, "block")
    layers = {k.split("/")[0] for k in model if k.endswith("/V")}
    pixelcnn_pp = any(k.startswith("deconv2d_") for k in layers)  # transposed convs, which no block has
    pixelsnail = any(k.startswith("conv2d_") and model.shape(f"{k}/V")[:3] == FIRST_CONV_2X1 for k in layers)
    if whole and (pixelcnn_pp or pixelsnail):
        # a network (without --model the conv kind or the elu / relu question of a block's inference
        # would be asked of it)
        which = "pixelcnn_pp" if pixelcnn_pp else f"a PixelSNAIL spec, one of {list(PIXELSNAIL_SPECS)}"
        raise ValueError(f"{getattr(variables, 'prefix', 'the checkpoint')}: holds {len(layers)} weight-normalised layers under {scope!r}, a whole network, not one "
                         f"block; convert it with --model {which}, or place one block with --counters")
    config = _infer(model, dict(namer.counters), overrides, polyak_decay)
    has_shadows = any(k.endswith(EMA_SUFFIX) for k in model)
    start = dict(namer.counters)
    table = weight_table(config, shadows=has_shadows, namer=namer)
    if namer.named:
        _check_counters_named(model, table, set(start))
    problems = _row_problems(model, table, scope)
    names = {r.tf1_name for r in table}
    rest = sorted(k for k in model if k not in names)
    if whole and rest:
        problems += [f"{scope}/{k}: in the checkpoint but not part of the block" for k in rest]
    if problems:
        raise WeightError(
            [f"first mismatch: {problems[0]}", *problems[1:],
             f"config tried: {config} (counters at the block's start: {start or 'all 0'}); "
             "--conv / --nonlinearity say what the names cannot"],
            "checkpoint",
        )
    # The canonical file names tensors relative to the block (its first conv is conv2d_0).
    local = weight_table(config, shadows=has_shadows)
    tensors = {mine.tf1_name: np.asarray(model[r.tf1_name]) for mine, r in zip(local, table)}
    other = [f"{scope}/{k}" for k in rest] + outside
    return CheckpointMap(tensors, config, sorted(slots), other)


def _check_counters_named(model: Mapping[str, np.ndarray], table: list, named: set[str]) -> None:
    """With ``--counters``, every layer kind the block uses must be named, unless the checkpoint holds
    no more layers of that kind than the block uses (then the counter can only be where it is):
    otherwise the block's layers of that kind would silently come from another block."""
    unnamed = []
    for kind in dict.fromkeys(r.tf1_name.split("/")[0].rsplit("_", 1)[0] for r in table):
        if kind in named:
            continue
        used = {r.tf1_name.split("/")[0] for r in table if r.tf1_name.split("/")[0].rsplit("_", 1)[0] == kind}
        present = {k.split("/")[0] for k in model if re.fullmatch(rf"{kind}_\d+", k.split("/")[0])}
        if len(present) > len(used):
            unnamed.append(f"{kind} ({len(present)} in the checkpoint, {len(used)} in the block)")
    if unnamed:
        raise ValueError(f"--counters names {sorted(named)} but not {', '.join(unnamed)}: the block's place cannot "
                         f"be told for those kinds; name them too, e.g. {unnamed[0].split(' ')[0]}=N")


def read_tf1(prefix: str, overrides: Mapping[str, Any] | None = None, scope: str = DEFAULT_SCOPE,
             namer: TF1Namer | None = None, polyak_decay: float | None = None) -> CheckpointMap:
    """Read a TF1 checkpoint and map it onto one block (see :func:`map_checkpoint`)."""
    return map_checkpoint(LazyCheckpoint(prefix), overrides, scope, namer, polyak_decay)


def parse_counters(text: str | None) -> TF1Namer | None:
    """``conv2d=4,dense=2`` -> a namer whose counters start there (the block's place in a whole model)."""
    if not text:
        return None
    counters = {}
    for part in text.split(","):
        kind, _, k = part.partition("=")
        kind = kind.strip()
        if kind not in set(TF1Namer.KIND_OF.values()) or not k.strip().isdigit():
            raise ValueError(f"expected counters like conv2d=4,dense=2 (kinds conv2d, dense, deconv2d, "
                             f"conditional_weights); received {part!r}")
        counters[kind] = int(k)
    return TF1Namer(counters, named=True)


def map_model_checkpoint(variables: Mapping[str, np.ndarray], overrides: Mapping[str, Any] | None = None,
                         scope: str = DEFAULT_SCOPE, polyak_decay: float | None = None) -> CheckpointMap:
    """Map a checkpoint onto a whole PixelCNN++ (``parity.table.model_weight_table``): every model
    variable in ``scope`` must be the network's; shadows are taken where present; optimiser slots
    (``Variable_k``, ``*_adam_mg``, ``*_adam_v``, ...) are skipped and counted. The config comes from
    the shapes (``infer_model_config``); ``overrides`` must agree with them."""
    model, slots, outside = _scoped(variables, scope, "model")
    config = infer_model_config({k: model.shape(k) for k in model}, overrides, polyak_decay)
    table = table_for(config, shadows=any(k.endswith(EMA_SUFFIX) for k in model))
    problems = _row_problems(model, table, scope)
    names = {r.tf1_name for r in table}
    problems += [f"{scope}/{k}: in the checkpoint but not part of the network" for k in sorted(k for k in model if k not in names)]
    if problems:
        raise WeightError([f"first mismatch: {problems[0]}", *problems[1:], f"config tried: {config}"], "checkpoint", "model")
    tensors = {row.tf1_name: np.asarray(model[row.tf1_name]) for row in table}
    return CheckpointMap(tensors, config, sorted(slots), outside)


def read_tf1_model(prefix: str, overrides: Mapping[str, Any] | None = None, scope: str = DEFAULT_SCOPE,
                   polyak_decay: float | None = None) -> CheckpointMap:
    """Read a whole-model TF1 checkpoint (see :func:`map_model_checkpoint`)."""
    return map_model_checkpoint(LazyCheckpoint(prefix), overrides, scope, polyak_decay)


def map_adam_slots(variables: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The original trainer's Adam state in a checkpoint, by the original's names, or ``None`` if it
    holds none. ``nn.adam_updates`` creates, in this order, the counter ``t`` and, for each trainable
    parameter in creation order (the weight table's order), its second moment ``mg`` and (with
    ``mom1 > 0``) its first moment ``v``; their names land in ``trainable``, so they are saved as
    ``Variable``, ``Variable_1``, ``Variable_2``, ... Returns ``<name>_adam_mg``, ``<name>_adam_v``
    and ``adam_t`` (shape (1,)), checked against the table's shapes."""
    rows = table_for(config, shadows=False)
    unnamed = sorted((int(k.rsplit("_", 1)[1]) if k != "Variable" else 0, k) for k in variables
                     if re.fullmatch(r"Variable(_\d+)?", k))
    if not unnamed:
        return None
    per_param = {len(rows) + 1: 1, 2 * len(rows) + 1: 2}.get(len(unnamed))
    if per_param is None or [i for i, _ in unnamed] != list(range(len(unnamed))):
        raise WeightError([f"{len(unnamed)} unnamed Variable_k slots; nn.adam_updates makes 1 + {len(rows)} (mom1 = 0) or "
                           f"1 + 2 x {len(rows)} for this network, numbered from Variable"], "checkpoint", "model")
    names = [k for _, k in unnamed]
    out: dict[str, np.ndarray] = {}
    problems = []
    for i, row in enumerate(rows):
        for j, slot in enumerate(ADAM_SLOTS[:per_param]):
            name = names[1 + per_param * i + j]
            value = np.asarray(variables[name])
            if value.shape != row.shape:
                problems.append(f"{name} (the {slot} of {row.tf1_name}): shape {value.shape}; expected {row.shape}")
            out[slot_name(row.tf1_name, slot)] = value
    t = np.asarray(variables["Variable"]).reshape(-1)
    if t.shape != (1,) or not float(t[0]).is_integer() or t[0] < 1:
        problems.append(f"Variable (Adam's counter t): {t.tolist()}; expected one whole number >= 1")
    if problems:
        raise WeightError(problems, "checkpoint", "model")
    out[ADAM_COUNTER] = t.astype(np.float64)
    return out


def write_tf1(prefix: str, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any],
              adam: Mapping[str, np.ndarray] | None = None, scope: str = DEFAULT_SCOPE, dtype: str = "float32") -> None:
    """An original-style TF1 checkpoint (``tf.compat.v1.train.Saver``): every tensor as
    ``<scope>/<name>`` (shadows with their ``/ExponentialMovingAverage``), and with ``adam`` the
    trainer's slots as ``Variable`` (t), ``Variable_1``, ... in nn.adam_updates' creation order, so the
    original graph restores it and goes on. Values in ``dtype`` (the original's float32; ``t`` always
    float32), checked against it first; shadows missing from ``tensors`` are written as copies of the
    raw weights (the original graph always has them). Written under a temporary prefix, then renamed
    into place, the ``.index`` last (an existing prefix's old ``.index`` is removed first, so a crash
    never pairs an old index with new data)."""
    import tempfile

    import tensorflow as tf

    v1 = tf.compat.v1
    destination(prefix + ".index", stream_ok=False)  # a place no write may take is refused before any work
    rows = table_for(config, shadows=False)
    full = table_for(config, shadows=True)
    check_tensors(full, tensors, allow_missing_shadows=True, target_dtype=dtype, where="tensors to write",
                  what=kind_of(config).what)
    values = {r.tf1_name: tensors.get(r.tf1_name, tensors.get(r.tf1_name[: -len(EMA_SUFFIX)])) for r in full}
    order = [(f"{scope}/{k}" if scope else k, np.asarray(v, dtype)) for k, v in values.items()]
    if adam is not None:
        slots = [np.asarray(adam[ADAM_COUNTER], np.float32).reshape(())]
        for row in rows:
            slots += [np.asarray(adam[slot_name(row.tf1_name, s)], dtype) for s in ADAM_SLOTS if slot_name(row.tf1_name, s) in adam]
        order += [("Variable" if i == 0 else f"Variable_{i}", v) for i, v in enumerate(slots)]
    folder = os.path.dirname(os.path.abspath(prefix))
    graph = tf.Graph()
    with graph.as_default(), tempfile.TemporaryDirectory(dir=folder, prefix=".tmp-") as tmp:
        variables = [v1.Variable(np.asarray(value), name=name, use_resource=False) for name, value in order]
        misnamed = [(v.op.name, name) for v, (name, _) in zip(variables, order) if v.op.name != name]
        if misnamed:
            raise ValueError(f"{prefix}: could not name every variable as the original (e.g. {misnamed[0]})")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.variables_initializer(variables))
            v1.train.Saver(variables).save(sess, os.path.join(tmp, "ckpt"), write_meta_graph=False, write_state=False)
        parts = sorted(f for f in os.listdir(tmp) if f.startswith("ckpt.data-"))
        # each file's place as every writer decides it (links followed, devices refused: several files)
        places = {part: destination(prefix + part[len("ckpt"):], stream_ok=False)[0] for part in [*parts, "ckpt.index"]}
        if os.path.exists(places["ckpt.index"]):
            os.remove(places["ckpt.index"])
        for part in parts:
            os.replace(os.path.join(tmp, part), places[part])
        os.replace(os.path.join(tmp, "ckpt.index"), places["ckpt.index"])


def read_tf1_checkpoint(path: str, overrides: Mapping[str, Any] | None = None, polyak_decay: float | None = None,
                        scope: str = DEFAULT_SCOPE, counters: str | None = None) -> Loaded:
    """An original TF1 checkpoint mapped onto one block, or, when ``overrides`` names a network
    (``model``), onto that whole network (:class:`CheckpointMap`)."""
    adam = None
    if kind_of(overrides or {}).network:
        if counters:
            raise ValueError("--counters places one block inside a model; a whole-model conversion (--model) takes none")
        variables = LazyCheckpoint(path)
        mapped = map_model_checkpoint(variables, overrides, scope, polyak_decay)
        try:
            adam = map_adam_slots(variables, mapped.config)
        except WeightError:  # slots not in the original trainer's pattern: skipped and counted, as before
            adam = None
    else:
        mapped = read_tf1(path, overrides, scope=scope, namer=parse_counters(counters), polyak_decay=polyak_decay)
    summary = mapped.summary() + (f"; Adam's state at step {int(adam['adam_t'][0]) - 1}" if adam is not None else "")
    return Loaded(mapped.tensors, mapped.config, True, summary, adam)


def _write_tf1(path: str, loaded: Loaded) -> None:
    write_tf1(path, loaded.tensors, loaded.config, loaded.adam)


FORMAT = Format("tf1", read_tf1_checkpoint, _write_tf1)
