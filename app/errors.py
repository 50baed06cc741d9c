"""VolSeg's shared error types, in the lowest module of the package: it imports nothing from
``app``, so readers, writers, datasets, inference and the server can all raise and catch them
without importing each other (``app.io`` below ``app.data`` below ``app.inference``).

Example:
    >>> from app.errors import InputError
    >>> issubclass(InputError, ValueError)
    True
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["CasesFailedError", "InputError", "OutputError", "find_cause", "quiet_interrupt_logs", "under_monai_bundle"]


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


class _InterruptFilter(logging.Filter):
    """Drops ERROR records logged while a ``KeyboardInterrupt`` is handled (or carried in ``exc_info``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not isinstance(exc, KeyboardInterrupt)


@contextlib.contextmanager
def quiet_interrupt_logs() -> Iterator[None]:
    """Within the block, Ctrl-C is not logged as an error by the engines' handlers.

    On Ctrl-C, Ignite's ``Engine`` logs "Engine run is terminating due to exception" and MONAI's
    ``StatsHandler`` logs "Exception:" with the whole traceback (about 70 lines of torch frames),
    before the caller's one-line message on what the interruption left. The filter goes on every
    handler of every configured logger (a bundle's ``logging.conf`` has set them up by then) and
    drops only ERROR records made while a ``KeyboardInterrupt`` is handled; every other record,
    and the interruption itself, pass unchanged.

    Example:
        >>> import logging
        >>> with quiet_interrupt_logs():
        ...     try:
        ...         raise KeyboardInterrupt
        ...     except KeyboardInterrupt:
        ...         logging.getLogger("x").exception("not shown")
    """
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    handlers = {id(h): h for lg in loggers for h in lg.handlers}.values()
    quiet = _InterruptFilter()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def under_monai_bundle() -> bool:
    """Whether this process runs ``python -m monai.bundle`` (its ``__main__`` is ``monai.bundle.__main__``),
    where a message that ``volseg`` gives in its own words is logged by the component itself."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "monai.bundle.__main__"
