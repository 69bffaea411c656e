"""Kindred's error base, shared by every domain package, and the profile store's errors."""

from http import HTTPStatus


class KindredError(Exception):
    """An expected failure with a stable code and the HTTP status that renders it."""

    code = "error"
    status = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, *, status: HTTPStatus | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
