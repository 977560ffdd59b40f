"""The parity harness: run both backends on the same case, or one against a recorded file, and compare.

Every tensor of a case (forward stages, gradients, init, EMA, dropout) is computed by each side in
float32 and float64; :mod:`parity.tolerance` turns those four runs into a bound per tensor. A case's
report names the first tensor, in computation order, that fails: the stage where a bug shows first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from parity import isolation, protocol
from parity.backends import get_backend
from parity.formats.safetensors_io import loads_metadata, write_safetensors
from parity.kinds import check_declared
from parity.case import Case, LayerCase, ModelCase, TrainingCase, default_cases, under_prefix
from parity.protocol import CACHED_SAMPLE_TENSOR, SAMPLE_TENSOR
from parity.tolerance import (ALLOWANCE_ULPS, EPS, FEW, MCA, MCA_GROWTH, MCA_SAMPLES, K, Comparison, compare, finite_max,
                              gap_limit, max_abs_diff)

DTYPES = ("float32", "float64")
SPREAD_UP_TO = 16.0  # a recorded spread over this many times the record's own float32 error is refused (shipped records: 3.3 at most)
LOST_BITS_AT_MOST = 2.0 ** -8  # a recorded float32 error over this fraction of the tensor's scale is refused (shipped: 1.2e-6)
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


def first_step_beyond(report: CaseReport) -> dict[str, int | None]:
    """For a training case (tensors ``step_<s>/...``): per dtype, the first step with a tensor beyond
    its bound, or ``None`` if the twins never part; ``{}`` for any other case."""
    steps = {dt: [int(c.tensor.split("/", 1)[0][5:]) for c in report.comparisons if c.dtype == dt and not c.passed]
             for dt in DTYPES if any(c.dtype == dt for c in report.comparisons)}
    if not any(c.tensor.startswith("step_") for c in report.comparisons):
        return {}
    return {dt: min(found, default=None) for dt, found in steps.items()}


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
                    **({"first_step_beyond": steps} if (steps := first_step_beyond(c)) else {}),
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
            results[MCA] = monte_carlo_spread(lambda c: protocol.run(module, c, "float32", device, cached_draw),
                                              case, results, mca_samples)
    return results


def monte_carlo_spread(run32: Callable[[Any], dict[str, np.ndarray]], case: Any, results: Results,
                       samples: int) -> dict[str, np.float64]:
    """Each tensor's float32 spread: the largest distance from ``results``' float64 run of the float32
    runs (``run32``) of ``samples`` perturbed copies of ``case`` (:mod:`parity.tolerance`). A tensor
    whose unperturbed float32 run lies beyond :func:`~parity.tolerance.gap_limit` of its spread had
    too few draws: more are drawn, one at a time, up to ``MCA_GROWTH`` times ``samples`` in all, and
    each counts for the tensors still beyond only (the others keep their spread)."""
    exact, own = results["float64"], results["float32"]
    gaps = {k: (max_abs_diff(own[k], v), finite_max(v)) for k, v in exact.items() if k in own and own[k].shape == v.shape}
    spread = dict.fromkeys(exact, 0.0)
    counted = set(exact)  # the tensors each draw counts for
    for sample in range(MCA_GROWTH * samples):
        if sample >= samples:
            counted = {k for k, (gap, scale) in gaps.items() if gap > gap_limit(spread[k], scale)}
            if not counted:
                break
        for k, v in run32(case.perturbed(sample)).items():
            if k in counted and v.shape == exact[k].shape:
                spread[k] = max(spread[k], max_abs_diff(v, exact[k]))
    return {k: np.float64(v) for k, v in spread.items()}


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
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Both backends on every case (the built-in suite by default). ``tf32`` turns TF32 on for the
    backend under test only (the reference stays in parity mode): it shows what TF32 costs.
    ``mca_samples``: perturbed float32 re-runs of the reference that set each tensor's floor.
    ``progress`` is told each case as it starts (``[i/n] name``; the CLI prints it on a terminal)."""
    start = time.perf_counter()
    cases = default_cases() if cases is None else cases
    report = Report(reference, other, settings=settings(device, [reference, other], tf32))
    for i, case in enumerate(cases):
        if progress:
            progress(f"[{i + 1}/{len(cases)}] {case.name}")
        report.cases.append(compare_runs(case.name, run_backend(reference, case, device, mca_samples=mca_samples),
                                         run_backend(other, case, device, tf32), tuple(dtypes)))
    report.seconds = time.perf_counter() - start
    return report


# -- resynced training -------------------------------------------------------------------------
def run_float64_here(backend: str, case: TrainingCase, device: str = "cpu") -> dict[str, np.ndarray]:
    """The case's float64 run alone, in parity mode, in this process."""
    module = get_backend(backend)
    with module.parity_mode(device):
        return protocol.run(module, case, "float64", device)


def resynced(cases: list[Any], reference: str = "tf", device: str = "cpu") -> list[Any]:
    """Each training case (others as they are) made to start every step s > 1 from ``reference``'s
    float64 lockstep state after step s - 1, rounded to float32 like every case's inputs: its weights,
    shadows, Adam's slots and counter (``TrainingCase.resynced``). Then a step's comparison measures that
    one step's error, not what the steps before it accumulated; the bound is derived as for any case
    (the reference's own spread on the same start, re-run from it moved by one ulp)."""
    out = []
    for case in cases:
        if not isinstance(case, TrainingCase):
            out.append(case)
            continue
        if case.init:
            raise ValueError(f"expected a training case without the init pass for a resynced run; received {case.name!r}")
        out.append(resync_case(case, isolation.call(reference, "parity.harness:run_float64_here", reference, case, device)))
    return out


def resync_case(case: TrainingCase, states: dict[str, np.ndarray]) -> TrainingCase:
    """``case`` resynced to a lockstep run's results ``states`` (``step_<s>/...``): each step s > 1
    starts from the state after step s - 1, rounded to float32."""
    from gated_spec.training import ADAM_COUNTER

    arrays = dict(case.arrays)
    for s in range(1, case.steps):
        for k, v in states.items():
            step, name = k.split("/", 1)
            if step == f"step_{s}" and name != "loss":
                arrays[f"state/{s}/{name}"] = np.asarray(v, np.float32)
        arrays[f"state/{s}/{ADAM_COUNTER}"] = np.array([s + 1], np.float64)  # float64: never perturbed
    return dataclasses.replace(case, name=f"{case.name}-resynced", resynced=True, arrays=arrays)


# -- recorded references -----------------------------------------------------------------------
def record(path: str | os.PathLike, backend: str = "tf", device: str = "cpu",
           cases: list[Case | LayerCase] | None = None, mca_samples: int = MCA_SAMPLES,
           progress: Callable[[str], None] | None = None) -> None:
    """Write the cases' inputs and one backend's float32 and float64 results, with its Monte Carlo
    spread per tensor, to a safetensors file (``progress`` as in :func:`check`). Results that
    :func:`verify` would refuse (:func:`record_problems`) are refused here, and nothing is written."""
    cases = default_cases() if cases is None else cases
    tensors: dict[str, np.ndarray] = {}
    meta_cases = []
    inconsistent: list[tuple[str, list[str]]] = []  # every case run, then one error naming them all
    for i, case in enumerate(cases):
        if progress:
            progress(f"[{i + 1}/{len(cases)}] {case.name}")
        results = run_backend(backend, case, device, mca_samples=mca_samples)
        problems = record_problems(case, results)
        if problems:
            inconsistent.append((case.name, problems))
        for k, v in case.arrays.items():
            tensors[f"{i}/in/{k}"] = np.ascontiguousarray(v)
        for dt in (*DTYPES, MCA):
            for k, v in results[dt].items():
                tensors[f"{i}/out/{dt}/{k}"] = np.ascontiguousarray(v)
        meta_cases.append({**case.to_dict(), "order": list(results["float32"])})
    if inconsistent:
        name, problems = inconsistent[0]
        raise ValueError(f"{backend} on {device}: {len(inconsistent)} case(s) would make an inconsistent record "
                         f"({', '.join(repr(n) for n, _ in inconsistent)}); first, case {name!r} ({len(problems)} "
                         f"tensor(s)): {problems[0]}; nothing written")
    metadata = {
        "format": RECORD_FORMAT,
        "backend": backend,
        "mca_samples": str(mca_samples),
        "mca_samples_up_to": str(MCA_GROWTH * mca_samples),
        "settings": json.dumps(settings(device, [backend])),
        "cases": json.dumps(meta_cases),
    }
    write_safetensors(path, tensors, metadata)


def load_record(path: str | os.PathLike) -> tuple[dict[str, Any], list[tuple[Case | LayerCase, dict[str, dict[str, np.ndarray]]]]]:
    """(metadata, [(case, {dtype: results})]) from a record file."""
    from parity.formats.safetensors_io import read_safetensors, read_safetensors_header

    header, metadata = read_safetensors_header(path)
    if metadata.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: expected metadata format={RECORD_FORMAT!r}; received {metadata.get('format')!r}")
    try:
        cases = loads_metadata(metadata["cases"])
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
    kinds = []
    for i, meta in enumerate(cases):
        if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
            raise ValueError(f"{path}: expected each case in the metadata as a JSON object with a config object; case {i} is {str(meta)[:60]!r}")
        kind = (LayerCase if "kind" in meta else TrainingCase if "steps" in meta
                else ModelCase if "nr_resnet" in meta.get("config", {}) else Case)
        fields = {f.name for f in dataclasses.fields(kind)} - {"arrays"}
        unknown = sorted(set(meta) - fields - {"order"})
        if unknown:
            raise ValueError(f"{path}: case {i} ({kind.__name__}) has metadata keys {unknown} it does not know; "
                             f"expected some of {sorted(fields)}")
        if kind is not LayerCase:  # a network's config declares its size: checked against the header first
            check_declared(meta.get("config", {}), len(header), f"{path}: case {i}")
        kinds.append(kind)
    tensors, _ = read_safetensors(path)
    out = []
    for i, (meta, kind) in enumerate(zip(cases, kinds)):
        order = meta.pop("order")
        prefix = f"{i}/in/"
        arrays = under_prefix(tensors, prefix)
        case = kind(arrays=arrays, **meta)
        results = {dt: {k: tensors[f"{i}/out/{dt}/{k}"] for k in order} for dt in (*DTYPES, MCA)}
        out.append((case, results))
    return metadata, out


def record_problems(case: Any, results: Results) -> list[str]:
    """What makes ``case``'s recorded reference untrustworthy, tensor by tensor. The bound is derived from the
    record, so the record is checked first: its float32 and float64 results must hold NaN/Inf at the
    same positions, and must be within K times the recorded spread (or one ulp at scale) of each
    other, since the unperturbed float32 run is one more draw of that spread (the shipped records sit
    at 1.65x at most). The spread sets every bound of its tensor, so the record cannot vouch for it
    either: it must be finite and >= 0, at most ``SPREAD_UP_TO`` times the record's own float32 error
    (the gap, or ulps at scale), and no float32 error may exceed ``LOST_BITS_AT_MOST`` of the tensor's
    scale (a reference shifted by 0.5 with its spread inflated to match passed before). Not for a
    training case: 20 Adam steps amplify float32 rounding chaotically (measured: errors up to 1e-2 of
    a tensor's scale, spreads 17 x the gap), so its spreads are not judged for plausibility."""
    plausible_spread = not isinstance(case, TrainingCase)
    problems = []
    for tensor, r32 in results["float32"].items():
        r64, spreads = results["float64"][tensor], np.asarray(results[MCA][tensor], np.float64)
        if r32.shape != r64.shape or not np.array_equal(np.isfinite(r32), np.isfinite(r64)):
            problems.append(f"{tensor}: float32 and float64 results differ in shape or in NaN/Inf positions")
            continue
        if spreads.size == 0 or not np.all(np.isfinite(spreads)) or np.any(spreads < 0):
            problems.append(f"{tensor}: the recorded spread is {spreads.ravel()[:3].tolist()}; expected a finite value >= 0")
            continue
        spread, scale, gap = float(np.max(spreads)), finite_max(r64), max_abs_diff(r32, r64)
        if not plausible_spread:
            problems += _gap_problem(tensor, gap, spread, scale)
            continue
        # The spread sets every bound of the tensor (float64's too, scaled by 2^-29), so the record
        # cannot vouch for it: it must be a float32 rounding error of these values, like the gap
        # between the record's own float32 and float64 runs (another draw of the same error) ...
        own = max(gap, (ALLOWANCE_ULPS if r32.size < FEW else 1.0) * EPS["float32"] * scale)
        if spread > SPREAD_UP_TO * own:
            problems.append(f"{tensor}: the recorded spread {spread:.3e} is over {SPREAD_UP_TO:g} x the record's own float32 "
                            f"error ({own:.3e}, its float32 and float64 results' gap or ulps at scale): implausible")
            continue
        # ... and a float32 run keeps most of float32's 24 bits: one that lost more than 16 of them would
        # make a bound that any function passes
        if max(spread, gap) > LOST_BITS_AT_MOST * scale:
            problems.append(f"{tensor}: the record's float32 error {max(spread, gap):.3e} is over 2^-8 of the tensor's "
                            f"scale ({scale:.3e}): implausible for float32 rounding")
            continue
        problems += _gap_problem(tensor, gap, spread, scale)
    return problems


def _gap_problem(tensor: str, gap: float, spread: float, scale: float) -> list[str]:
    limit = gap_limit(spread, scale)
    if gap > limit:
        return [f"{tensor}: float32 and float64 results {gap:.3e} apart, over {K:g} x the recorded spread ({limit:.3e})"]
    return []


def verify(path: str | os.PathLike, backend: str = "torch", device: str = "cpu", dtypes: Iterable[str] = DTYPES,
           tf32: bool = False, progress: Callable[[str], None] | None = None) -> Report:
    """Check ``backend`` on ``device`` against a recorded file (the recorded side is the reference;
    ``progress`` as in :func:`check`).

    The record is an input too: an inconsistent one is refused (:func:`record_problems`), and the
    float64 comparison runs whatever ``dtypes`` asks for: with ``float32`` alone, a failing float64
    tensor still fails the case (flagged "float64 gate"), since the float32 bound rests on the
    record's float64 run and a backend that computes the same function agrees with it to ~1e-15."""
    start = time.perf_counter()
    metadata, recorded = load_record(path)
    report = Report(f"{metadata['backend']} (recorded)", backend, settings=settings(device, [backend], tf32))
    report.settings["reference"] = loads_metadata(metadata["settings"])
    dtypes = tuple(dtypes)
    for i, (case, ref) in enumerate(recorded):
        if progress:
            progress(f"[{i + 1}/{len(recorded)}] {case.name}")
        problems = record_problems(case, ref)
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
