"""The error every weight check raises, in a module of its own so that configs, tables and formats share it."""

from __future__ import annotations


class WeightError(ValueError):
    """A weight file or mapping that does not fit the block (or the model, ``what``); lists every
    problem at once. Pickles as it was raised (a worker's error reaches the caller whole)."""

    def __init__(self, problems: list[str], where: str = "weights", what: str = "block") -> None:
        self.problems, self.where, self.what = problems, where, what
        super().__init__(f"{where} do not fit the {what} ({len(problems)} problem(s)):\n  - " + "\n  - ".join(problems))

    def __reduce__(self) -> tuple:
        return (type(self), (self.problems, self.where, self.what))
