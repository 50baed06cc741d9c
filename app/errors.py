"""VolSeg's shared error types, in the lowest module of the package: it imports nothing from
``app``, so readers, writers, datasets, inference and the server can all raise and catch them
without importing each other (``app.io`` below ``app.data`` below ``app.inference``).

Example:
    >>> from app.errors import InputError
    >>> issubclass(InputError, ValueError)
    True
"""

from __future__ import annotations

__all__ = ["CasesFailedError", "InputError", "OutputError", "find_cause"]


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


def find_cause(err: BaseException, types: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``types`` in ``err``'s chain (``err`` itself, then ``__cause__`` or
    ``__context__``, cycles stopped), or None: the user's error inside a wrapper such as MONAI's
    ``RuntimeError("Failed to evaluate ConfigExpression ...")`` or ``"applying transform <...>"``.

    Example:
        >>> try:
        ...     raise RuntimeError("applying transform <LoadVolumed>") from InputError("'x.nii.gz' is truncated")
        ... except RuntimeError as err:
        ...     print(repr(find_cause(err, InputError)))
        InputError("'x.nii.gz' is truncated")
    """
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, types):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
