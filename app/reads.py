"""The template-friendly REST read: one profile's fields as flat JSON, cacheable."""

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.auth import ProfilesReadKey
from app.deps import State
from identity.normalize import identity_key
from profiles import traits as trait_rules
from profiles.errors import ProfileNotFound
from profiles.graphql import to_json

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])

NOT_FOUND = {"description": "No profile has that identifier.", "content": {"application/json": {}}}


@router.get(
    "/{kind}/{value}",
    summary="A profile's fields as flat JSON, for send-time template lookups.",
    responses={
        304: {"description": "Unchanged since the ETag given in If-None-Match."},
        404: NOT_FOUND,
    },
)
async def read_profile(
    kind: str,
    value: str,
    request: Request,
    state: State,
    _key: ProfilesReadKey,
    fields: Annotated[
        str | None,
        Query(description="Comma-separated trait keys; all traits when absent."),
    ] = None,
) -> Response:
    """Returns `{"id", <trait>: <value>…}` for the person with that identifier."""
    keys = None
    if fields is not None:
        keys = [trait_rules.check_key(f.strip()) for f in fields.split(",") if f.strip()]
    key = identity_key(kind, value)
    found = (await state.identities.profiles_for([key], trait_keys=keys)).get(key)
    if found is None:
        raise ProfileNotFound(f"no profile has that {kind}")
    profile = found
    if found.merged_into is not None:
        profile = await state.profiles.get(found.merged_into, trait_keys=keys)
    traits = profile.traits
    body: dict[str, Any] = {"id": profile.id}
    wanted = keys if keys is not None else list(traits)
    body.update({k: to_json(traits[k].value) if k in traits else None for k in wanted})
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    etag = '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={state.settings.read_cache_seconds}",
        "Vary": "Authorization",
    }
    if etag in _etags(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type="application/json", headers=headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
