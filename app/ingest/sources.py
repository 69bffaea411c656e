"""Write keys: where a request carries one, and a verifying cache in front of `SourceStore`."""

import base64
import binascii
import re

from app.auth import VerifiedCache, hash_secret
from app.ingest.errors import InvalidWriteKey
from app.ingest.models import Source
from app.ingest.store import WRITE_KEY_PREFIX, SourceStore

# Loose on length so a future, longer key still parses; strict on alphabet so a
# value that cannot be a write key is refused without a database round trip.
_WRITE_KEY = re.compile(rf"^{WRITE_KEY_PREFIX}[A-Za-z0-9_-]{{20,200}}$")

HOW_TO_SEND = (
    "send the source's write key as the HTTP Basic username with an empty password, "
    "or as `writeKey` in the body"
)


def basic_username(authorization: str | None) -> str | None:
    """Returns the username of a `Basic` Authorization header, or None for any other header."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidWriteKey(f"Malformed Basic Authorization header; {HOW_TO_SEND}.") from None
    # Segment SDKs send `writeKey:`; a password, if any, is ignored.
    return decoded.partition(":")[0]


class SourceAuthenticator:
    """Turns a write key into its `Source`, caching answers in this process.

    A revoked key keeps working here for up to `ttl` seconds (30 by default).
    """

    def __init__(self, store: SourceStore, *, cache: VerifiedCache[Source] | None = None) -> None:
        self._store = store
        self._cache = cache or VerifiedCache[Source]()

    async def authenticate(self, write_key: object) -> Source:
        """Returns the source a write key belongs to, or raises `InvalidWriteKey`."""
        if write_key is None or write_key == "":
            raise InvalidWriteKey(f"Missing write key; {HOW_TO_SEND}.")
        if not isinstance(write_key, str) or not _WRITE_KEY.match(write_key):
            raise InvalidWriteKey(f"Malformed write key; {HOW_TO_SEND}.")
        digest = hash_secret(write_key)
        found, source = self._cache.get(digest)
        if not found:
            source = await self._store.verify(write_key)
            self._cache.put(digest, source)
        if source is None:
            raise InvalidWriteKey(f"Unknown or revoked write key; {HOW_TO_SEND}.")
        return source
