"""``gated-resnet-parity`` / ``python -m parity``: check, record, verify, convert, pitfalls, run, sample, train.

Backends are imported only when a command needs them: ``verify`` and ``run --backend torch`` work
without TensorFlow, ``run --backend tf`` without PyTorch. Arrays in files are NHWC whatever the backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import Callable, Sequence

import numpy as np

from gated_spec import DEFAULT_POLYAK_DECAY
from gated_spec.training import (DEFAULT_EMA_ORDER, DEFAULT_EPS, DEFAULT_LR, DEFAULT_LR_DECAY, DEFAULT_MOM1, DEFAULT_MOM2,
                                 EMA_ORDERS)
from parity.atomic import atomic_path, check_outputs
from parity.case import SUITES
from parity.harness import DTYPES, Report, first_step_beyond
from parity.isolation import WorkerDied
from parity.kinds import MODEL_NAMES, model_name
from parity.protocol import CACHED_SAMPLE_TENSOR, SAMPLE_TENSOR
from parity.tolerance import policy

EXIT_OK, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
BUILTIN_RECORD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference_tf_cpu.safetensors")
# The `layers` suite recorded the same way (`record --suite layers`), for checking the transposed convs on a GPU.
BUILTIN_LAYERS_RECORD = os.path.join(os.path.dirname(BUILTIN_RECORD), "reference_tf_cpu_layers.safetensors")


def _fmt(x: float) -> str:
    return "inf" if x == float("inf") else f"{x:.2e}"


def format_report(report: Report, verbose: bool = False) -> str:
    """A table: one row per case and dtype (its worst tensor), every tensor with ``verbose``."""
    lines = [
        f"parity: {report.other} against {report.reference}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in report.settings.items() if k != "reference"),
        "",
        f"{'case':<48} {'dtype':<8} {'tensor':<28} {'max abs':>9} {'max rel':>9} {'ulp':>9} {'same':>5} {'bound':>9} "
        f"{'ratio':>6}  result",
    ]
    for case in report.cases:
        for dtype in DTYPES:
            rows = [c for c in case.comparisons if c.dtype == dtype]
            if not rows:
                continue
            shown = rows if verbose else [next((c for c in rows if not c.passed), max(rows, key=lambda c: c.ratio))]
            shown += [c for c in rows if c.tensor in (SAMPLE_TENSOR, CACHED_SAMPLE_TENSOR) and c not in shown]  # the draws' agreement
            for c in shown:
                status = "pass" if c.passed else (f"FAIL{' (first: ' + c.tensor + ')' if not verbose else ''}: "
                                                  f"{c.over} of {math.prod(c.shape)} over, worst at {c.worst_index}")
                if c.note:
                    status += f" [{c.note}]"
                lines.append(
                    f"{case.case:<48} {dtype:<8} {c.tensor:<28} {_fmt(c.max_abs):>9} {_fmt(c.max_rel):>9} "
                    f"{c.ulp:>9} {c.identical:>5.0%} {_fmt(c.bound):>9} {c.ratio:>6.2f}  {status}"
                )
        if steps := first_step_beyond(case):
            lines.append(f"{case.case:<48} first step beyond the bound: "
                         + ", ".join(f"{dt} {'never' if s is None else s}" for dt, s in steps.items()))
    n = sum(len(c.comparisons) for c in report.cases)
    bad = sum(1 for c in report.cases for x in c.comparisons if not x.passed)
    lines += [
        "",
        f"{len(report.cases)} cases, {n} tensor comparisons, {bad} failed, in {report.seconds:.1f} s "
        f"(comparisons' peak extra memory {report.peak_compare_mib:.2f} MiB). 'same': elements bit-identical to "
        f"the reference. " + policy(),
        "PASS" if report.passed else "FAIL",
    ]
    return "\n".join(lines)


def _emit(report: Report, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_report(report, verbose=args.verbose))
    return EXIT_OK if report.passed else EXIT_FAIL


def _dtypes(value: str) -> tuple[str, ...]:
    return DTYPES if value == "both" else (value,)


def _progress(command: str) -> Callable[[str], None] | None:
    """Progress lines on stderr for a long command, only on a terminal (stdout, e.g. --json, stays clean)."""
    if not sys.stderr.isatty():
        return None
    return lambda line: print(f"{command}: {line}", file=sys.stderr, flush=True)


def cmd_check(args: argparse.Namespace) -> int:
    from parity.harness import check

    return _emit(check(_cases(args, args.reference), reference=args.reference, other=args.other, device=args.device,
                       dtypes=_dtypes(args.dtype), tf32=args.tf32, progress=_progress("check")), args)


def _cases(args: argparse.Namespace, reference: str) -> list:
    """The suite's cases; with ``--resynced``, its training cases resynced to ``reference``'s state."""
    from parity.harness import resynced

    cases = SUITES[args.suite]()
    return resynced(cases, reference, args.device) if args.resynced else cases


def cmd_record(args: argparse.Namespace) -> int:
    from parity.harness import record

    check_outputs({"out": args.out}, {})
    start = time.perf_counter()
    record(args.out, backend=args.backend, device=args.device, cases=_cases(args, args.backend), progress=_progress("record"))
    print(f"recorded {args.backend} on {args.device} to {args.out} in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from parity.harness import verify

    return _emit(verify(args.record, backend=args.backend, device=args.device, dtypes=_dtypes(args.dtype),
                        tf32=args.tf32, progress=_progress("verify")), args)


def _model(name: str) -> str:
    """``--model``: a network's kind, train.py's aliases resolved (argparse answers any other value, exit 2)."""
    try:
        return model_name(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_convert(args: argparse.Namespace) -> int:
    from parity.formats import convert

    overrides = {k: v for k, v in (("conv", args.conv), ("nonlinearity", args.nonlinearity)) if v is not None}
    model_options = {"nr_resnet": args.nr_resnet, "nr_filters": args.nr_filters, "nr_logistic_mix": args.nr_logistic_mix}
    if args.model:
        if args.conv:
            raise ValueError("--conv names a block's conv kind; a model (--model) has its own")
        overrides.update({"model": args.model, **{k: v for k, v in model_options.items() if v is not None}})
    elif any(v is not None for v in model_options.values()):
        raise ValueError("--nr-resnet, --nr-filters and --nr-logistic-mix go with --model")
    summary = convert(args.src, args.dst, overrides=overrides, polyak_decay=args.polyak_decay,
                      scope=args.scope, counters=args.counters)
    print(summary)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from parity.running import apply_file

    check_outputs({"--out": args.out, "--save-weights": args.save_weights}, {"--weights": args.weights, "--inputs": args.inputs})
    inputs = _npz(args.inputs, ("x", "a", "h"), "x, and a, h where the block or model has them")
    outputs = apply_file(
        args.weights, inputs, backend=args.backend, use_ema=args.ema, init=args.init,
        save_weights=args.save_weights, device=args.device,
    )
    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz"
        np.savez(f, **outputs)
    print(f"wrote {', '.join(f'{k} {tuple(v.shape)}' for k, v in outputs.items())} to {args.out}")
    return EXIT_OK


def _npz(path: str, names: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    from parity.data import read_npz_arrays

    return read_npz_arrays(path, names, what)


def cmd_sample(args: argparse.Namespace) -> int:
    from parity.running import sample_file

    check_outputs({"--out": args.out, "--png": args.png}, {"--weights": args.weights, "--noise": args.noise, "--inputs": args.inputs})
    noise = _npz(args.noise, ("u_mix", "u_value"), "u_mix, u_value")
    h = _npz(args.inputs, ("h",), "h").get("h") if args.inputs else None
    if args.png and not (args.png.lower().endswith(".png") and os.path.isdir(os.path.dirname(os.path.abspath(args.png)))):
        raise ValueError(f"--png: expected a file name ending in .png in an existing folder; received {args.png!r}")
    outputs = sample_file(args.weights, noise, backend=args.backend, use_ema=args.ema, h=h, device=args.device,
                          progress=sys.stderr.isatty(), naive=args.naive)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **outputs)
    if args.png:
        from parity.images import save_png_grid

        save_png_grid(outputs["x"], args.png)
    print(f"wrote x {tuple(outputs['x'].shape)} to {args.out}" + (f" and a grid of them to {args.png}" if args.png else ""))
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from parity.training import TrainOptions, train

    config = {"model": args.model, **{k: v for k, v in (("nr_resnet", args.nr_resnet), ("nr_filters", args.nr_filters),
                                                        ("nr_logistic_mix", args.nr_logistic_mix),
                                                        ("nonlinearity", args.nonlinearity)) if v is not None},
              "dropout_p": args.dropout_p, "polyak_decay": args.polyak_decay}
    options = TrainOptions(config, args.data, args.out, backend=args.backend, steps=args.steps, epochs=args.epochs,
                           batch_size=args.batch_size, init_batch_size=args.init_batch_size, init_from=args.init_from,
                           lr=args.lr, lr_decay=args.lr_decay, mom1=args.mom1, mom2=args.mom2, eps=args.eps, seed=args.seed,
                           shuffle=not args.no_shuffle, save_every=args.save_every, ema=args.ema_order, resume=args.resume,
                           test_data=args.test_data, sample_every=args.sample_every, device=args.device,
                           progress=sys.stderr.isatty(), shadows=args.shadows, worker_order=args.worker_order,
                           worker_timeout=args.worker_timeout, conditional=args.conditional)
    summary = train(options)
    if summary["worker"]:  # one of several workers: worker 0 says it
        return EXIT_OK
    print(f"trained {summary['steps']} steps (from step {summary['resumed_from']}), last loss {summary['loss']:.2f}; "
          f"model file {os.path.join(args.out, 'last.safetensors')}"
          + (f"; test bits/dim (averaged weights) {summary['test_bpd_ema']:.4f}" if "test_bpd_ema" in summary else ""))
    return EXIT_OK


def cmd_pitfalls(args: argparse.Namespace) -> int:
    from parity.gallery import format_gallery, format_markdown, gallery, run_pitfall

    entries = [p for p in gallery() if not args.only or p.key in args.only.split(",")]
    if not entries:
        raise ValueError(f"--only {args.only!r} names no entry; the entries are {[p.key for p in gallery()]}")
    progress = _progress("pitfalls")
    results = []
    for i, p in enumerate(entries):
        if progress:
            progress(f"[{i + 1}/{len(entries)}] {p.key}")
        results.append(run_pitfall(p))
    print(format_markdown(results) if args.markdown else format_gallery(results))
    return EXIT_OK if all(r.caught for r in results) else EXIT_FAIL


def device_arg(value: str) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``; anything else is refused before any work (a device
    neither framework knows, or one TensorFlow would silently replace by the CPU)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N; received {value!r}")
    return value


SUITE_HELP = ("default: 8 small configs covering every option (F = 4); wide: 2 blocks and a PixelCNN++ (R = 1) at "
              "PixelCNN++ width (F = 160, 8x8), where float32 error grows with the 1920-term sums; layers: "
              "each of the 6 weight-normalised conv layers alone (transposed ones included) at 3 strides; models: 3 tiny "
              "PixelCNN++ networks (one with a sharp mixture), whole (output, loss, gradients, init, EMA, samples); training: "
              "3 tiny networks (one conditional) trained 20, 20 and 10 steps in lockstep (every step's loss, weights, shadows and "
              "Adam state; --resynced: each step from the reference's state)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gated-resnet-parity",
        description="Parity checks for the PixelCNN++ / PixelSNAIL gated residual block between TensorFlow and PyTorch.",
    )
    sub = parser.add_subparsers(dest="command")

    def device(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N (default: cpu)")

    def reporting(p: argparse.ArgumentParser) -> None:
        device(p)
        p.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        p.add_argument("--verbose", "-v", action="store_true", help="one row per tensor")
        p.add_argument("--tf32", action="store_true",
                       help="turn TF32 on for the backend under test (off by default; shows what it costs, pitfall 29)")

    p = sub.add_parser("check", help="run both backends on the built-in suite and compare (the default)")
    p.add_argument("--reference", default="tf", choices=["tf", "torch"])
    p.add_argument("--other", default="torch", choices=["tf", "torch"])
    p.add_argument("--suite", default="default", choices=list(SUITES), help=SUITE_HELP)
    p.add_argument("--resynced", action="store_true",
                   help="training cases: start each step from the reference's state (one step's error, not the accumulation)")
    reporting(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("record", help="write one backend's inputs and results to a file")
    p.add_argument("out")
    p.add_argument("--backend", default="tf", choices=["tf", "torch"])
    device(p)
    p.add_argument("--suite", default="default", choices=list(SUITES), help=SUITE_HELP)
    p.add_argument("--resynced", action="store_true",
                   help="training cases: start each step from the reference's state (one step's error, not the accumulation)")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("verify", help="check a backend against a recorded file")
    p.add_argument("record", nargs="?", default=BUILTIN_RECORD,
                   help="record file (default: the built-in suite recorded with TensorFlow on CPU, shipped with parity)")
    p.add_argument("--backend", default="torch", choices=["tf", "torch"])
    reporting(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("convert", help="convert weights between the canonical file, a Keras weights file, a torch "
                       "state_dict file, and from an original TF1 checkpoint (prefix)")
    p.add_argument("src", help="weight file, or TF1 checkpoint prefix (PREFIX.index next to it)")
    p.add_argument("dst")
    p.add_argument("--conv", choices=["conv2d", "down_shifted_conv2d", "down_right_shifted_conv2d", "nin"])
    p.add_argument("--nonlinearity", choices=["concat_elu", "elu", "relu"])
    p.add_argument("--polyak-decay", type=float, default=None, help="decay to record when the source has shadows but no config")
    p.add_argument("--scope", default="model", help="TF1 checkpoint: the template scope holding the block (default: model)")
    p.add_argument("--counters", default=None,
                   help="TF1 checkpoint: where the block starts in a whole model, e.g. conv2d=4,dense=2 (default: all 0)")
    p.add_argument("--model", type=_model, metavar="{" + ",".join(MODEL_NAMES) + "}",
                   help="convert a whole network instead of one block (train.py's names; pixelsnail = h12_noup_smallkey)")
    p.add_argument("--nr-resnet", type=int, help="with --model: R (inferred from the shapes; must agree)")
    p.add_argument("--nr-filters", type=int, help="with --model: F (inferred; must agree)")
    p.add_argument("--nr-logistic-mix", type=int, help="with --model: M (inferred; must agree)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("sample", help="draw images from a model file with given noise")
    p.add_argument("--weights", required=True, help="a model file (convert ... --model pixelcnn_pp)")
    p.add_argument("--backend", default="torch", choices=["tf", "torch"])
    p.add_argument("--noise", required=True, help=".npz with u_mix [B, H, W, M] and u_value [B, H, W, 3]")
    p.add_argument("--out", required=True, help=".npz that gets x [B, H, W, 3]")
    p.add_argument("--ema", action="store_true", help="sample with the averaged weights")
    p.add_argument("--inputs", default=None, help=".npz with h [B, K] for a conditional model")
    p.add_argument("--naive", action="store_true", help="the naive sampler: the whole network at every pixel (the "
                   "reference; default: the cached sampler, same images, docs/sampler.md)")
    p.add_argument("--png", default=None, help="also write the images as one 8-bit PNG grid here")
    device(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("pitfalls", help="the pitfall gallery: naive translations, each caught at its stage")
    p.add_argument("--only", default=None, help="comma-separated entry numbers, e.g. 4,17,seed")
    p.add_argument("--markdown", action="store_true", help="print the docs page (docs/pitfalls.md)")
    p.set_defaults(func=cmd_pitfalls)

    p = sub.add_parser("train", help="train a network as the original's train.py does (Adam with epsilon inside the root, "
                       "the decayed learning rate, Polyak averaging), resumable from its checkpoint")
    p.add_argument("--model", default="pixelcnn_pp", type=_model, metavar="{" + ",".join(MODEL_NAMES) + "}")
    p.add_argument("--nr-resnet", type=int)
    p.add_argument("--nr-filters", type=int)
    p.add_argument("--nr-logistic-mix", type=int)
    p.add_argument("--nonlinearity", choices=["concat_elu", "elu", "relu"])
    p.add_argument("--data", required=True, help="CIFAR-10 binary folder or .bin file, an .npz (x [N, H, W, 3] uint8), or a folder of PNGs")
    p.add_argument("--test-data", default=None, help="images for the test bits/dim with the averaged weights at the end "
                   "(and at every --sample-every step, in log.jsonl's test_bpd_ema)")
    p.add_argument("--sample-every", type=int, default=None,
                   help="every N steps and at the end: DIR/samples_<step>.png (16 images drawn with the averaged weights) "
                        "and DIR/curves.png (train bits/dim, and test bits/dim with --test-data, against the step)")
    p.add_argument("--conditional", action="store_true", help="class-conditional, as the original's --class_conditional: "
                   "h = one-hot labels (CIFAR-10's label byte, an .npz's y [N]); sampling its model file needs h (sample --inputs)")
    p.add_argument("--no-shuffle", action="store_true", help="take the images in file order")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--init-batch-size", type=int, default=16, help="images for the data-dependent init (the original's 100)")
    p.add_argument("--init-from", default=None, help="start from these weights instead of the data-dependent init")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int)
    length.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--lr-decay", type=float, default=DEFAULT_LR_DECAY)
    p.add_argument("--mom1", type=float, default=DEFAULT_MOM1)
    p.add_argument("--mom2", type=float, default=DEFAULT_MOM2)
    p.add_argument("--eps", type=float, default=DEFAULT_EPS, help="inside the square root, as the original (PixelSNAIL: 1e-6)")
    p.add_argument("--polyak-decay", type=float, default=DEFAULT_POLYAK_DECAY)
    p.add_argument("--ema-order", default=DEFAULT_EMA_ORDER, choices=list(EMA_ORDERS),
                   help="shadows from the weights before Adam's update (pre: the original's, measured) or after it (post)")
    p.add_argument("--dropout-p", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", default="torch", choices=["tf", "torch"])
    device(p)
    p.add_argument("--out", required=True, help="run folder: checkpoint.safetensors, last.safetensors, log.jsonl")
    p.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.safetensors")
    p.add_argument("--save-every", type=int, default=100)
    workers = p.add_argument_group("several workers (torchrun --nproc-per-node N -m parity train ...; docs/training.md)")
    workers.add_argument("--shadows", default="own", choices=["own", "averaged"],
                         help="each worker's shadows start at its own init (the original's) or at the averaged weights")
    workers.add_argument("--worker-order", default="shards", choices=["shards", "independent"],
                         help="each worker a disjoint shard of one order, or its own order from seed + rank (the original's)")
    workers.add_argument("--worker-timeout", type=float, default=300.0, help="seconds to wait for the other workers")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="apply a block or a model from a weight file to inputs from an .npz (a model also gives its loss)")
    p.add_argument("--weights", required=True)
    p.add_argument("--inputs", required=True, help=".npz with x and optionally a, h (NHWC)")
    p.add_argument("--backend", default="torch", choices=["tf", "torch"])
    p.add_argument("--out", required=True)
    p.add_argument("--ema", action="store_true", help="use the averaged weights")
    p.add_argument("--init", action="store_true", help="run the data-dependent init on this batch")
    p.add_argument("--save-weights", default=None, help="with --init: write the initialised weights here")
    device(p)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["check", *argv]
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ImportError, OSError, WorkerDied) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
