"""The parity verdict under every machine setting we can emulate: one table, non-zero exit on any failure.

Cells: each Python environment given (e.g. one with the local ``+cpu`` torch wheel, one with PyPI's
default CUDA wheel and triton) x ``ONEDNN_MAX_CPU_ISA`` in {AVX2, default} (both frameworks honour
it) x ``OMP_NUM_THREADS`` in {1, 2} x ``TF_ENABLE_ONEDNN_OPTS`` in {0, 1}. Each cell runs, in a fresh
process with that environment: the default, wide and layers suites (``gated-resnet-parity check``),
the pitfall gallery (every entry caught at its stage, the real translation passing), and ``N`` fuzz
examples (``tests/parity/test_fuzz.py``). A cell shows the worst ratio (error / bound) over the suites and
the failures, if any.

    python scripts/portability_matrix.py --python .venv/bin/python --python /path/to/other/venv/bin/python
    python scripts/portability_matrix.py --quick          # CI: default suite + fuzz, ISA x oneDNN-opts, 1 thread

The full matrix with two environments is 32 cells of about a minute and a half each here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SUITES = ("default", "wide", "layers")


def run_cell(suites: list[str], gallery: bool, fuzz: int) -> dict[str, Any]:
    """In the cell's process: what it measured, as JSON-ready data."""
    from parity.case import SUITES as CASES
    from parity.harness import check

    out: dict[str, Any] = {}
    import torch

    out["torch"] = torch.__version__
    for name in suites:
        report = check(CASES[name]())
        rows = [c for case in report.cases for c in case.comparisons]
        out[name] = {"worst": max(c.ratio for c in rows), "failed": sum(not c.passed for c in rows), "n": len(rows)}
    if gallery:
        from parity.gallery import gallery as entries, run_pitfall

        results = [run_pitfall(p) for p in entries()]
        out["gallery"] = {"caught": sum(r.caught for r in results), "n": len(results),
                          "missed": [r.pitfall.key for r in results if not r.caught]}
    if fuzz:
        env = dict(os.environ, PARITY_FUZZ_EXAMPLES=str(fuzz))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/parity/test_fuzz.py"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        out["fuzz"] = {"passed": proc.returncode == 0, "summary": tail[0]}
    return out


def _cell_text(result: dict[str, Any], column: str) -> str:
    if "error" in result:
        return "ERROR"
    r = result.get(column)
    if r is None:
        return "-"
    if column == "gallery":
        return f"{r['caught']}/{r['n']}" + ("" if not r["missed"] else f" MISSED {','.join(r['missed'])}")
    if column == "fuzz":
        return "pass" if r["passed"] else "FAIL"
    return f"{r['worst']:.2f}" + ("" if not r["failed"] else f" FAIL({r['failed']})")


def _cell_ok(result: dict[str, Any]) -> bool:
    if "error" in result:
        return False
    ok = all(result[s]["failed"] == 0 for s in SUITES if s in result)
    if "gallery" in result:
        ok = ok and not result["gallery"]["missed"]
    if "fuzz" in result:
        ok = ok and result["fuzz"]["passed"]
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", default=None,
                        help="interpreter of an environment to test (repeatable; default: this one)")
    parser.add_argument("--quick", action="store_true",
                        help="CI subset: default suite and the fuzz examples, OMP_NUM_THREADS=1 only, no gallery")
    parser.add_argument("--fuzz", type=int, default=10, help="fuzz examples per cell (0: none)")
    parser.add_argument("--json", default=None, help="also write every cell's measurements here")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # internal: run one cell, print JSON
    args = parser.parse_args(argv)

    if args.cell is not None:
        spec = json.loads(args.cell)
        print("CELL " + json.dumps(run_cell(spec["suites"], spec["gallery"], spec["fuzz"])), flush=True)
        return 0

    pythons = args.python or [sys.executable]
    suites = ["default"] if args.quick else list(SUITES)
    spec = json.dumps({"suites": suites, "gallery": not args.quick, "fuzz": args.fuzz})
    threads = ["1"] if args.quick else ["1", "2"]
    columns = [*suites, *(["gallery"] if not args.quick else []), *(["fuzz"] if args.fuzz else [])]
    rows = []
    print(f"{'torch':<16} {'ISA':<8} {'OMP':<4} {'TF oneDNN':<10} " + " ".join(f"{c:<14}" for c in columns) + "  seconds",
          flush=True)
    for python, isa, omp, opts in itertools.product(pythons, ["AVX2", "default"], threads, ["0", "1"]):
        env = dict(os.environ, OMP_NUM_THREADS=omp, TF_ENABLE_ONEDNN_OPTS=opts)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if isa != "default":
            env["ONEDNN_MAX_CPU_ISA"] = isa
        start = time.perf_counter()
        proc = subprocess.run([python, os.path.abspath(__file__), "--cell", spec], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CELL ")), None)
        result = json.loads(line[5:]) if line else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
        result.update(python=python, isa=isa, omp=omp, tf_onednn_opts=opts, seconds=time.perf_counter() - start)
        rows.append(result)
        print(f"{result.get('torch', '?'):<16} {isa:<8} {omp:<4} {opts:<10} "
              + " ".join(f"{_cell_text(result, c):<14}" for c in columns) + f"  {result['seconds']:.0f}", flush=True)
        if "error" in result:
            print(f"  error: {result['error']}", flush=True)
    ok = all(_cell_ok(r) for r in rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"{len(rows)} cells, {sum(not _cell_ok(r) for r in rows)} failed: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
