"""The one home of the parity tolerance policy, derived from float64 reference runs and Monte Carlo arithmetic.

For each compared tensor, each backend runs the *same* computation twice, in float32 and in float64,
from the same float32-representable weights and inputs. Then:

* ``floor_ref`` is the reference backend's float32 *spread*: the largest distance from its float64
  result (nearly exact arithmetic) of its own float32 result and of ``MCA_SAMPLES = 3`` more float32
  runs in which every input and weight (dropout keep-masks aside) was moved at random by at most one
  float32 ulp (``Case.perturbed``). This is Monte Carlo arithmetic in the manner of CADNA and
  Verificarlo, applied where float32 rounding enters, at the inputs, rather than in each operation:
  each re-run rounds differently (the perturbed operands change every rounding inside the kernels)
  and moves the result by as much as the computation's conditioning amplifies a one-ulp change. A
  well-conditioned tensor keeps a tight floor; an ill-conditioned one, e.g. a data-dependent init
  that normalises over 2 pixels whose values nearly coincide, gets the wide floor its float32
  result really has. One float32 run alone is one draw of that spread and can be a lucky one: such
  a draw made the verdict depend on the CPU (AVX2 vs AVX-512, a ratio of 1.22 on one and < 1 on the
  other for the same config). Four draws are not a tail estimate, but they remove the luck of a
  single draw; ``K`` below is the margin beyond them. Where the unperturbed float32 run of some
  tensor lies beyond ``K`` times the perturbed runs' spread (:func:`gap_limit`), three draws were
  too few for that tensor's error: the case draws again, one re-run at a time, up to
  ``MCA_GROWTH`` times as many, until no tensor's own run lies beyond; each extra draw counts for
  the tensors still beyond only, so the others keep the spread of their 3 draws. Measured on the training
  suite's elu case (10280 tensors, 24 draws): the unperturbed run sat below the perturbed draws'
  median on average (mean rank 0.27), yet an 8-element step-1 Adam moment erred 183 ulp at most in
  its first 3 draws, 244 in their median and 1132 at most over 24, and its own run 893: one of the
  10280 beyond ``K`` times 3 draws, none beyond ``K`` times 24. The spread is a property of the function and
  the reference's float32 kernels, not of how the backend under test rounds, so the bound does not
  move with the other side's CPU ISA, thread count or library version.
* ``floor_other = max|other32 - other64|`` likewise for the backend under test (one run).
* By the triangle inequality, ``max|ref32 - other32| <= floor_ref + floor_other + max|ref64 - other64|``.
  A translation no noisier than ``(K - 1)`` times the reference, computing the same function, thus
  stays within ``K * floor_ref``. We take ``K = 4``: the translation may round up to 3x worse than the
  reference, never differ by a bug. A floor is never below one unit roundoff at the tensor's scale
  (``eps * max|ref64|``), so a tensor the reference happens to compute exactly still gets a bound.
* ``floor_other`` is a sample of float32 noise too, of the other side's kernels: two correct float32
  kernels of one function can round differently by several times, depending on the CPU and the
  library build (torch's oneDNN convolution on an AVX2 CPU had 6.5x TensorFlow's forward error at
  PixelCNN++ width, while agreeing in float64). So it counts, capped at ``OTHER_UP_TO = 4`` times the
  reference's spread: ``floor = max(floor_ref, min(floor_other, 4 floor_ref), 1 ulp)``. A kernel that
  rounds up to 4x worse than the reference passes with K's margin on top; a loss of precision cannot
  raise the bound past ``K * 4 = 16`` times the reference's spread (TF32 keeps 10 of float32's 23
  mantissa bits, 8192x coarser) and fails, and a wrong function fails in float64.
* ``floor_ref`` is a maximum over the tensor's elements; for a tensor of a few elements it is one
  or two draws of the rounding error and can be lucky. The fuzz suite found such tensors: one-element
  ``g`` gradients (sums with cancellation) that TensorFlow rounded 0.1-0.7 ulp from exact and torch
  5-17 ulp. So for a tensor of fewer than ``FEW = 64`` elements the other backend's own float32 error
  counts up to ``ALLOWANCE_ULPS = 16`` units at the tensor's scale even where that is more than 4x the
  reference's spread: ``floor = max(floor_ref, min(floor_other, max(4 floor_ref, 16 ulp)), 1 ulp)``.
  No precision loss larger than the cap can raise the bound (TF32 is ~4096 ulp, float16 ~8192), and
  a wrong function is caught in float64.
* float64 runs are checked the same way: rounding errors scale with the unit roundoff, so the
  float64 floor is that floor times ``eps64 / eps32 = 2**-29``; bound ``K`` times that. This is
  extrapolated, not measured, and the twins reach float64 results by different algorithms (torch has
  no oneDNN float64 conv and falls back to im2col + GEMM; TensorFlow uses Eigen), so for a tiny tensor
  with cancellation it can fall short: a four-element ``h`` gradient differed by 31 float64 ulps at
  its scale where the extrapolation allowed 19. So for a tensor of fewer than ``FEW`` elements the
  float64 floor is never below ``ALLOWANCE_ULPS`` float64 units at the tensor's scale (a bound of 64
  ulps, ~1.4e-14 relative; function-level bugs are many orders larger); otherwise one unit.
  In practice the twins agree to ~1e-15 relative.
* The float64 extrapolation also assumes that the twins' float64 kernels of one function differ, in
  float64 ulps, no more than the reference's float32 kernel errs in float32 ulps. Two formulas for
  one function break that where the reference's float32 kernel rounds correctly and one float64
  formula does not: TensorFlow's ``e / (1 + e)`` sigmoid and torch's ``1 / (1 + exp(-x))`` near 1,
  amplified ~1e4 times by the loss's ``cdf_delta`` (pitfall M11). So where the conditioning amplifies a
  kernel's ulp, the twin computes TensorFlow's formula (softplus, M9; sigmoid, M11).
* Tensors that must be bit-identical (the EMA shadows: the same float32 ``1 - decay`` and the same
  formula, pitfall 26) get bound 0.

The bound is on the max *absolute* error, relative to the tensor's scale: relative errors of single
elements are reported but not judged, since ``exp(x) - 1`` vs ``expm1`` differ by up to 100 % relative
on tiny values that are equal in absolute terms (pitfalls 16, 33).

NaN and Inf: their positions must agree exactly; the bound applies to the finite entries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np

K = 4.0
MCA_SAMPLES = 3  # perturbed float32 re-runs of the reference per case (Monte Carlo arithmetic)
MCA_GROWTH = 4  # up to this many times MCA_SAMPLES where the reference's own float32 run says they were too few
MCA = "mca"  # key of a run's per-tensor spread (float64 scalars) next to "float32" and "float64"
OTHER_UP_TO = 4.0  # the other backend's own float32 floor counts up to this many times the reference's spread
FEW = 64  # below this many elements a tensor's own floor is too few samples to trust alone
ALLOWANCE_ULPS = 16.0  # for such tensors: cap on the other backend's float32 floor, least float64 floor (ulps at scale)
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def gap_limit(spread: float, scale: float) -> float:
    """How far the reference's unperturbed float32 run may lie from its float64 run: ``K`` times its
    Monte Carlo spread (at least one ulp at ``scale``). That run is one more draw of the spread, so a
    gap beyond this says the spread's draws were too few (:func:`parity.harness.run_backend_here`
    draws more) or, in a record, that its float32 and float64 results do not belong together."""
    return K * max(spread, EPS["float32"] * scale)


def policy() -> str:
    """The bound in one sentence, written from the constants above (the report's footer)."""
    return (f"Bound: K={K:g} x the float32 noise floor: the reference's spread (its float32 run and {MCA_SAMPLES} runs "
            f"on inputs and weights moved by up to 1 ulp, each against its float64 run; up to {MCA_GROWTH * MCA_SAMPLES} "
            f"runs while its own float32 run lies beyond K x their spread), or the other backend's own "
            f"float32 error where larger, up to {OTHER_UP_TO:g}x that spread (under {FEW} elements, up to "
            f"{ALLOWANCE_ULPS:g} ulps); float64: that x 2^-29 (at least {ALLOWANCE_ULPS:g} float64 ulps under {FEW} "
            f"elements); EMA shadows: exact. See parity/tolerance.py.")


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
    identical: float = 0.0  # fraction of elements bit-identical to the reference's (NaN equal to NaN)
    over: int = 0  # elements whose error exceeds the bound
    worst_index: tuple[int, ...] = ()  # where the largest error sits (as torch.testing.assert_close reports)

    @property
    def ratio(self) -> float:
        """Measured error over bound (0 when both are 0); a pass is ratio <= 1."""
        if self.bound == 0:
            return 0.0 if self.max_abs == 0 else float("inf")
        return self.max_abs / self.bound

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["worst_index"] = list(self.worst_index)
        d["ratio"] = self.ratio
        return d


CHUNK = 1 << 20  # elements per chunk: at most a few chunk-sized float64 temporaries exist at once


def _flat_chunks(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching 1-D slices of the arrays, CHUNK elements at a time (views, no copies)."""
    flat = [np.asarray(a).reshape(-1) for a in arrays]
    for i in range(0, flat[0].size, CHUNK):
        yield tuple(f[i : i + CHUNK] for f in flat)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over entries finite in both, in float64, chunk by chunk (no full float64 copies)."""
    worst = 0.0
    for ca, cb in _flat_chunks(a, b):
        with np.errstate(invalid="ignore"):  # inf - inf: not finite, dropped below
            d = np.abs(ca.astype(np.float64) - cb.astype(np.float64))
        d = d[np.isfinite(d)]
        if d.size:
            worst = max(worst, float(d.max()))
    return worst


def finite_max(a: np.ndarray) -> float:
    worst = 0.0
    for (c,) in _flat_chunks(a):
        f = np.abs(c[np.isfinite(c)])
        if f.size:
            worst = max(worst, float(f.max()))
    return worst


def _monotonic(c: np.ndarray) -> np.ndarray:
    """Sign-magnitude float bits mapped onto a monotonic int64 line (adjacent floats differ by 1)."""
    itype = np.int32 if c.dtype == np.float32 else np.int64
    bits = c.view(itype).astype(np.int64)
    return np.where(bits < 0, np.int64(np.iinfo(itype).min) - bits, bits)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Max distance in units in the last place between arrays (in ``a``'s dtype; finite entries)."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    worst = 0
    for ca, cb in _flat_chunks(a, b):
        cb = cb.astype(a.dtype, copy=False)
        ok = np.isfinite(ca) & np.isfinite(cb)
        if ok.any():
            worst = max(worst, int(np.abs(_monotonic(ca[ok]) - _monotonic(cb[ok])).max()))
    return worst


@dataclass
class _Stats:
    max_abs: float = 0.0
    max_rel: float = 0.0
    ulp: int = 0
    same_nonfinite: bool = True  # NaN/Inf at the same positions with the same values
    bad_r: int = 0  # non-finite entries in the reference
    bad_o: int = 0  # and in the other
    identical: int = 0  # entries with the same bits (NaN equal to NaN)
    over: int = 0  # finite entries with an error above the bound
    worst: int = -1  # flat index of the largest error


def _stats(r: np.ndarray, o: np.ndarray, bound: float) -> _Stats:
    """Every statistic of a comparison in one chunked pass.

    Non-finite entries must sit at the same positions with the same values (NaN equals NaN, +Inf
    only +Inf); the numeric statistics cover the entries finite in both.
    """
    st = _Stats()
    start = 0
    for cr, co in _flat_chunks(r, o):
        fr, fo = np.isfinite(cr), np.isfinite(co)
        st.bad_r += int(cr.size - fr.sum())
        st.bad_o += int(co.size - fo.sum())
        if not (np.array_equal(fr, fo) and np.array_equal(cr[~fr], co[~fo], equal_nan=True)):
            st.same_nonfinite = False
        co_same = co.astype(cr.dtype, copy=False)
        st.identical += int(np.sum((cr == co_same) | (np.isnan(cr) & np.isnan(co_same))))
        ok = fr & fo
        if ok.any():
            r64, o64 = cr[ok].astype(np.float64), co[ok].astype(np.float64)
            d = np.abs(o64 - r64)
            st.over += int(np.sum(d > bound))
            i = int(d.argmax())
            if d[i] > st.max_abs or st.worst < 0:
                st.max_abs, st.worst = float(d[i]), start + int(np.flatnonzero(ok)[i])
            nz = r64 != 0
            if nz.any():
                st.max_rel = max(st.max_rel, float((d[nz] / np.abs(r64[nz])).max()))
            del r64, o64, d
            st.ulp = max(st.ulp, ulp_distance(co[ok], cr[ok]))
        start += cr.size
    return st


def compare(
    case: str,
    tensor: str,
    dtype: str,
    ref: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    exact: bool = False,
) -> Comparison:
    """Compare ``other[dtype]`` with ``ref[dtype]`` under the bound derived from both float64 runs.

    ``ref`` and ``other`` map ``'float32'`` and ``'float64'`` to the tensor from each run; ``ref[MCA]``,
    where present, is the reference's float32 spread over its perturbed re-runs (a scalar).
    """
    r, o = ref[dtype], other[dtype]
    if r.shape != o.shape:
        return Comparison(case, tensor, tuple(r.shape), dtype, float("inf"), float("inf"), 0, 0.0, 0.0, 0.0,
                          "shape", False, f"shape {tuple(o.shape)} != reference {tuple(r.shape)}", 0.0)
    r64 = ref["float64"]
    floor_ref = max(max_abs_diff(ref["float32"], r64), float(np.max(ref.get(MCA, 0.0))))
    floor_other = max_abs_diff(other["float32"], other["float64"])
    scale = finite_max(r64)
    few = r.size < FEW
    unit32 = EPS["float32"] * scale
    cap = max(OTHER_UP_TO * floor_ref, ALLOWANCE_ULPS * unit32 if few else 0.0)
    pooled = min(floor_other, cap)
    floor = max(floor_ref, pooled, unit32)
    what = ("reference float32 spread" if floor == floor_ref else
            f"other's float32 floor (at most {OTHER_UP_TO:g}x the reference's spread"
            + (f" or {ALLOWANCE_ULPS:g} ulp" if few else "") + ")" if floor == pooled else "1 ulp at scale")
    if exact:
        bound, source = 0.0, "exact: same float32 decay and formula (pitfall 26)"
    elif dtype == "float32":
        bound, source = K * floor, f"K={K:g} x {what}"
    else:
        floor64 = floor * (EPS["float64"] / EPS["float32"])
        least64 = (ALLOWANCE_ULPS if few else 1.0) * EPS["float64"] * scale
        bound = K * max(floor64, least64)
        source = (f"K={K:g} x {what} x 2^-29" if floor64 >= least64 else
                  f"K={K:g} x {ALLOWANCE_ULPS if few else 1.0:g} float64 ulp at scale")
    st = _stats(r, o, bound)
    note = "" if st.same_nonfinite else f"NaN/Inf positions differ ({st.bad_r} in reference, {st.bad_o} here)"
    if st.same_nonfinite and st.bad_r:
        note = f"{st.bad_r} NaN/Inf entries, same positions"
    passed = st.same_nonfinite and st.max_abs <= bound
    worst = tuple(int(i) for i in np.unravel_index(st.worst, r.shape)) if st.worst >= 0 and r.size else ()
    return Comparison(case, tensor, tuple(r.shape), dtype, st.max_abs, st.max_rel, st.ulp, bound,
                      floor_ref, floor_other, source, passed, note, st.identical / max(r.size, 1), st.over, worst)
