"""The admin console's pages and form actions, under `/admin`."""

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from app.admin import session as sessions
from app.admin import views
from app.admin.session import CrossSiteRequest, LoginRequired, Session
from app.auth import Scope, Unauthorized
from app.deps import State
from app.eventlog import EventLog
from app.state import KindredState
from identity import merge as merge_rules
from identity.errors import InvalidIdentifier
from identity.matching import GIVEN_NAME_TRAITS, SURNAME_TRAITS
from identity.service import AuditAction, MergeRefused
from identity.store import Suggestion, SuggestionStatus
from profiles.errors import KindredError, ProfileNotFound
from profiles.models import Profile
from profiles.store import HistoryRow

PAGE_SIZE = 50
SEARCH_LIMIT = 20
HISTORY_INLINE = 10
HISTORY_PAGE = 50
EVENTS_PAGE = 50

# Pages show personal data: no caching, no framing, no script, forms post only here.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
STATIC_FILES = {"admin.css": "text/css; charset=utf-8"}
ERROR_TITLES = {HTTPStatus.NOT_FOUND: "Not found", HTTPStatus.CONFLICT: "Refused"}

templates = Environment(
    loader=PackageLoader("app.admin", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals.update(
    when=views.when,
    display_value=views.display_value,
    shortened=views.shortened,
    is_enrichment=views.is_enrichment,
    display_name=views.display_name,
    display_email=views.display_email,
    agreement_labels=views.AGREEMENT_LABELS,
)


def _query(path: str, **params: object) -> str:
    """Returns a console URL with the given query parameters, leaving out empty ones."""
    given = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return f"{path}?{urlencode(given)}" if given else path


templates.globals["url"] = _query


def render(
    request: Request,
    template: str,
    *,
    session: Session | None,
    status: int = HTTPStatus.OK,
    **context: Any,
) -> HTMLResponse:
    """Renders a page with the pending outcome message, which it then clears."""
    flash = sessions.pending_flash(request)
    body = templates.get_template(template).render(
        session=session, flash=flash, error=context.pop("error", None), **context
    )
    response = HTMLResponse(body, status_code=status)
    if flash is not None:
        sessions.clear_flash(request, response)
    return response


def redirect(url: str) -> RedirectResponse:
    """Returns a 303 to a console page, so the browser follows a POST with a GET."""
    return RedirectResponse(url, status_code=HTTPStatus.SEE_OTHER)


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", session=None, status=status, title=title, message=message)


class ConsoleRoute(APIRoute):
    """A console route: failures become pages (a login, a refusal in words), never JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Returns the handler, wrapped to render failures and to add the security headers."""
        handle = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            response: Response
            try:
                response = await handle(request)
            except LoginRequired:
                # After login the browser comes back here; a form post cannot be replayed,
                # so it goes to the console's start instead.
                target = request.url.path if request.method == "GET" else "/admin"
                if request.method == "GET" and request.url.query:
                    target += f"?{request.url.query}"
                response = redirect(_query("/admin/login", next=sessions.safe_next(target)))
                if sessions.SESSION_COOKIE in request.cookies:
                    sessions.end_session(request, response)
            except CrossSiteRequest as exc:
                response = _error_page(
                    request,
                    HTTPStatus.FORBIDDEN,
                    "Request refused",
                    f"Refused: {exc}. Reload the page and try again.",
                )
            except RequestValidationError:
                response = _error_page(
                    request,
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    "Bad request",
                    "The form or address is malformed. Go back and try again.",
                )
            except KindredError as exc:
                title = ERROR_TITLES.get(exc.status, "Not possible")
                response = _error_page(request, exc.status, title, exc.message)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return console_handler


router = APIRouter(prefix="/admin", route_class=ConsoleRoute, include_in_schema=False)

LoggedIn = Annotated[Session, Depends(sessions.current_session)]


async def posting_session(
    request: Request, session: LoggedIn, csrf: Annotated[str, Form()] = ""
) -> Session:
    """Returns the session of a POST that proves it comes from a console page."""
    sessions.check_post(request, session, csrf)
    return session


Posting = Annotated[Session, Depends(posting_session)]


# --- Static files, login, logout ---------------------------------------------------------


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """Serves the console's stylesheet from the package."""
    if name not in STATIC_FILES:
        raise KindredError(f"No console file {name!r}.", status=HTTPStatus.NOT_FOUND)
    body = (resources.files("app.admin") / "static" / name).read_bytes()
    return Response(
        body,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    """Shows the login form, or goes on if the browser is logged in already."""
    try:
        await sessions.current_session(request)
    except LoginRequired:
        return render(
            request, "login.html", session=None, title="Log in", next=sessions.safe_next(next)
        )
    return redirect(sessions.safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    state: State,
    key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    """Starts a session for an admin API key."""
    sessions.check_post(request, None, "")
    secret = key.strip()
    target = sessions.safe_next(next)

    def refused(status: int, message: str) -> Response:
        return render(
            request,
            "login.html",
            session=None,
            status=status,
            title="Log in",
            next=target,
            error=message,
        )

    if not secret:
        return refused(HTTPStatus.UNPROCESSABLE_ENTITY, "Enter an admin API key.")
    try:
        api_key = await state.authenticator.authenticate(f"Bearer {secret}")
    except Unauthorized:
        return refused(
            HTTPStatus.UNAUTHORIZED,
            "That key is not valid: it is unknown, revoked or mistyped "
            "(Kindred API keys start with kdk_).",
        )
    if not api_key.allows(Scope.ADMIN):
        return refused(
            HTTPStatus.FORBIDDEN,
            f"The key {api_key.name!r} is valid but lacks the admin scope the console needs.",
        )
    response = redirect(target)
    sessions.start_session(request, response, secret)
    sessions.flash(request, response, "success", f"Logged in as {api_key.name}.")
    return response


@router.post("/logout")
async def logout(request: Request, session: Posting) -> Response:
    """Ends the session."""
    response = redirect("/admin/login")
    sessions.end_session(request, response)
    sessions.flash(request, response, "success", "Logged out.")
    return response


@router.get("")
async def home(session: LoggedIn) -> Response:
    """Opens the review queue."""
    return redirect("/admin/suggestions")


# --- The review queue and the comparison ----------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A profile a suggestion names, and the live profile it is now (after merges)."""

    id: str
    profile: Profile | None  # the live profile; None if the id is unknown

    @property
    def moved(self) -> bool:
        """Tells whether the named profile was merged into another since."""
        return self.profile is not None and self.profile.id != self.id


async def _resolve(state: KindredState, ids: Iterable[str]) -> dict[str, Resolved]:
    """Returns each id's live profile, following merges, in one query plus one per tombstone."""
    wanted = list(dict.fromkeys(ids))
    found = await state.profiles.store.get_many(wanted)

    async def live(pid: str) -> Resolved:
        profile = found.get(pid)
        if profile is not None and profile.merged_into is not None:
            try:
                profile = await state.profiles.get(pid)
            except ProfileNotFound:
                profile = None
        return Resolved(pid, profile)

    return {r.id: r for r in await asyncio.gather(*(live(pid) for pid in wanted))}


@dataclass(frozen=True)
class QueueRow:
    """A row of the review queue."""

    suggestion: Suggestion
    a: Resolved
    b: Resolved
    age: str


def _status(text: str) -> SuggestionStatus:
    try:
        return SuggestionStatus(text)
    except ValueError:
        raise KindredError(
            f"Unknown status {text!r}; choose open, merged or rejected.",
            status=HTTPStatus.UNPROCESSABLE_ENTITY,
        ) from None


def _score(text: str) -> float:
    try:
        score = float(text) if text.strip() else 0.0
    except ValueError:
        score = -1.0
    if not 0 <= score <= 1:
        raise KindredError(
            "The minimum score must be a number from 0 to 1.",
            status=HTTPStatus.UNPROCESSABLE_ENTITY,
        )
    return score


@router.get("/suggestions")
async def queue(
    request: Request,
    state: State,
    session: LoggedIn,
    status: str = "open",
    min_score: str = "",
    after: str = "",
) -> Response:
    """Lists merge suggestions, best score first, filtered by status and score."""
    wanted, floor = _status(status), _score(min_score)
    found, more = await state.suggestions.page(
        status=wanted, min_score=floor, first=PAGE_SIZE, after=after or None
    )
    resolved = await _resolve(state, (pid for s in found for pid in s.profiles))
    now = datetime.now(UTC)
    rows = [
        QueueRow(s, resolved[s.profiles[0]], resolved[s.profiles[1]], views.age(s.created_at, now))
        for s in found
    ]
    next_url = (
        _query("/admin/suggestions", status=wanted.value, min_score=min_score, after=found[-1].rank)
        if more and found
        else None
    )
    return render(
        request,
        "suggestions.html",
        session=session,
        title="Merge suggestions",
        section="suggestions",
        rows=rows,
        current=wanted.value,
        statuses=[s.value for s in SuggestionStatus],
        min_score=min_score,
        paged=bool(after),
        next_url=next_url,
    )


async def _suggestion(state: KindredState, sid: str) -> Suggestion:
    found = await state.suggestions.get(sid)
    if found is None:
        raise KindredError(
            merge_rules.RULE_MESSAGES[merge_rules.Rule.SUGGESTION_NOT_FOUND].capitalize() + ".",
            status=HTTPStatus.NOT_FOUND,
        )
    return found


@dataclass(frozen=True)
class Pair:
    """A suggestion with its two profiles as they are now."""

    suggestion: Suggestion
    a: Resolved
    b: Resolved

    @property
    def live(self) -> tuple[Profile, Profile] | None:
        """Returns the two live profiles, or None if one is gone."""
        if self.a.profile is None or self.b.profile is None:
            return None
        return self.a.profile, self.b.profile

    @property
    def already_one(self) -> bool:
        """Tells whether both sides lead to the same profile now."""
        live = self.live
        return live is not None and live[0].id == live[1].id


async def _pair(state: KindredState, sid: str) -> Pair:
    suggestion = await _suggestion(state, sid)
    resolved = await _resolve(state, suggestion.profiles)
    a, b = suggestion.profiles
    return Pair(suggestion, resolved[a], resolved[b])


def _comparison(
    request: Request,
    session: Session,
    pair: Pair,
    *,
    status: int = HTTPStatus.OK,
    error: str | None = None,
    reason: str = "",
    reason_error: str | None = None,
) -> HTMLResponse:
    live = pair.live
    rows = views.compare_traits(live[0].traits, live[1].traits) if live else []
    survivor = views.default_survivor(*live) if live and not pair.already_one else None
    return render(
        request,
        "comparison.html",
        session=session,
        status=status,
        title="Compare profiles",
        section="suggestions",
        pair=pair,
        suggestion=pair.suggestion,
        rows=rows,
        evidence=views.evidence_rows(pair.suggestion.evidence),
        default_survivor=survivor,
        can_decide=pair.suggestion.status is SuggestionStatus.OPEN
        and live is not None
        and not pair.already_one,
        error=error,
        reason=reason,
        reason_error=reason_error,
        max_reason=merge_rules.MAX_REASON,
    )


@router.get("/suggestions/{sid}")
async def comparison(request: Request, state: State, session: LoggedIn, sid: str) -> Response:
    """Shows a suggestion's two profiles side by side, with the match explanation."""
    return _comparison(request, session, await _pair(state, sid))


def _refusal(refused: MergeRefused) -> str:
    return f"Refused: {refused.message} (rule: {refused.rule.value})."


@router.post("/suggestions/{sid}/merge")
async def merge_suggestion(
    request: Request,
    state: State,
    session: Posting,
    sid: str,
    survivor: Annotated[str, Form()] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Asks to confirm, then merges a suggestion's two profiles into the chosen survivor."""
    pair = await _pair(state, sid)
    live = pair.live
    if live is None or pair.already_one or survivor not in {p.id for p in live}:
        return _comparison(
            request,
            session,
            pair,
            status=HTTPStatus.UNPROCESSABLE_ENTITY,
            error="Choose which of the two profiles survives the merge.",
        )
    kept, gone = live if live[0].id == survivor else (live[1], live[0])
    if confirmed != "yes":
        return render(
            request,
            "confirm.html",
            session=session,
            title="Confirm merge",
            section="suggestions",
            heading="Merge these profiles?",
            action=f"/admin/suggestions/{sid}/merge",
            fields={"survivor": survivor},
            facts=[
                ("Keeps", _label(kept)),
                ("Merges away", _label(gone)),
                ("Score", f"{pair.suggestion.score:.3f}"),
            ],
            explanation=f"Every identity, trait observation and event of {gone.id} moves to "
            f"{kept.id}, which stays; {gone.id} then points to it. The merge can be undone "
            "from the profile page.",
            reason=None,
            reason_error=None,
            confirm_label="Confirm merge",
            cancel_url=f"/admin/suggestions/{sid}",
        )
    try:
        record = await state.merges.accept_suggestion(
            sid, actor=session.actor, survivor_id=survivor
        )
    except MergeRefused as refused:
        return _comparison(
            request,
            session,
            await _pair(state, sid),
            status=refused.status,
            error=_refusal(refused),
        )
    response = redirect(f"/admin/profiles/{record.survivor}")
    sessions.flash(
        request,
        response,
        "success",
        f"Merged {record.merged} into {record.survivor} (merge {record.id}). "
        "If that was wrong, undo it under Merges below.",
    )
    return response


def _label(profile: Profile) -> str:
    details = [d for d in (views.display_name(profile), views.display_email(profile)) if d]
    return f"{profile.id} ({', '.join(details)})" if details else profile.id


def _checked_reason(reason: str) -> tuple[str, str | None]:
    """Returns the trimmed reason and the message that refuses it, if any."""
    try:
        return merge_rules.checked_reason(reason, required=True), None
    except ValueError as exc:
        return reason, f"Give a reason: {exc}."


@router.post("/suggestions/{sid}/reject")
async def reject_suggestion(
    request: Request,
    state: State,
    session: Posting,
    sid: str,
    reason: Annotated[str, Form()] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Asks to confirm, then marks a suggestion's profiles as not the same person."""
    pair = await _pair(state, sid)
    reason, problem = _checked_reason(reason)
    if problem is not None or confirmed != "yes":
        a, b = pair.a.profile, pair.b.profile
        return render(
            request,
            "confirm.html",
            session=session,
            status=HTTPStatus.UNPROCESSABLE_ENTITY if problem else HTTPStatus.OK,
            title="Confirm: not the same person",
            section="suggestions",
            heading="Mark as not the same person?",
            action=f"/admin/suggestions/{sid}/reject",
            fields={},
            facts=[
                ("Profile A", _label(a) if a else pair.a.id),
                ("Profile B", _label(b) if b else pair.b.id),
                ("Score", f"{pair.suggestion.score:.3f}"),
            ],
            explanation="The suggestion closes and these two profiles are never merged "
            "automatically again. An admin can still merge them by hand.",
            reason=reason,
            reason_error=problem,
            max_reason=merge_rules.MAX_REASON,
            confirm_label="Confirm: not the same person",
            cancel_url=f"/admin/suggestions/{sid}",
        )
    try:
        await state.merges.reject_suggestion(sid, actor=session.actor, reason=reason)
    except MergeRefused as refused:
        return _comparison(request, session, pair, status=refused.status, error=_refusal(refused))
    response = redirect("/admin/suggestions")
    sessions.flash(
        request,
        response,
        "success",
        f"Marked {pair.a.id} and {pair.b.id} as not the same person; "
        "they will not be suggested or merged automatically again.",
    )
    return response


# --- Profiles -------------------------------------------------------------------------------


@router.get("/profiles")
async def search(request: Request, state: State, session: LoggedIn, q: str = "") -> Response:
    """Finds profiles by identifier (`email:…`, `phone:…`, `user_id:…`, an email) or by name."""
    found: list[tuple[Profile, str | None]] = []
    error = None
    searched = bool(q.strip())
    if searched:
        try:
            query = views.parse_query(q, phone_region=state.settings.phone_default_region)
        except InvalidIdentifier as exc:
            query, error = None, f"Cannot search for that: {exc.message}."
        if isinstance(query, views.ProfileIdQuery):
            return redirect(f"/admin/profiles/{query.profile_id}")
        if isinstance(query, views.IdentifierQuery):
            found = await _by_identifier(state, query)
        elif isinstance(query, views.NameQuery):
            profiles = await state.profiles.store.search_names(
                query.text,
                name_keys=("name",),
                given_keys=GIVEN_NAME_TRAITS,
                surname_keys=SURNAME_TRAITS,
                limit=SEARCH_LIMIT,
            )
            found = [(p, None) for p in profiles]
    return render(
        request,
        "profiles.html",
        session=session,
        status=HTTPStatus.UNPROCESSABLE_ENTITY if error else HTTPStatus.OK,
        title="Profiles",
        section="profiles",
        q=q,
        searched=searched,
        results=found,
        capped=len(found) >= SEARCH_LIMIT,
        error=error,
    )


async def _by_identifier(
    state: KindredState, query: views.IdentifierQuery
) -> list[tuple[Profile, str | None]]:
    """Returns the live profiles holding the identifier, each with the id it was found under."""
    holders = await state.identities.profiles_for(query.keys)
    found: dict[str, tuple[Profile, str | None]] = {}
    for profile in holders.values():
        via = None
        if profile.merged_into is not None:
            via = profile.id
            profile = await state.profiles.get(profile.id)
        found.setdefault(profile.id, (profile, via))
    return list(found.values())


@dataclass(frozen=True)
class TraitRow:
    """A current trait with its latest observations."""

    key: str
    value: Any
    observed_at: datetime
    source: str
    history: list[HistoryRow]
    more: bool


async def _trait_rows(state: KindredState, profile: Profile) -> list[TraitRow]:
    keys = sorted(profile.traits)
    pages = await asyncio.gather(
        *(
            state.profiles.store.history_page(profile.id, key, first=HISTORY_INLINE + 1, after=None)
            for key in keys
        )
    )
    rows = []
    for key, page in zip(keys, pages, strict=True):
        trait = profile.traits[key]
        rows.append(
            TraitRow(
                key,
                trait.value,
                trait.observed_at,
                trait.source,
                page[:HISTORY_INLINE],
                len(page) > HISTORY_INLINE,
            )
        )
    return rows


def _stats(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    shown = []
    for key in ("event_count", "first_seen", "last_seen", "page_views", "orders"):
        value = stats.get(key)
        if value is not None:
            text = views.when(value) if isinstance(value, datetime) else str(value)
            shown.append((key.replace("_", " ").capitalize(), text))
    return shown


@router.get("/profiles/{pid}")
async def profile_page(
    request: Request, state: State, session: LoggedIn, pid: str, events_before: str = ""
) -> Response:
    """Shows a profile: traits with history, identities, events, segments and merges."""
    profile = await state.profiles.get(pid, follow_merges=False)
    survivor = await state.profiles.get(pid) if profile.merged_into is not None else None
    before = views.parse_event_cursor(events_before) if events_before else None
    events_docs, merges, traits = await asyncio.gather(
        EventLog(state.db).recent(pid, first=EVENTS_PAGE, before=before, name=None),
        state.merges.merges_of(pid),
        _trait_rows(state, profile),
    )
    events = [views.event_row(doc) for doc in events_docs]
    older = (
        _query(f"/admin/profiles/{pid}", events_before=views.event_cursor(events[-1]))
        if len(events) == EVENTS_PAGE
        else None
    )
    return render(
        request,
        "profile.html",
        session=session,
        title=f"Profile {pid}",
        section="profiles",
        profile=profile,
        survivor=survivor,
        traits=traits,
        stats=_stats(profile.stats),
        events=events,
        events_paged=bool(events_before),
        older_events=older,
        merges=merges,
        done=merge_rules.MergeStatus.DONE,
        max_reason=merge_rules.MAX_REASON,
    )


@router.get("/profiles/{pid}/history")
async def trait_history(
    request: Request, state: State, session: LoggedIn, pid: str, key: str = "", after: str = ""
) -> Response:
    """Shows every observation of one trait of a profile, newest first."""
    profile = await state.profiles.get(pid, follow_merges=False)
    cursor = views.parse_event_cursor(after) if after else None
    rows = await state.profiles.store.history_page(
        profile.id, key, first=HISTORY_PAGE + 1, after=cursor
    )
    more = len(rows) > HISTORY_PAGE
    rows = rows[:HISTORY_PAGE]
    next_url = None
    if more:
        last = rows[-1]
        next_url = _query(
            f"/admin/profiles/{pid}/history",
            key=key,
            after=f"{last.observation.observed_at.astimezone(UTC).isoformat()}|{last.id}",
        )
    return render(
        request,
        "history.html",
        session=session,
        title=f"History of {key}",
        section="profiles",
        profile=profile,
        key=key,
        rows=rows,
        next_url=next_url,
    )


# --- Undo -----------------------------------------------------------------------------------


@router.post("/merges/{mid}/undo")
async def undo_merge(
    request: Request,
    state: State,
    session: Posting,
    mid: str,
    reason: Annotated[str, Form()] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Asks to confirm, then undoes a merge: both profiles as they would be without it."""
    record = await state.merges.get_merge(mid)
    reason, problem = _checked_reason(reason)
    back = f"/admin/profiles/{record.survivor}"
    facts = [
        ("Merge", record.id),
        ("Kept", record.survivor),
        ("Merged away", record.merged),
        ("Merged at", views.when(record.merged_at)),
        ("By", record.actor.describe()),
    ]

    def confirm(status: int, error: str | None = None) -> HTMLResponse:
        return render(
            request,
            "confirm.html",
            session=session,
            status=status,
            title="Confirm undo",
            section="profiles",
            heading="Undo this merge?",
            action=f"/admin/merges/{mid}/undo",
            fields={},
            facts=facts,
            explanation=f"{record.merged} comes back as a profile of its own with what it "
            "brought; events since the merge go to the side their identifiers point to. "
            "The two are then marked as not the same person.",
            reason=reason,
            reason_error=problem,
            max_reason=merge_rules.MAX_REASON,
            confirm_label="Confirm undo",
            cancel_url=back,
            error=error,
        )

    if problem is not None:
        return confirm(HTTPStatus.UNPROCESSABLE_ENTITY)
    if confirmed != "yes":
        return confirm(HTTPStatus.OK)
    try:
        undone = await state.merges.unmerge(mid, actor=session.actor, reason=reason)
    except MergeRefused as refused:
        return confirm(refused.status, _refusal(refused))
    response = redirect(f"/admin/profiles/{undone.survivor}")
    sessions.flash(
        request,
        response,
        "success",
        f"Undid merge {undone.id}: {undone.merged} and {undone.survivor} are two profiles "
        "again, marked as not the same person.",
    )
    return response


# --- Audit ----------------------------------------------------------------------------------


@router.get("/audit")
async def audit(
    request: Request, state: State, session: LoggedIn, action: str = "", after: str = ""
) -> Response:
    """Lists admin actions, newest first."""
    try:
        wanted = AuditAction(action) if action else None
    except ValueError:
        raise KindredError(
            f"Unknown action {action!r}.", status=HTTPStatus.UNPROCESSABLE_ENTITY
        ) from None
    entries, more = await state.merges.audit(first=PAGE_SIZE, after=after or None, action=wanted)
    next_url = (
        _query("/admin/audit", action=action, after=entries[-1].id) if more and entries else None
    )
    return render(
        request,
        "audit.html",
        session=session,
        title="Audit log",
        section="audit",
        entries=entries,
        action=action,
        actions=[a.value for a in AuditAction],
        paged=bool(after),
        next_url=next_url,
    )
