"""A bundle inference workflow (``python -m monai.bundle run``) that goes on past a bad case.

MONAI's ``Dataset`` raises from the ``DataLoader`` when one case cannot be read or preprocessed,
and ``SupervisedEvaluator`` stops there: in a folder of 100 cases, one truncated file loses the
other 99. :class:`CaseSkippingDataset` reads the cases in order, logs a case that fails with its
files and the reason, goes on with the next, and :meth:`CaseSkippingDataset.raise_failures` (the
workflow's last ``run`` step) ends the run with an error that lists them, after every other case
is written, so that the exit status is not 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from monai.transforms import apply_transform

from app.data.cases import case_id_from_path

logger = logging.getLogger(__name__)


def _files(item: Any) -> list[str]:
    """The image files of a datalist item (one file or a list per channel; None for a missing one left out)."""
    image = item.get("image") if isinstance(item, dict) else item
    return [str(f) for f in (image if isinstance(image, (list, tuple)) else [image]) if f]


def _reason(error: BaseException) -> str:
    """The message of the error a transform raised: MONAI's ``apply_transform`` wraps it (``InputError:
    file ... is truncated``) in "applying transform ..." RuntimeErrors, whose causes are followed
    down to the first other error (not further: its own cause is a detail, e.g. zlib's EOFError)."""
    while error.__cause__ is not None and isinstance(error, RuntimeError) and "applying transform" in str(error):
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


class CaseSkippingDataset(torch.utils.data.IterableDataset):
    """The cases of an inference run, each through ``transform``; a case whose transform raises is
    logged and skipped, not the end of the run.

    Args:
        data: the datalist (dicts with ``"image"``: one file or a list of files per channel).
        transform: the preprocessing (a MONAI ``Compose``); its output per case is yielded.

    It has no ``len()`` on purpose: MONAI's ``SupervisedEvaluator`` then runs until the cases
    run out (with a length, Ignite restarts the iterator when a skipped case leaves the epoch
    short and segments the first cases again). ``failed`` holds ``(case, files, reason)`` of the cases skipped in the last pass. Use with a
    ``DataLoader`` of ``num_workers=0`` (a worker process would keep its own ``failed``).
    """

    def __init__(self, data: Sequence[Any], transform: Callable[[Any], Any]) -> None:
        super().__init__()
        self.data = list(data)
        self.transform = transform
        self.failed: list[tuple[str, str, str]] = []

    def __iter__(self) -> Iterator[Any]:
        self.failed = []
        for item in self.data:
            try:
                out = apply_transform(self.transform, item)
            except Exception as error:  # noqa: BLE001 - any failure of one case's reading is that case's
                files = _files(item)
                name = case_id_from_path(files[0]) if files else repr(item)[:80]
                self.failed.append((name, ", ".join(files), _reason(error)))
                logger.error("case %s failed and is skipped (the other cases go on): %s [%s]", name, self.failed[-1][2], self.failed[-1][1])
                continue
            yield out

    def raise_failures(self) -> None:
        """End the run with an error where a case was skipped.

        Raises:
            app.errors.CasesFailedError: (a RuntimeError) naming each skipped case, its reason
                and files, and how many cases were written.
        """
        if self.failed:
            from app.errors import CasesFailedError

            cases = "; ".join(f"{name}: {reason} [{files}]" for name, files, reason in self.failed)
            raise CasesFailedError(f"{len(self.failed)} of {len(self.data)} case(s) failed and were skipped; the other "
                               f"{len(self.data) - len(self.failed)} were segmented and written. Failed: {cases}")
