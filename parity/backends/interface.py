"""The interface both backends implement (:class:`Backend`), typed, for the protocol, the harness, the
runner, the formats, the CLI and the tests.

A backend is a module (``parity.backends.tf_backend``, ``parity.backends.torch_backend``) that drives
one twin. Arrays crossing the interface are NumPy, NHWC (the original layout); weights carry their
TF1 names and the TF layout (:mod:`parity.table`). A *net* is a twin's block or network, of the kind
its config names (:mod:`parity.kinds`): the functions without a prefix take either; ``block_*`` take a
block, ``model_*`` a network (or its results), ``layer_*`` one weight-normalised layer
(``parity.case.LayerCase``).

Which computations a case compares, in which order, is :mod:`parity.protocol`'s; the backends only
supply the steps. ``tests/parity/test_parity.py`` checks that both modules define every member with the
signature written here.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]


class Backend(Protocol):
    NAME: str  # "tf" or "torch"
    IMPL: ModuleType  # the twin (tf_impl, torch_impl): its reset_averages / update_averages run the Polyak schedule

    # -- settings ---------------------------------------------------------------------------------
    def parity_mode(self, device: str, tf32: bool = False) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """TF32 off (unless ``tf32``) and the framework's deterministic settings; yields them for the
        report; a device the framework cannot see is a ``ValueError`` here."""

    def describe(self, device: str) -> str:
        """``"<framework> <version> on <device>"`` for the report."""

    def on_device(self, device: str) -> contextlib.AbstractContextManager[Any]:
        """The context that places new tensors and nets on ``device``."""

    # -- the NumPy <-> framework adapter ------------------------------------------------------------
    def to_tensor(self, a: np.ndarray | None, dtype: str, device: str = "cpu", grad: bool = False) -> Any:
        """An NHWC array as the framework's tensor in its own layout (NCHW for torch), ``None`` stays.
        TensorFlow places by :meth:`on_device` and records gradients on its tape: it ignores
        ``device`` and ``grad``."""

    def to_numpy(self, t: Any) -> np.ndarray:
        """A framework tensor as NumPy, 4-D ones in NHWC."""

    def inputs(self, arrays: Arrays, names: Sequence[str], dtype: str, device: str, grad: bool = False) -> dict[str, Any]:
        """``arrays[name]`` for each of ``names`` as tensors (``None`` where absent); ``grad``: recorded for
        gradients (torch; TensorFlow's tape watches what it needs)."""

    # -- blocks and networks, any kind ------------------------------------------------------------
    def build(self, config: Mapping[str, Any], dtype: str = "float32", device: str = "cpu") -> Any:
        """A fresh net of the config's kind (block without a ``model`` key), built, uninitialised."""

    def config_of(self, net: Any) -> dict[str, Any]:
        """The net's config, of its kind (with ``model`` for a network)."""

    def export_weights(self, net: Any) -> dict[str, np.ndarray]:
        """Every tensor under its TF1 name, TF layout (shadows included where the net has them)."""

    def import_weights(self, net: Any, tensors: Arrays, initialized: bool = True) -> None:
        """Load canonical tensors, all or nothing; missing shadows restart as copies of the raw weights."""

    def set_live(self, net: Any, tensors: Arrays) -> None:
        """Assign the raw weights; shadows and flags untouched."""

    def apply(self, net: Any, inputs: Arrays, use_ema: bool = False, init: bool = False) -> dict[str, np.ndarray]:
        """The forward (inference) or the data-dependent init on NHWC inputs: ``out``, and for a
        network its summed ``loss`` (float64 scalar)."""

    def sample(self, net: Any, noise: Arrays, h: np.ndarray | None = None, use_ema: bool = False,
               progress: bool = False, naive: bool = False) -> np.ndarray:
        """Images ``[B, H, W, 3]`` a network draws with the given ``u_mix`` and ``u_value``: by its cached
        sampler where it has one, by the naive sampler (the whole network at every step) with ``naive``."""

    # -- a block's parity steps -------------------------------------------------------------------
    def block_stages_and_gradients(self, block: Any, given: Mapping[str, Any], cotangent: np.ndarray,
                             rows: list) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The forward stages, and the gradients of ``sum(out * cotangent)`` w.r.t. the inputs and ``rows``' weights."""

    def block_forward(self, block: Any, given: Mapping[str, Any], use_ema: bool = False,
                dropout_mask: np.ndarray | None = None) -> np.ndarray:
        """Inference, or with ``dropout_mask`` a training-mode forward on that keep-mask."""

    def block_initialize(self, block: Any, given: Mapping[str, Any], dropout_mask: np.ndarray | None) -> np.ndarray:
        """The block's data-dependent init pass on ``given``; its output."""

    # -- a network's parity steps -----------------------------------------------------------------
    def model_loss_and_gradients(self, model: Any, given: Mapping[str, Any],
                                 rows: list) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The network output, the summed loss, and its gradients w.r.t. ``rows``' weights."""

    def model_bits_per_dim(self, loss: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        """The twin's bits per dimension of a summed loss over images of NHWC shape ``x_shape``."""

    def model_forward(self, model: Any, given: Mapping[str, Any], use_ema: bool = False, masks: Any = None) -> np.ndarray:
        """The network's forward at test time, or on the given dropout keep-masks (one per block, call order)."""

    def model_initialize(self, model: Any, given: Mapping[str, Any], masks: Any = None) -> np.ndarray:
        """The network's data-dependent init pass (with the keep-masks where given); its output."""

    # -- training a network (the original's Adam, schedule and Polyak order) ----------------------------
    def model_optimizer(self, model: Any, lr: float, lr_decay: float, mom1: float, mom2: float, eps: float) -> Any:
        """The twin's ``OriginalAdam`` over the network's weights with train.py's schedule (an opaque
        handle: torch's is the optimiser and its ``LambdaLR``, Keras' the optimiser holding its schedule)."""

    def model_train_step(self, model: Any, optimizer: Any, x: np.ndarray, h: np.ndarray | None, masks: Any, ema: str) -> float:
        """One step (loss, gradients, Adam, Polyak in the order ``ema``) on NHWC ``x`` and the given
        keep-masks (one per block, call order); the step's summed loss, before the update."""

    def model_optimizer_state(self, model: Any, optimizer: Any) -> dict[str, np.ndarray]:
        """Adam's state under the original's names: ``<name>_adam_mg``, ``<name>_adam_v`` (TF layout), ``adam_t``."""

    def model_set_optimizer_state(self, model: Any, optimizer: Any, tensors: Arrays) -> None:
        """Adam's state and the schedule's position from :meth:`model_optimizer_state`'s tensors."""

    # -- one weight-normalised layer --------------------------------------------------------------
    def build_layer(self, case: Any, dtype: str, device: str, weights: Arrays, initialized: bool) -> Any:
        """The case's layer holding ``weights`` (``V``, and ``g``, ``b`` where given)."""

    def layer_forward_and_gradients(self, layer: Any, x: np.ndarray, cotangent_for: Callable[[tuple[int, ...]], np.ndarray],
                                    rows: list) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The layer's output and the gradients of ``sum(y * cotangent)`` w.r.t. ``x``, ``V``, ``g``, ``b``."""

    def layer_initialize(self, layer: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(g, b, output) of the layer's init pass on ``x``."""


def members() -> dict[str, Any]:
    """The interface's members by name: the attributes and the methods (their signatures in ``Backend``)."""
    names = [n for n in vars(Backend) if not n.startswith("_")] + list(Backend.__annotations__)
    return {n: getattr(Backend, n, None) for n in dict.fromkeys(names)}


