"""The pitfall gallery: every naive translation fails the harness at its stage; the real one passes.
One test per entry, so CI names the pitfall that slipped through."""

from __future__ import annotations

import os

import pytest

from parity.gallery import LOAD, PITFALLS, ARTICLE, gallery, markdown_row
from tests.conftest import BOTH, ROOT

REQUIRED = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "11", "12", "13", "14", "15", "17", "18", "19", "20", "21",
            "25", "26", "27", "29"}


def test_the_gallery_covers_the_required_pitfalls():
    assert REQUIRED <= {p.key for p in PITFALLS}
    assert len({p.key for p in gallery()}) == len(gallery())


@BOTH
@pytest.mark.parametrize("pitfall", gallery(), ids=lambda p: f"pitfall-{p.key}")
def test_naive_translation_is_caught_at_its_stage(pitfall):
    from parity.gallery import run_pitfall

    result = run_pitfall(pitfall)
    assert result.real_passed, f"the real translation fails the case of pitfall {pitfall.key}"
    assert result.flagged == pitfall.expect, f"pitfall {pitfall.key}: flagged {result.flagged}, expected {pitfall.expect} ({result.detail})"
    if pitfall.expect != LOAD:
        c = result.comparison
        assert c is not None and not c.passed and (c.max_abs > c.bound or c.source == "shape" or c.note)


@BOTH
def test_the_overrides_are_undone():
    """After a naive entry ran, the real translation is back: the same case passes again."""
    from parity.harness import check
    from parity.gallery import run_pitfall

    for p in gallery():
        if p.key in ("2", "14", "27"):
            run_pitfall(p)
    assert check([PITFALLS[0].case()]).passed


def test_the_docs_page_matches_the_gallery():
    text = open(os.path.join(ROOT, "docs", "pitfalls.md")).read()
    for p in gallery():
        assert markdown_row(p) in text, f"docs/pitfalls.md is out of date for entry {p.key}: run gated-resnet-parity pitfalls --markdown"
    assert "## The seed article's translation, stage by stage" in text and ARTICLE.expect in text


@BOTH
def test_cli_prints_the_gallery(capsys):
    from parity.cli import main

    assert main(["pitfalls", "--only", "11,17"]) == 0
    out = capsys.readouterr().out
    assert "value / gate split" in out and "init/conv2d_0/g" in out and "2 of 2 naive translations caught" in out
    assert main(["pitfalls", "--only", "99"]) == 2


def test_every_declared_hook_resolves_and_is_restored():
    """torch_impl.hooks is the twin's replaceable surface: each name resolves to something that exists,
    each replacement is undone, and an unknown name or a private harness name is refused."""
    pytest.importorskip("torch")
    from parity.gallery.base import _patched
    from parity.table import WeightRow
    from torch_impl import hooks

    for name in hooks.HOOKS:
        before = hooks.current(name)
        with hooks.replaced({name: "naive"}):
            assert hooks.current(name) == "naive"
        assert hooks.current(name) is before, name
    with pytest.raises(KeyError, match="expected one of torch_impl.hooks.HOOKS"):
        with hooks.replaced({"GatedResnet._split": None, "GatedResnet._run": None}):
            pass
    assert hooks.current("GatedResnet._split") is not None  # nothing was installed
    with pytest.raises(AttributeError, match="expected a public attribute"):
        with _patched((WeightRow, "_private", None)):
            pass


def test_a_hook_renamed_in_the_twin_is_an_error(monkeypatch):
    """Renaming a twin's step without updating HOOKS fails loudly instead of installing nothing."""
    pytest.importorskip("torch")
    import torch_impl.block as tb
    from torch_impl import hooks

    monkeypatch.delattr(tb.GatedResnet, "_split")
    with pytest.raises(AttributeError, match="GatedResnet._split names '_split', which the twin no longer has"):
        with hooks.replaced({"GatedResnet._skip": None, "GatedResnet._split": None}):
            pass
