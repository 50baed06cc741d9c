"""The cause as the last line when ``python -m monai.bundle run`` stops on a bad input or setting.

MONAI's ``ConfigParser`` re-raises any error of a ``$`` expression or ``_target_`` call as
``RuntimeError("Failed to evaluate ConfigExpression ...")`` (or "Failed to instantiate"), and
``monai.transforms`` wraps a transform's error as ``RuntimeError("applying transform ...")``. So
``python -m monai.bundle run --config_file configs/inference.yaml --dataset_dir /nope`` ended in a
60-line traceback whose last line was the wrapper, ``RuntimeError: Failed to evaluate
ConfigExpression: ("$app.data.inference_datalist(...)")``, with the cause, ``FileNotFoundError:
dataset_dir '/nope' does not exist or is not a folder``, in the middle.

The bundle configs import this module (``imports: [..., "$import app.bundle_errors"]``). Run under
``python -m monai.bundle`` (or ``torchrun -m monai.bundle``), the import chains a
:data:`sys.excepthook` that prints the traceback as before and, when the error is such a wrapper
with a :class:`FileNotFoundError` or :class:`ValueError` (which includes
:class:`app.errors.InputError`) among its causes, ends with one line naming it
(:func:`app.engines.preflight.config_error_cause`). A Ctrl-C prints one line, :data:`INTERRUPTED`,
in place of its traceback. Anywhere else (``volseg``, the Python API,
notebooks, tests) the import changes nothing.

Example:
    >>> import sys
    >>> try:
    ...     raise RuntimeError("Failed to evaluate ConfigExpression") from FileNotFoundError("no 'x.nii.gz'")
    ... except RuntimeError as err:
    ...     print(cause_line(err))
    error: FileNotFoundError: no 'x.nii.gz' (the cause of MONAI's "Failed to evaluate ConfigExpression" above)
"""

from __future__ import annotations

import sys
from types import TracebackType

from app.errors import under_monai_bundle  # re-exported: it lives in the lowest layer, for app.io and app.engines

__all__ = ["INTERRUPTED", "cause_line", "install", "interrupted", "under_monai_bundle"]

#: the first words of the RuntimeErrors by which MONAI wraps a config expression's or a transform's error
WRAPPERS = ("Failed to evaluate", "Failed to instantiate", "applying transform")


def cause_line(err: BaseException) -> str | None:
    """One line naming the user's error inside MONAI's wrapper ``err``, or None.

    Args:
        err: the error that ended the run.

    Returns:
        ``"error: <type>: <message> (the cause of MONAI's "<wrapper>" above)"`` where ``err`` is a
        :class:`RuntimeError` whose message starts with one of :data:`WRAPPERS` and one of its
        causes is a :class:`FileNotFoundError`, :class:`ValueError` or
        :class:`app.errors.CasesFailedError` (cases the run skipped); None otherwise (the
        traceback's own last line already names the error).
    """
    from app.engines.preflight import config_error_cause

    if not isinstance(err, RuntimeError) or not str(err).startswith(WRAPPERS):
        return None
    cause = config_error_cause(err)
    if cause is err:
        return None
    wrapper = next(w for w in WRAPPERS if str(err).startswith(w))
    wrapper = f"{wrapper} ConfigExpression" if str(err).startswith(f"{wrapper} ConfigExpression") else wrapper
    message = " ".join(str(cause).split())  # one line
    return f"error: {type(cause).__name__}: {message} (the cause of MONAI's \"{wrapper}\" above)"


#: What ``python -m monai.bundle run`` prints on Ctrl-C in place of the traceback.
INTERRUPTED = ("interrupted (Ctrl-C): a training run resumes from the last.pt in its output_dir (written atomically after each finished "
               "epoch) when the same command is run again; a segmentation run keeps the label maps it wrote")


def interrupted(err: BaseException) -> bool:
    """Whether ``err`` is a Ctrl-C, or MONAI's wrapper of one (a ``RuntimeError`` raised while a
    ``KeyboardInterrupt`` was handled: Ctrl-C inside ``torch.save`` gives "unexpected pos ...")."""
    from app.errors import find_cause

    return find_cause(err, KeyboardInterrupt) is not None


def install() -> bool:
    """Chain the excepthook that ends a wrapped error's traceback with :func:`cause_line`.

    Idempotent: a second call (a second config parsed in the same process) adds nothing.

    Returns:
        True where the hook is in place after the call.
    """
    previous = sys.excepthook
    if getattr(previous, "volseg_cause_line", False):
        return True

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if interrupted(exc):  # Ctrl-C: what it left, not a traceback of wherever the run was
            print(INTERRUPTED, file=sys.stderr)
            return
        previous(exc_type, exc, tb)
        try:
            line = cause_line(exc)
        except Exception:  # the hook must never hide the traceback it follows
            line = None
        if line:
            print(line, file=sys.stderr)

    hook.volseg_cause_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True


if under_monai_bundle():
    install()
