"""VolSeg's shared error types, in the lowest module of the package: it imports nothing from
``app``, so readers, writers, datasets, inference and the server can all raise and catch them
without importing each other (``app.io`` below ``app.data`` below ``app.inference``).

Example:
    >>> from app.errors import InputError
    >>> issubclass(InputError, ValueError)
    True
"""

from __future__ import annotations

__all__ = ["CasesFailedError", "InputError", "OutputError"]


class InputError(ValueError):
    """Bad input: the message names the file and the problem.

    Also importable as ``app.data.verify.InputError``, where it was defined first.
    """


class OutputError(ValueError):
    """An output folder or file that cannot be written: the message names the path and the fix
    (raised by :func:`app.io.outputs.prepare_output_dir` before any model loads)."""


class CasesFailedError(RuntimeError):
    """A batch that went on past cases it could not segment ends with this error, naming each
    failed case, its reason and its files (raised by
    :meth:`app.inference.workflow.CaseSkippingDataset.raise_failures` after the other cases are
    written; a RuntimeError, as before it had its own type)."""
