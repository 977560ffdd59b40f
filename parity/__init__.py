"""Parity between ``tf_impl`` and ``torch_impl``: one weight file, the harness, recorded references, the CLI.

Importing this package imports neither TensorFlow nor PyTorch; backends load when a command needs them.
"""

from parity.case import Case, default_cases
from parity.errors import WeightError
from parity.formats.canonical import load_canonical, save_canonical
from parity.table import weight_table

__all__ = ["Case", "WeightError", "default_cases", "load_canonical", "save_canonical", "weight_table"]
