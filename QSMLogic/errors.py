"""Exception types that name what is wrong with an input."""
from __future__ import annotations


class QSMInputError(ValueError):
    """An input (array, file, node, parameter) is unusable; the message names the problem."""


class QSMCancelled(RuntimeError):
    """Raised when the user cancels a long-running operation through a cancel callback."""
