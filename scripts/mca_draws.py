"""Is the reference's own float32 run one more draw of its Monte Carlo spread, and how many draws does
a case need before no tensor's own run lies beyond ``K`` times it? (parity/tolerance.py)

    PYTHONPATH=. python scripts/mca_draws.py [--suite training] [--case 1] [--draws 24]

Runs the reference (TensorFlow) on one case of a suite in float64, in float32, and in float32 on
``--draws`` perturbed copies of the case (``Case.perturbed(0)``, ``(1)``, ...: the draws the harness
takes, in its order), then prints, over every tensor of the case: how many tensors' own float32 run
lies beyond ``gap_limit`` of the first 3 draws and of all of them, the mean rank of the own run's
error among the draws' errors (0.5 where it is one more draw like them, lower where the perturbation
adds error of its own), the number of draws the harness takes for the case, and the tensors whose own
run stands farthest beyond their first 3 draws, in ulps at the tensor's scale. Runs in this process
(TensorFlow must be installed).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from parity import protocol
    from parity.backends import get_backend
    from parity.case import SUITES
    from parity.tolerance import EPS, MCA_GROWTH, MCA_SAMPLES, finite_max, max_abs_diff

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="training", choices=sorted(SUITES))
    parser.add_argument("--case", type=int, default=1, help="the case's index in its suite")
    parser.add_argument("--draws", type=int, default=24)
    args = parser.parse_args()

    case = SUITES[args.suite]()[args.case]
    module = get_backend("tf")
    with module.parity_mode("cpu"):  # the reference's runs as the harness makes them (the naive sampler only)
        exact = protocol.run(module, case, "float64", cached_draw=False)
        own = protocol.run(module, case, "float32", cached_draw=False)
        draws = [{k: max_abs_diff(v, exact[k]) for k, v in protocol.run(module, case.perturbed(s), "float32", cached_draw=False).items()
                  if k in exact and v.shape == exact[k].shape} for s in range(args.draws)]
    rows = []
    for k, r64 in exact.items():
        scale = finite_max(r64)
        if not scale or k not in own or any(k not in d for d in draws):
            continue
        errors = np.array([d[k] for d in draws])
        gap = max_abs_diff(own[k], r64)
        rows.append((k, r64.size, scale, gap, errors))

    takes = next((n for n in range(MCA_SAMPLES, args.draws + 1) if all(within(r, n) for r in rows)), None)
    print(f"{case.name}: {len(rows)} tensors, {args.draws} perturbed draws")
    print(f"own run beyond K x the first {MCA_SAMPLES} draws: {sum(not within(r, MCA_SAMPLES) for r in rows)}; "
          f"beyond K x all {args.draws}: {sum(not within(r, args.draws) for r in rows)}")
    print(f"mean rank of the own run's error among the draws' (0.5: one more draw like them): "
          f"{np.mean([np.mean(errors < gap) for *_, gap, errors in rows]):.3f}")
    limit = MCA_GROWTH * MCA_SAMPLES
    print(f"draws the harness takes for this case: {takes if takes is not None else f'over {args.draws}'} "
          f"(it stops at {limit})")
    print("farthest beyond their first 3 draws (ulps at scale): own run, max of 3 draws, median and max of all")
    unit = EPS["float32"]
    rows.sort(key=lambda r: -r[3] / max(float(r[4][:MCA_SAMPLES].max()), unit * r[2]))
    for k, size, scale, gap, errors in rows[:8]:
        u = unit * scale
        print(f"  {k:45s} {size:6d} el. {gap / u:9.1f} {errors[:MCA_SAMPLES].max() / u:9.1f} "
              f"{np.median(errors) / u:9.1f} {errors.max() / u:9.1f}")


def within(row: tuple, n: int) -> bool:
    """Whether ``row``'s own run lies within ``gap_limit`` of its first ``n`` draws."""
    from parity.tolerance import gap_limit

    _, _, scale, gap, errors = row
    return gap <= gap_limit(float(errors[:n].max()), scale)


if __name__ == "__main__":
    main()
