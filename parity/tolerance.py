"""The one home of the parity tolerance policy, derived from float64 reference runs.

For each compared tensor, each backend runs the *same* computation twice, in float32 and in float64,
from the same float32-representable weights and inputs. Then:

* ``floor_ref = max|ref32 - ref64|`` is the reference backend's float32 noise floor: how far its own
  float32 result is from (nearly) exact arithmetic. ``floor_other`` likewise for the backend under test.
* By the triangle inequality, ``max|ref32 - other32| <= floor_ref + floor_other + max|ref64 - other64|``.
  A translation no noisier than ``(K - 1)`` times the reference, computing the same function, thus
  stays within ``K * floor_ref``. We take ``K = 4``: the translation may round up to 3x worse than the
  reference, never differ by a bug. A floor is never taken below one unit roundoff at the tensor's
  scale (``eps * max|ref64|``), so a tensor the reference happens to compute exactly still gets a
  bound one rounding wide (times K).
* float64 runs are checked the same way: rounding errors scale with the unit roundoff, so the
  float64 floor is the float32 floor times ``eps64 / eps32 = 2**-29``; bound ``K`` times that.
  In practice the twins agree to about 1e-15 relative in float64.
* Tensors that must be bit-identical (the EMA shadows: the same float32 ``1 - decay`` and the same
  formula, PITFALLS 26) get bound 0.

The bound is on the max *absolute* error, relative to the tensor's scale: relative errors of single
elements are reported but not judged, since ``exp(x) - 1`` vs ``expm1`` differ by up to 100 % relative
on tiny values that are equal in absolute terms (PITFALLS 16, 33).

NaN and Inf: their positions must agree exactly; the bound applies to the finite entries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

K = 4.0
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass
class Comparison:
    """One tensor compared across backends: the measured errors next to the bound and its source."""

    case: str
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    max_rel: float
    ulp: int
    bound: float
    floor_ref: float
    floor_other: float
    source: str
    passed: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        """Measured error over bound (0 when both are 0); a pass is ratio <= 1."""
        if self.bound == 0:
            return 0.0 if self.max_abs == 0 else float("inf")
        return self.max_abs / self.bound

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["ratio"] = self.ratio
        return d


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over finite entries, computed in float64 in chunks (no full float64 copies)."""
    a = a.reshape(-1)
    b = b.reshape(-1)
    worst = 0.0
    step = 1 << 20
    for i in range(0, a.size, step):
        d = np.abs(a[i : i + step].astype(np.float64) - b[i : i + step].astype(np.float64))
        d = d[np.isfinite(d)]
        if d.size:
            worst = max(worst, float(d.max()))
    return worst


def _finite_max(a: np.ndarray) -> float:
    f = np.abs(a[np.isfinite(a)]) if a.size else a
    return float(f.max()) if f.size else 0.0


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Max distance in units in the last place between same-dtype arrays (finite entries)."""
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        b = b.astype(a.dtype)
    itype = np.int32 if a.dtype == np.float32 else np.int64
    ai, bi = a.reshape(-1).view(itype).astype(np.int64), b.reshape(-1).view(itype).astype(np.int64)
    # Map the sign-magnitude floats onto a monotonic integer line.
    top = np.int64(np.iinfo(itype).min)
    ai = np.where(ai < 0, top - ai, ai)
    bi = np.where(bi < 0, top - bi, bi)
    finite = np.isfinite(a.reshape(-1)) & np.isfinite(b.reshape(-1))
    if not finite.any():
        return 0
    return int(np.abs(ai[finite] - bi[finite]).max())


def _max_rel(a: np.ndarray, ref: np.ndarray) -> float:
    a64, r64 = a.astype(np.float64).reshape(-1), ref.astype(np.float64).reshape(-1)
    ok = np.isfinite(a64) & np.isfinite(r64) & (r64 != 0)
    if not ok.any():
        return 0.0
    return float((np.abs(a64[ok] - r64[ok]) / np.abs(r64[ok])).max())


def compare(
    case: str,
    tensor: str,
    dtype: str,
    ref: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    exact: bool = False,
) -> Comparison:
    """Compare ``other[dtype]`` with ``ref[dtype]`` under the bound derived from both float64 runs.

    ``ref`` and ``other`` map ``'float32'`` and ``'float64'`` to the tensor from each run.
    """
    r, o = ref[dtype], other[dtype]
    if r.shape != o.shape:
        return Comparison(case, tensor, tuple(r.shape), dtype, float("inf"), float("inf"), 0, 0.0, 0.0, 0.0,
                          "shape", False, f"shape {tuple(o.shape)} != reference {tuple(r.shape)}")
    r64 = ref["float64"]
    floor_ref = _max_abs_diff(ref["float32"], r64)
    floor_other = _max_abs_diff(other["float32"], other["float64"])
    scale = _finite_max(r64)
    if exact:
        bound, source = 0.0, "exact: same float32 decay and formula (PITFALLS 26)"
    elif dtype == "float32":
        unit = EPS["float32"] * scale
        bound = K * max(floor_ref, unit)
        source = f"K={K:g} x reference float32 floor" if floor_ref >= unit else f"K={K:g} x 1 ulp at scale"
    else:
        shrink = EPS["float64"] / EPS["float32"]
        unit = EPS["float64"] * scale
        bound = K * max(floor_ref * shrink, unit)
        source = f"K={K:g} x reference float32 floor x 2^-29" if floor_ref * shrink >= unit else f"K={K:g} x 1 ulp at scale"
    nonfinite_r, nonfinite_o = ~np.isfinite(r), ~np.isfinite(o)
    note = ""
    same_nonfinite = np.array_equal(nonfinite_r, nonfinite_o) and np.array_equal(r[nonfinite_r], o[nonfinite_o])
    if not same_nonfinite:
        note = f"NaN/Inf positions differ ({int(nonfinite_r.sum())} in reference, {int(nonfinite_o.sum())} here)"
    max_abs = _max_abs_diff(r, o)
    passed = same_nonfinite and max_abs <= bound
    return Comparison(case, tensor, tuple(r.shape), dtype, max_abs, _max_rel(o, r), ulp_distance(o, r), bound,
                      floor_ref, floor_other, source, passed, note)
