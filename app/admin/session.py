"""The console's session and its protection against cross-site requests.

The session cookie holds the admin's API key secret and nothing else. Each
request verifies it again through the app's `Authenticator`, whose in-process
cache makes that a dictionary lookup, so a revoked key stops working in the
console within the cache's 30 s like everywhere else, and no session state
lives on the server. The cookie is HttpOnly (no script reads it), SameSite=Strict
(no other site's page sends it), scoped to `/admin`, and Secure over https.

Every POST must also pass two checks: the browser's `Origin` (else `Referer`)
names this host, and the form carries a token derived from the session secret
with HMAC, which a page on another site can neither read nor compute.
"""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fastapi import Request, Response

from app.auth import ApiKey, Scope, Unauthorized
from identity.merge import Actor

PREFIX = "/admin"
SESSION_COOKIE = "kindred_admin"
FLASH_COOKIE = "kindred_admin_flash"
# A working day; closing the browser does not end a session that some browsers restore.
SESSION_SECONDS = 8 * 3600
_CSRF_CONTEXT = b"kindred-admin-csrf-v1"

FlashLevel = Literal["success", "error"]


class LoginRequired(Exception):
    """The request carries no usable admin session; the console answers with the login page."""


class CrossSiteRequest(Exception):
    """A POST whose origin or form token does not prove it came from a console page."""


@dataclass(frozen=True)
class Session:
    """A logged-in admin: the API key and the form token of this session."""

    key: ApiKey
    csrf: str

    @property
    def actor(self) -> Actor:
        """Returns the admin as the merge ledger and the audit log record them."""
        return Actor.admin(self.key.id, self.key.name)


def csrf_token(secret: str) -> str:
    """Returns the form token of a session: an HMAC of a fixed context under the secret."""
    return hmac.new(secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


async def admin_key(request: Request, secret: str) -> ApiKey | None:
    """Returns the key of an admin secret, or None if it is unknown, revoked or not admin."""
    try:
        key = await request.app.state.kindred.authenticator.authenticate(f"Bearer {secret}")
    except Unauthorized:
        return None
    return key if isinstance(key, ApiKey) and key.allows(Scope.ADMIN) else None


async def current_session(request: Request) -> Session:
    """Returns the request's admin session, or raises `LoginRequired`."""
    secret = request.cookies.get(SESSION_COOKIE, "")
    key = await admin_key(request, secret) if secret else None
    if key is None:
        raise LoginRequired
    return Session(key=key, csrf=csrf_token(secret))


def same_origin(request: Request) -> bool:
    """Tells whether the browser says the request comes from a page of this host.

    Browsers send `Origin` with every POST; `Referer` is the fallback some
    privacy settings leave. The host is compared, not the scheme, so a proxy
    that ends TLS in front of Kindred does not lock admins out.
    """
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    host = request.headers.get("host", "")
    return bool(host) and urlsplit(claimed).netloc.lower() == host.lower()


def check_post(request: Request, session: Session | None, token: str) -> None:
    """Raises `CrossSiteRequest` unless a POST comes from this host with the session's token."""
    if not same_origin(request):
        raise CrossSiteRequest("the request does not come from a page of this console")
    if session is not None and not hmac.compare_digest(token, session.csrf):
        raise CrossSiteRequest("the form is out of date or was not sent by this console")


def safe_next(target: str | None) -> str:
    """Returns where to go after login: a console path, never another site."""
    if (
        not target
        or not (target == PREFIX or target.startswith((f"{PREFIX}/", f"{PREFIX}?")))
        or "\\" in target
        or any(ord(c) < 0x20 for c in target)
    ):
        return PREFIX
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return PREFIX
    return target


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(request: Request, response: Response, secret: str) -> None:
    """Sets the session cookie on a response."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=SESSION_SECONDS,
        path=PREFIX,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def end_session(request: Request, response: Response) -> None:
    """Removes the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE, path=PREFIX, secure=_secure(request), httponly=True, samesite="strict"
    )


def flash(request: Request, response: Response, level: FlashLevel, text: str) -> None:
    """Leaves an outcome message for the next page the browser shows."""
    encoded = base64.urlsafe_b64encode(json.dumps({"level": level, "text": text}).encode())
    response.set_cookie(
        FLASH_COOKIE,
        encoded.decode(),
        max_age=300,
        path=PREFIX,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def pending_flash(request: Request) -> tuple[FlashLevel, str] | None:
    """Returns the outcome message the previous response left, if any."""
    raw = request.cookies.get(FLASH_COOKIE)
    if raw is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return None
    level: FlashLevel = "error" if data.get("level") == "error" else "success"
    return level, data["text"]


def clear_flash(request: Request, response: Response) -> None:
    """Removes the outcome message once a page has shown it."""
    response.delete_cookie(
        FLASH_COOKIE, path=PREFIX, secure=_secure(request), httponly=True, samesite="strict"
    )
