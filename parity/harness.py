"""The parity harness: run both backends on the same case, or one against a recorded file, and compare.

Every tensor of a case (forward stages, gradients, init, EMA, dropout) is computed by each side in
float32 and float64; :mod:`parity.tolerance` turns those four runs into a bound per tensor. A case's
report names the first tensor, in computation order, that fails: the stage where a bug shows first.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from parity import isolation, protocol
from parity.atomic import atomic_path
from parity.backends import get_backend
from parity.case import Case, LayerCase, ModelCase, TrainingCase, default_cases, under_prefix
from parity.protocol import CACHED_SAMPLE_TENSOR, SAMPLE_TENSOR
from parity.tolerance import EPS, MCA, MCA_SAMPLES, K, Comparison, compare, finite_max, max_abs_diff

DTYPES = ("float32", "float64")
RECORD_FORMAT = "gated-resnet-parity-record/2"  # /2: the reference's Monte Carlo spread is recorded


def is_exact(tensor: str) -> bool:
    """Tensors expected bit-identical: the EMA shadows (not the EMA forward)."""
    return tensor.startswith("ema/") and tensor != "ema/out"


@dataclass
class CaseReport:
    case: str
    comparisons: list[Comparison]
    peak_compare_mib: float = 0.0  # peak extra memory of the comparisons (tracemalloc)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    @property
    def first_failure(self) -> Comparison | None:
        return next((c for c in self.comparisons if not c.passed), None)


@dataclass
class Report:
    reference: str
    other: str
    cases: list[CaseReport] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def peak_compare_mib(self) -> float:
        """The largest extra memory any case's comparisons needed (chunked: a few MiB whatever the size)."""
        return max((c.peak_compare_mib for c in self.cases), default=0.0)  # NaN where not measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "other": self.other,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "peak_compare_mib": round(self.peak_compare_mib, 3),
            "settings": self.settings,
            "cases": [
                {
                    "case": c.case,
                    "passed": c.passed,
                    "first_failure": None if c.first_failure is None else c.first_failure.tensor,
                    "peak_compare_mib": round(c.peak_compare_mib, 3),
                    "tensors": [x.to_dict() for x in c.comparisons],
                }
                for c in self.cases
            ],
        }


Results = dict[str, dict[str, np.ndarray]]  # {"float32" | "float64" | MCA: {tensor: array}}


def run_backend(backend: str, case: Case | LayerCase, device: str = "cpu", tf32: bool = False,
                mca_samples: int = 0) -> Results:
    """``{dtype: {tensor: array}}`` for one backend and case, in parity mode (``tf32`` turns TF32 on),
    computed in the backend's worker process (:mod:`parity.isolation`). With ``mca_samples``, also
    ``results[MCA]``: each tensor's float32 spread over that many perturbed re-runs (see
    :mod:`parity.tolerance`), as a float64 scalar."""
    return isolation.call(backend, "parity.harness:run_backend_here", backend, case, device, tf32, mca_samples)


def run_backend_here(backend: str, case: Case | LayerCase, device: str = "cpu", tf32: bool = False,
                     mca_samples: int = 0) -> Results:
    """:func:`run_backend` in this process (what the worker runs)."""
    module = get_backend(backend)
    # The reference's runs (those with a Monte Carlo spread) draw with the naive sampler only: the backend
    # under test's cached draw is held to the reference's naive one (_compare_all).
    cached_draw = not mca_samples
    with module.parity_mode(device, tf32=tf32):
        results = {dt: protocol.run(module, case, dt, device, cached_draw) for dt in DTYPES}
        if mca_samples:
            exact = results["float64"]
            spread = dict.fromkeys(exact, 0.0)
            for sample in range(mca_samples):
                for k, v in protocol.run(module, case.perturbed(sample), "float32", device, cached_draw).items():
                    if k in spread and v.shape == exact[k].shape:
                        spread[k] = max(spread[k], max_abs_diff(v, exact[k]))
            results[MCA] = {k: np.float64(v) for k, v in spread.items()}
    return results


def compare_runs(
    case_name: str,
    ref: dict[str, dict[str, np.ndarray]],
    other: dict[str, dict[str, np.ndarray]],
    dtypes: Iterable[str] = DTYPES,
) -> CaseReport:
    """Compare every tensor of the reference runs with the other side's, in the reference's order."""
    with peak_memory() as peak:
        comparisons = _compare_all(case_name, ref, other, dtypes)
    return CaseReport(case_name, comparisons, peak[0])


@contextlib.contextmanager
def peak_memory() -> Iterator[list[float]]:
    """Yields a one-element list that holds, on exit, the peak extra MiB allocated inside (tracemalloc
    sees NumPy's buffers). Where the caller traces already, its peak is left alone and nothing is
    measured (NaN): measuring would mean resetting it."""
    out = [float("nan")]
    if tracemalloc.is_tracing():
        yield out
        return
    tracemalloc.start()
    try:
        yield out
    finally:
        out[0] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()


def _compare_all(case_name: str, ref: dict[str, dict[str, np.ndarray]], other: dict[str, dict[str, np.ndarray]],
                 dtypes: Iterable[str]) -> list[Comparison]:
    comparisons = []
    tensors = list(ref["float32"])
    if CACHED_SAMPLE_TENSOR in other["float32"] and CACHED_SAMPLE_TENSOR not in tensors and SAMPLE_TENSOR in tensors:
        tensors.insert(tensors.index(SAMPLE_TENSOR) + 1, CACHED_SAMPLE_TENSOR)  # the reference draws naively only
    for dtype in dtypes:
        for tensor in tensors:
            if tensor not in other["float32"]:
                comparisons.append(Comparison(case_name, tensor, tuple(ref["float32"][tensor].shape), dtype,
                                              float("inf"), float("inf"), 0, 0.0, 0.0, 0.0, "missing", False,
                                              "not produced by the backend under test"))
                continue
            # the cached sampler's draw is held to the reference's naive draw (the naive sampler is the reference)
            source = SAMPLE_TENSOR if tensor == CACHED_SAMPLE_TENSOR else tensor
            pair_r = {d: ref[d][source] for d in (*DTYPES, MCA) if d in ref}
            pair_o = {d: other[d][tensor] for d in DTYPES}
            c = compare(case_name, tensor, dtype, pair_r, pair_o, exact=is_exact(tensor))
            if tensor in (SAMPLE_TENSOR, CACHED_SAMPLE_TENSOR):
                c.note = (c.note + "; " if c.note else "") + sample_agreement(pair_r[dtype], pair_o[dtype], c.bound)
            comparisons.append(c)
    return comparisons


def sample_agreement(ref: np.ndarray, other: np.ndarray, bound: float) -> str:
    """How two draws ``[B, H, W, 3]`` from the same noise agree, pixel by pixel in raster order (the
    sampler's step order): the fraction of pixels equal in all three sub-pixels of every image, the
    first step where any bit differs, and the first where they part by more than ``bound``; then the
    same two figures on the 8-bit grid (the draws rounded as ``parity.images.to_uint8`` rounds them)."""
    from parity.images import to_uint8

    a, b = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    if a.shape != b.shape or a.ndim != 4:
        return "samples not comparable pixel by pixel"
    beyond = np.any(~(np.abs(a - b) <= bound), axis=(0, 3))  # NaN counts as beyond

    def first(m: np.ndarray) -> str:
        hits = np.argwhere(m)  # row-major: raster order
        return f"({hits[0][0]}, {hits[0][1]})" if len(hits) else "never"

    def agree(x: np.ndarray, y: np.ndarray) -> str:
        differs = np.any(x != y, axis=(0, 3))  # (H, W): some image or channel differs at that step
        return f"pixels identical {np.all(x == y, axis=3).mean():.0%}, first differing step {first(differs)}"

    return (f"{agree(a, b)}, first step beyond the bound {first(beyond)}; "
            f"8-bit grid: {agree(to_uint8(np.nan_to_num(a)), to_uint8(np.nan_to_num(b)))}")


def describe_here(backend: str, device: str) -> str:
    return get_backend(backend).describe(device)


def settings(device: str, backends: Iterable[str], tf32: bool = False) -> dict[str, Any]:
    info: dict[str, Any] = {"device": device, "python": platform.python_version(), "tf32": tf32}
    for b in backends:
        info[b] = isolation.call(b, "parity.harness:describe_here", b, device)
    return info


def check(
    cases: list[Case | LayerCase] | None = None,
    reference: str = "tf",
    other: str = "torch",
    device: str = "cpu",
    dtypes: Iterable[str] = DTYPES,
    tf32: bool = False,
    mca_samples: int = MCA_SAMPLES,
) -> Report:
    """Both backends on every case (the built-in suite by default). ``tf32`` turns TF32 on for the
    backend under test only (the reference stays in parity mode): it shows what TF32 costs.
    ``mca_samples``: perturbed float32 re-runs of the reference that set each tensor's floor."""
    start = time.perf_counter()
    cases = default_cases() if cases is None else cases
    report = Report(reference, other, settings=settings(device, [reference, other], tf32))
    for case in cases:
        report.cases.append(compare_runs(case.name, run_backend(reference, case, device, mca_samples=mca_samples),
                                         run_backend(other, case, device, tf32), tuple(dtypes)))
    report.seconds = time.perf_counter() - start
    return report


# -- recorded references -----------------------------------------------------------------------
def record(path: str | os.PathLike, backend: str = "tf", device: str = "cpu",
           cases: list[Case | LayerCase] | None = None, mca_samples: int = MCA_SAMPLES) -> None:
    """Write the cases' inputs and one backend's float32 and float64 results, with its Monte Carlo
    spread per tensor, to a safetensors file."""
    from safetensors.numpy import save_file

    cases = default_cases() if cases is None else cases
    tensors: dict[str, np.ndarray] = {}
    meta_cases = []
    for i, case in enumerate(cases):
        results = run_backend(backend, case, device, mca_samples=mca_samples)
        for k, v in case.arrays.items():
            tensors[f"{i}/in/{k}"] = np.ascontiguousarray(v)
        for dt in (*DTYPES, MCA):
            for k, v in results[dt].items():
                tensors[f"{i}/out/{dt}/{k}"] = np.ascontiguousarray(v)
        meta_cases.append({**case.to_dict(), "order": list(results["float32"])})
    metadata = {
        "format": RECORD_FORMAT,
        "backend": backend,
        "mca_samples": str(mca_samples),
        "settings": json.dumps(settings(device, [backend])),
        "cases": json.dumps(meta_cases),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_record(path: str | os.PathLike) -> tuple[dict[str, Any], list[tuple[Case | LayerCase, dict[str, dict[str, np.ndarray]]]]]:
    """(metadata, [(case, {dtype: results})]) from a record file."""
    from parity.formats.safetensors_io import read_safetensors, read_safetensors_header

    header, metadata = read_safetensors_header(path)
    if metadata.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: expected metadata format={RECORD_FORMAT!r}; received {metadata.get('format')!r}")
    try:
        cases = json.loads(metadata["cases"])
        expected = {f"{i}/out/{dt}/{k}" for i, meta in enumerate(cases) for dt in (*DTYPES, MCA) for k in meta["order"]}
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: expected metadata 'cases' (JSON, each with its 'order'); could not read it ({exc})") from None
    inputs = {k for k in header if k.split("/", 2)[1:2] == ["in"] and k.split("/", 1)[0].isdigit()
              and int(k.split("/", 1)[0]) < len(cases)}
    unknown, missing = sorted(set(header) - expected - inputs), sorted(expected - set(header))
    if unknown or missing:
        raise ValueError(f"{path}: the tensors do not match the cases in its metadata: "
                         + "; ".join(p for p in (f"unexpected {unknown[:3]}{' ...' if len(unknown) > 3 else ''}" if unknown else "",
                                                 f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}" if missing else "") if p))
    tensors, _ = read_safetensors(path)
    out = []
    for i, meta in enumerate(cases):
        order = meta.pop("order")
        prefix = f"{i}/in/"
        arrays = under_prefix(tensors, prefix)
        kind = (LayerCase if "kind" in meta else TrainingCase if "steps" in meta
                else ModelCase if "nr_resnet" in meta.get("config", {}) else Case)
        case = kind(arrays=arrays, **meta)
        results = {dt: {k: tensors[f"{i}/out/{dt}/{k}"] for k in order} for dt in (*DTYPES, MCA)}
        out.append((case, results))
    return metadata, out


def record_problems(results: Results) -> list[str]:
    """What makes a recorded reference untrustworthy, tensor by tensor. The bound is derived from the
    record, so the record is checked first: its float32 and float64 results must hold NaN/Inf at the
    same positions, and must be within K times the recorded spread (or one ulp at scale) of each
    other, since the unperturbed float32 run is one more draw of that spread (the shipped records sit
    at 1.65x at most)."""
    problems = []
    for tensor, r32 in results["float32"].items():
        r64, spread = results["float64"][tensor], float(np.max(results[MCA][tensor]))
        if r32.shape != r64.shape or not np.array_equal(np.isfinite(r32), np.isfinite(r64)):
            problems.append(f"{tensor}: float32 and float64 results differ in shape or in NaN/Inf positions")
            continue
        limit = K * max(spread, EPS["float32"] * finite_max(r64))
        gap = max_abs_diff(r32, r64)
        if gap > limit:
            problems.append(f"{tensor}: float32 and float64 results {gap:.3e} apart, over {K:g} x the recorded "
                            f"spread ({limit:.3e})")
    return problems


def verify(path: str | os.PathLike, backend: str = "torch", device: str = "cpu", dtypes: Iterable[str] = DTYPES,
           tf32: bool = False) -> Report:
    """Check ``backend`` on ``device`` against a recorded file (the recorded side is the reference).

    The record is an input too: an inconsistent one is refused (:func:`record_problems`), and the
    float64 comparison runs whatever ``dtypes`` asks for: with ``float32`` alone, a failing float64
    tensor still fails the case (flagged "float64 gate"), since the float32 bound rests on the
    record's float64 run and a backend that computes the same function agrees with it to ~1e-15."""
    start = time.perf_counter()
    metadata, recorded = load_record(path)
    report = Report(f"{metadata['backend']} (recorded)", backend, settings=settings(device, [backend], tf32))
    report.settings["reference"] = json.loads(metadata["settings"])
    dtypes = tuple(dtypes)
    for case, ref in recorded:
        problems = record_problems(ref)
        if problems:
            raise ValueError(f"{path}: case {case.name!r} is not a consistent record ({len(problems)} tensor(s)), "
                             f"first {problems[0]}; record it again")
        full = compare_runs(case.name, ref, run_backend(backend, case, device, tf32), DTYPES)
        shown = [c for c in full.comparisons if c.dtype in dtypes]
        for c in full.comparisons:
            if c.dtype not in dtypes and not c.passed:
                c.note = (c.note + "; " if c.note else "") + "float64 gate: the float32 bound rests on this record's float64 run"
                shown.append(c)
        report.cases.append(CaseReport(case.name, shown, full.peak_compare_mib))
    report.seconds = time.perf_counter() - start
    return report
