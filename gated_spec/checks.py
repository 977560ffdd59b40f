"""Argument and input checks with one wording for both twins (framework-free: shapes are read from ``.shape``).

Each message says what was expected, then what came, and names the layout, so that an NHWC
tensor handed to the NCHW translation (or the reverse) is recognisable from the message alone.
"""

from __future__ import annotations

from typing import Any, Sequence

AXES = {"NHWC": "(B, H, W, C)", "NCHW": "(B, C, H, W)"}


def _shape(x: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in x.shape)


def check_positive(name: str, value: int) -> None:
    """Raise unless ``value`` is a strictly positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected a strictly positive integer. Received: {name}={value!r}")


def check_rank(owner: str, name: str, x: Any, layout: str, rank: int = 4) -> None:
    """Raise unless ``x`` has rank ``rank`` (4: ``layout``; 2: (B, C))."""
    shape = _shape(x)
    if len(shape) != rank:
        expected = f"{layout} {AXES[layout]}" if rank == 4 else "(B, C)"
        raise ValueError(f"{owner}: expected `{name}` of rank {rank}, {expected}; received shape {shape}")


def check_channels(owner: str, name: str, x: Any, channels: int, axis: int, layout: str) -> None:
    """Raise unless ``x`` has ``channels`` entries on ``axis``."""
    shape = _shape(x)
    if shape[axis] is not None and shape[axis] != channels:
        where = f"{layout} {AXES[layout]}" if len(shape) == 4 else "(B, C)"
        raise ValueError(
            f"{owner}: expected `{name}` with {channels} channels on axis {axis % len(shape)}, {where}; "
            f"received shape {shape}"
        )


def check_dtype(owner: str, name: str, got: str, expected: str) -> None:
    """Raise unless the dtype names agree (no silent casts: parity depends on them)."""
    if got != expected:
        raise ValueError(f"{owner}: expected `{name}` of dtype {expected}; received dtype {got}")


def check_same_dims(
    owner: str, name: str, x: Any, ref: Any, axes: Sequence[int], ref_name: str, labels: Sequence[str]
) -> None:
    """Raise unless ``x`` matches ``ref`` on ``axes`` (e.g. the batch and spatial axes of ``a`` and ``x``)."""
    xs, rs = _shape(x), _shape(ref)
    for ax in axes:
        if xs[ax] is not None and rs[ax] is not None and xs[ax] != rs[ax]:
            want = ", ".join(f"{lab}={rs[i]}" for lab, i in zip(labels, axes))
            raise ValueError(
                f"{owner}: expected `{name}` with the {'/'.join(labels)} of `{ref_name}` ({want}); "
                f"received shape {xs}"
            )


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """A filter size or stride as ``(rows, cols)`` of strictly positive ints (an int means both)."""
    both = (value, value) if isinstance(value, int) else tuple(value)
    if len(both) != 2:
        raise ValueError(f"Expected {name} to be an int or a pair of ints. Received: {name}={value!r}")
    for v in both:
        check_positive(name, v)
    return both  # type: ignore[return-value]


def check_pad(pad: str) -> str:
    """TensorFlow's padding names: ``'SAME'`` or ``'VALID'``."""
    if pad not in ("SAME", "VALID"):
        raise ValueError(f"Expected pad to be 'SAME' or 'VALID'. Received: pad={pad!r}")
    return pad


def check_choice(name: str, value: object, choices: Sequence[object], allow_none: bool = False) -> None:
    """Raise unless ``value`` is one of ``choices`` (or ``None`` where allowed)."""
    if value is None and allow_none:
        return
    if value not in choices:
        extra = " or None" if allow_none else ""
        raise ValueError(f"Expected {name} to be one of {sorted(choices)}{extra}. Received: {name}={value!r}")


def check_given(owner: str, name: str, value: object, built_with: str, built_value: object) -> None:
    """Raise if a block built for an input (``a_channels``, ``h_channels``) is called without it, or the reverse."""
    if value is None and built_value is not None:
        raise ValueError(f"{owner}: expected `{name}` (this block was built with {built_with}={built_value!r}); received none")
    if value is not None and built_value is None:
        raise ValueError(f"{owner}: received `{name}`, but this block was built with {built_with}=None")


def check_batch(owner: str, x: Any) -> None:
    """Raise unless the batch holds at least one image (moments over an empty batch are NaN)."""
    batch = _shape(x)[0]
    if batch is not None and batch < 1:
        raise ValueError(f"{owner}: expected an init batch of at least one image; received shape {_shape(x)}")


def check_mask_dtype(owner: str, got: str, expected: str) -> None:
    """A dropout keep-mask is bool or the block's dtype (0 or 1)."""
    if got not in ("bool", expected):
        raise ValueError(f"{owner}: expected `dropout_mask` of dtype bool or {expected}; received dtype {got}")


UNINITIALIZED_WARNING = ("{owner}: called before initialize(): its g and b are placeholders (1 and 0), not the "
                         "data-dependent init; run initialize() on a batch first, or load initialised weights")


def already_initialized(owner: str) -> ValueError:
    """The error for a second data-dependent initialisation (it runs once, pitfall 23)."""
    return ValueError(
        f"{owner}: the data-dependent initialisation has already run; it runs once. "
        "Build a new layer (or load uninitialised weights) to run it again."
    )
