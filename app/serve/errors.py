"""The error type of ``volseg serve``: a refused request and the HTTP status to answer with."""

from __future__ import annotations


class DatastoreError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status to answer with.

    Example:
        >>> DatastoreError("unknown image 'X'", 404).status
        404
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
