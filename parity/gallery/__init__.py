"""The translation pitfall gallery: naive PyTorch translations, each caught by the harness at its stage.

Each entry of ``docs/translation_pitfalls.md`` that applies to this block has a *naive* variant: a small
override of the real translation (one method, one attribute, one converter function) that makes
exactly that mistake, installed only while the entry runs. The harness runs the TensorFlow reference
and the torch side on the entry's case; the real translation must pass, the naive one must fail, and
the first failing tensor, in computation order, must be the stage where the mistake shows first
(``load`` when the naive weights cannot even be loaded). ``gated-resnet-parity pitfalls`` prints the
gallery with the measured error against the bound; ``docs/pitfalls.md`` is written from the same
entries (``--markdown``), and a test checks that it matches them.

The package, by level:

- ``base``: :class:`Pitfall`, :class:`Result`, ``LOAD`` and the tools the entries share (``_hooks``,
  ``_patched``, the case makers);
- ``block``: block- and layer-level entries and their overrides (:data:`PITFALLS`);
- ``model``: model-level entries M1..M10 (:data:`MODEL_PITFALLS`);
- ``training``: training-loop entries T1..T8 (:data:`TRAINING_PITFALLS`);
- ``attention``: PixelSNAIL entries S1..S7, the attention and what feeds it (:data:`ATTENTION_PITFALLS`);
- ``article``: the seed article's block (:data:`ARTICLE`), re-created from its description;
- ``runner``: :func:`gallery` (the one list of every entry), :func:`run_naive`, :func:`run_pitfall`;
- ``formatters``: the CLI's table and ``docs/pitfalls.md``.

Later levels go in modules of their own beside these, with their list added to :func:`gallery`.

Importing this package imports neither TensorFlow nor PyTorch; an entry's override imports what it
replaces when it is installed, and the runner starts the backends in their worker processes.
"""

from parity.gallery.article import ARTICLE
from parity.gallery.attention import ATTENTION_PITFALLS
from parity.gallery.base import LOAD, Pitfall, Result
from parity.gallery.block import PITFALLS
from parity.gallery.formatters import format_gallery, format_markdown, markdown_row
from parity.gallery.model import MODEL_PITFALLS
from parity.gallery.runner import gallery, run_naive, run_pitfall
from parity.gallery.training import TRAINING_PITFALLS

__all__ = ["ARTICLE", "ATTENTION_PITFALLS", "LOAD", "MODEL_PITFALLS", "PITFALLS", "Pitfall", "Result", "TRAINING_PITFALLS", "format_gallery", "format_markdown",
           "gallery", "markdown_row", "run_naive", "run_pitfall"]
