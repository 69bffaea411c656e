"""Kindred's error base, shared by every domain package, and the profile store's errors."""

from collections.abc import Mapping
from http import HTTPStatus
from typing import ClassVar


class KindredError(Exception):
    """An expected failure with a stable code and the HTTP status that renders it."""

    code = "error"
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    # Response headers a failure implies, as a 401 implies `WWW-Authenticate`.
    headers: ClassVar[Mapping[str, str] | None] = None

    def __init__(self, message: str, *, status: HTTPStatus | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidTraitKey(KindredError):
    """A trait key breaks the key rules."""

    code = "invalid_trait_key"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class InvalidTraitValue(KindredError):
    """A trait value is too deep, too big, has a forbidden nested key, or has the wrong type."""

    code = "invalid_trait_value"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class InvalidObservation(KindredError):
    """An observation lacks a usable time or source."""

    code = "invalid_observation"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class ProfileNotFound(KindredError):
    """No profile has that id or identifier."""

    code = "profile_not_found"
    status = HTTPStatus.NOT_FOUND


class InvalidCatalogEntry(KindredError):
    """A trait catalog declaration is malformed."""

    code = "invalid_catalog_entry"
    status = HTTPStatus.UNPROCESSABLE_ENTITY
