"""Running the gallery: :func:`gallery` (the one list of every entry, in its order), :func:`run_naive`
(an entry's naive translation, in the torch worker) and :func:`run_pitfall` (the real and the naive
translation against the TensorFlow reference, each backend in its worker process)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from parity.case import Case, LayerCase, ModelCase
from parity.gallery.article import ARTICLE, _article_run
from parity.gallery.attention import ATTENTION_PITFALLS
from parity.gallery.base import LOAD, Pitfall, Result
from parity.gallery.block import PITFALLS
from parity.gallery.model import MODEL_PITFALLS
from parity.gallery.training import TRAINING_PITFALLS


def gallery() -> list[Pitfall]:
    return [*PITFALLS, *MODEL_PITFALLS, *TRAINING_PITFALLS, *ATTENTION_PITFALLS, ARTICLE]


def run_naive(key: str, case: Case | LayerCase | ModelCase) -> dict[str, Any]:
    """The naive translation of entry ``key`` on ``case``, in this process (the torch worker runs it):
    ``{"results": {dtype: {tensor: array}}}``, or ``{"load": message}`` when its weights cannot load."""
    from parity.harness import DTYPES, run_backend_here
    from parity.errors import WeightError
    from torch_impl import StateDictError

    if key == ARTICLE.key:
        return {"results": {dt: _article_run(case, dt) for dt in DTYPES}}
    pitfall = next(p for p in gallery() if p.key == key)
    with pitfall.install():
        try:
            return {"results": run_backend_here("torch", case)}
        except (WeightError, StateDictError) as exc:
            return {"load": str(exc).splitlines()[1].strip(" -")}


# Entries on the same case (name aside) share one TF reference and one run of the real translation,
# within a process: both depend only on the case.
_REFERENCES: dict[str, dict[str, dict[str, np.ndarray]]] = {}
_REAL: dict[str, dict[str, dict[str, np.ndarray]]] = {}


def run_pitfall(pitfall: Pitfall, reference: dict[str, dict[str, np.ndarray]] | None = None) -> Result:
    """Run the real translation and the naive one against the TF reference on the entry's case
    (each backend in its worker process)."""
    from parity import isolation
    from parity.harness import compare_runs, run_backend
    from parity.tolerance import MCA_SAMPLES

    case = pitfall.case()
    key = json.dumps({**case.to_dict(), "name": None}, sort_keys=True)  # the arrays follow from these fields
    if reference is None:
        if key not in _REFERENCES:
            _REFERENCES[key] = run_backend("tf", case, mca_samples=MCA_SAMPLES)
        reference = _REFERENCES[key]
    if key not in _REAL:
        _REAL[key] = run_backend("torch", case)
    real = compare_runs(case.name, reference, _REAL[key])
    naive = isolation.call("torch", "parity.gallery.runner:run_naive", pitfall.key, case)
    if "load" in naive:
        return Result(pitfall, LOAD, None, naive["load"], real.passed)
    report = compare_runs(case.name, reference, naive["results"])
    first = report.first_failure
    if pitfall.key == ARTICLE.key:
        stages = [c for c in report.comparisons if c.dtype == "float32" and c.tensor.startswith("forward/")]
        missing = [c.tensor for c in report.comparisons if c.source == "missing" and c.dtype == "float32"]
        groups = {"weight gradients": sum(t.startswith("grad/") for t in missing),
                  "init tensors": sum(t.startswith("init/") for t in missing),
                  "EMA tensors": sum(t.startswith("ema") for t in missing)}
        detail = "missing " + ", ".join(f"{n} {what}" for what, n in groups.items() if n) + " (no weight norm, init or EMA)"
        return Result(pitfall, first.tensor if first else "none", first, detail, real.passed, stages)
    if first is None:
        return Result(pitfall, "none", None, "the naive variant passed", real.passed)
    failed = sum(not c.passed for c in report.comparisons)
    return Result(pitfall, first.tensor, first, f"{failed} of {len(report.comparisons)} tensors fail", real.passed)
