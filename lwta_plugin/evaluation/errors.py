"""The errors an evaluation raises besides ValueError (bad input) and FileNotFoundError (missing files)."""
from __future__ import annotations


class EvaluationError(RuntimeError):
    """An evaluation cannot go on (a broken attack, a vanished state directory, ...); the message says why."""


class IncompleteRunError(EvaluationError):
    """The state directory does not (yet) hold every task of the run."""


class EntryExistsError(EvaluationError):
    """A finished entry of another configuration is in the way (replace it with ``force=True`` / ``--force``)."""
