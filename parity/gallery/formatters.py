"""The gallery's results as text: :func:`format_gallery` (the CLI's table) and :func:`format_markdown`
(``docs/pitfalls.md``, whose rows' static part is :func:`markdown_row`, checked by the tests).
Generated pages hold no measurement from another machine: those live in ``docs/measurements.md``."""

from __future__ import annotations

from parity.gallery.base import Pitfall, Result
from parity.tolerance import Comparison


def _measured(r: Result) -> str:
    c = r.comparison
    if c is None:
        return r.detail
    if c.max_abs == float("inf") or "positions differ" in c.note:  # NaN/Inf where the reference has none: no distance
        return f"{c.note} ({c.dtype}; {r.detail})"
    return f"{c.max_abs:.2e} vs bound {c.bound:.2e} ({c.dtype}; {r.detail})"


def _stage(c: Comparison) -> str:
    if c.source == "shape":
        return c.note
    return f"max abs {c.max_abs:.2e}  bound {c.bound:.2e}  ratio {c.ratio:.3g}"


def format_gallery(results: list[Result]) -> str:
    lines = [f"{'#':<5} {'pitfall':<34} {'expected':<18} {'flagged':<18} {'real':<5} result  measured"]
    for r in results:
        p = r.pitfall
        lines.append(f"{p.key:<5} {p.title:<34} {p.expect:<18} {r.flagged:<18} {'pass' if r.real_passed else 'FAIL':<5} "
                     f"{'caught' if r.caught else 'MISSED':<7} {_measured(r)}")
        lines.append(f"{'':<5} naive: {p.naive}")
        for c in r.stages:
            lines.append(f"{'':<5}   {c.tensor:<22} " + _stage(c))
    n = sum(r.caught for r in results)
    lines.append(f"{n} of {len(results)} naive translations caught at the expected stage; the real translation passes every case.")
    return "\n".join(lines)


def markdown_row(p: Pitfall) -> str:
    """The static part of an entry's docs row (checked against docs/pitfalls.md by the tests)."""
    return f"| {p.key} | {p.title} | {p.naive} | `{p.expect}` |"


def format_markdown(results: list[Result]) -> str:
    out = [
        "# The pitfall gallery",
        "",
        "Written by `gated-resnet-parity pitfalls --markdown` from the `parity/gallery/` package; `tests/gallery/test_gallery.py`",
        "checks that every row's first four columns match the entries and that each naive translation is caught",
        "at the stage named here. Each naive variant is a small override of the real translation (see the",
        "source); the harness runs it against TensorFlow on the entry's case, in float32 and float64. The",
        "last column is one run's measurement (max abs error of the first failing tensor against its bound).",
        "",
        "| # | pitfall | the naive translation | flagged first | measured |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        out.append(f"{markdown_row(r.pitfall)} {_measured(r)} |")
    seed = next((r for r in results if r.pitfall.key == "seed"), None)
    if seed is not None:
        out += ["", "## The seed article's translation, stage by stage (float32)", "",
                "Its convs get the reference's effective kernels `g * V / |V|` (the `x` half of their inputs, since",
                "ELU does not double the channels) and biases; its `hw` is its own (`[K, F]` cannot hold `[K, 2F]`).",
                "", "| stage | measured |", "|---|---|"]
        out += [f"| `{c.tensor}` | {_stage(c)} |" for c in seed.stages]
        out += ["", f"The harness also reports it {seed.detail}."]
    out += ["", "## TF32 on a GPU", "",
            "Entry 29 emulates TF32 on the CPU. On a GPU the real thing is one flag away:",
            "`gated-resnet-parity verify --device cuda --tf32`. This page is generated and holds no GPU",
            "measurement: the measured figures are in docs/measurements.md, 'TF32 on a GPU'."]
    return "\n".join(out) + "\n"
