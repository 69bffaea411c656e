"""Identity errors."""

from http import HTTPStatus

from profiles.errors import KindredError


class InvalidIdentifier(KindredError):
    """An identifier's kind or value is unusable."""

    code = "invalid_identifier"
    status = HTTPStatus.UNPROCESSABLE_ENTITY
