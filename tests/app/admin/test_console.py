"""The admin console over HTTP: login, pages, search, review decisions, undo, CSRF, escaping."""

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from app.admin import routes
from app.auth import KeyStore, Scope
from identity.merge import Actor
from identity.store import Proposal, SuggestionStatus, SuggestionStore
from tests.conftest import http_client
from tests.fixtures.factories import LOOK_ALIKE_EVIDENCE as EVIDENCE
from tests.fixtures.factories import seed_look_alikes, seed_profile

Db = AsyncDatabase[dict[str, Any]]

ORIGIN = "http://kindred.test"
SAME_ORIGIN = {"origin": ORIGIN}
NOW = datetime(2026, 2, 1, tzinfo=UTC)
# A row of the comparison table: its trait key, then the rest of the row.
COMPARISON_ROW = re.compile(
    r'<tr class="row-[^"]+">\s*<th scope="row"><code>(\w+)</code>(.*?)</tr>', re.S
)


def secret_of(headers: dict[str, str]) -> str:
    """Returns the API key secret an `Authorization` header carries."""
    return headers["authorization"].removeprefix("Bearer ")


async def log_in(client: httpx.AsyncClient, secret: str) -> None:
    """Logs the client in to the console."""
    response = await client.post("/admin/login", data={"key": secret}, headers=SAME_ORIGIN)
    assert response.status_code == 303, response.text
    assert client.cookies.get("kindred_admin") == secret


def csrf_of(html: str) -> str:
    """Returns the form token a console page carries."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no form token"
    return found.group(1)


@pytest.fixture
async def admin(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> httpx.AsyncClient:
    """The test client, logged in to the console with an admin key."""
    await log_in(client, secret_of(admin_headers))
    return client


# --- Login and sessions ---------------------------------------------------------------------


async def test_login_refuses_an_unknown_key(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/admin/login", data={"key": "kdk_" + "x" * 43}, headers=SAME_ORIGIN
    )
    assert response.status_code == 401
    assert "not valid" in response.text
    assert "kindred_admin" not in client.cookies


async def test_login_refuses_a_key_without_the_admin_scope(
    client: httpx.AsyncClient, db: Db
) -> None:
    _, secret = await KeyStore(db).create(name="reader", scopes=[Scope.PROFILES_READ])
    response = await client.post("/admin/login", data={"key": secret}, headers=SAME_ORIGIN)
    assert response.status_code == 403
    assert "lacks the admin scope" in response.text
    assert "kindred_admin" not in client.cookies


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/suggestions",
        "/admin/suggestions/sug_a_b",
        "/admin/profiles?q=ada",
        "/admin/profiles/prf_01JD0000000000000000000000",
        "/admin/audit",
    ],
)
async def test_console_pages_redirect_to_login_without_a_session(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 303
    location = httpx.URL(response.headers["location"])
    assert location.path == "/admin/login"
    assert location.params["next"] == path


async def test_a_stale_session_cookie_sends_to_login_and_is_cleared(
    client: httpx.AsyncClient,
) -> None:
    client.cookies.set("kindred_admin", "kdk_" + "y" * 43, domain="kindred.test", path="/admin")
    response = await client.get("/admin/suggestions")
    assert response.status_code == 303
    assert "kindred_admin=" in response.headers["set-cookie"]
    assert "kindred_admin" not in client.cookies


async def test_login_sets_a_strict_http_only_cookie_scoped_to_the_console(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/admin/login",
        data={"key": secret_of(admin_headers), "next": "/admin/audit"},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/audit"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("kindred_admin=")
    )
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/admin"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    page = await client.get("/admin/audit")
    assert page.status_code == 200
    assert "Logged in as test-admin" in page.text


async def test_the_session_cookie_is_secure_over_https(
    app: FastAPI, admin_headers: dict[str, str]
) -> None:
    async with http_client(app) as client:
        client.base_url = httpx.URL("https://kindred.test")
        response = await client.post(
            "/admin/login",
            data={"key": secret_of(admin_headers)},
            headers={"origin": "https://kindred.test"},
        )
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower()


async def test_login_never_redirects_to_another_site(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for target in ("//evil.test/admin", "https://evil.test/admin", "/elsewhere", "/admin\\x"):
        response = await client.post(
            "/admin/login",
            data={"key": secret_of(admin_headers), "next": target},
            headers=SAME_ORIGIN,
        )
        assert response.headers["location"] == "/admin", target


async def test_logout_ends_the_session(admin: httpx.AsyncClient) -> None:
    page = await admin.get("/admin/suggestions")
    response = await admin.post(
        "/admin/logout", data={"csrf": csrf_of(page.text)}, headers=SAME_ORIGIN
    )
    assert response.status_code == 303
    assert "kindred_admin" not in admin.cookies
    assert (await admin.get("/admin/suggestions")).status_code == 303
    login = await admin.get("/admin/login")
    assert "Logged out." in login.text


async def test_pages_carry_security_headers(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/admin/suggestions")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


async def test_the_stylesheet_is_served_without_login(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/static/admin.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert (await client.get("/admin/static/../routes.py")).status_code == 404


# --- CSRF -----------------------------------------------------------------------------------


async def test_a_post_from_another_origin_is_refused(admin: httpx.AsyncClient, db: Db) -> None:
    _, _, sid = await seed_look_alikes(db)
    token = csrf_of((await admin.get(f"/admin/suggestions/{sid}")).text)
    form = {"csrf": token, "reason": "not them", "confirmed": "yes"}
    refused = [
        await admin.post(f"/admin/suggestions/{sid}/reject", data=form, headers=headers)
        for headers in (
            {"origin": "http://evil.test"},
            {"referer": "http://evil.test/page"},
            {},  # neither Origin nor Referer: nothing proves where it came from
        )
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert "Refused" in refused[0].text
    suggestion = await SuggestionStore(db).get(sid)
    assert suggestion is not None
    assert suggestion.status is SuggestionStatus.OPEN


async def test_a_post_without_the_session_token_is_refused(
    admin: httpx.AsyncClient, db: Db
) -> None:
    _, _, sid = await seed_look_alikes(db)
    form = {"csrf": "0" * 64, "reason": "not them", "confirmed": "yes"}
    response = await admin.post(f"/admin/suggestions/{sid}/reject", data=form, headers=SAME_ORIGIN)
    assert response.status_code == 403
    suggestion = await SuggestionStore(db).get(sid)
    assert suggestion is not None
    assert suggestion.status is SuggestionStatus.OPEN


async def test_a_login_post_from_another_origin_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/admin/login",
        data={"key": secret_of(admin_headers)},
        headers={"origin": "http://evil.test"},
    )
    assert response.status_code == 403
    assert "kindred_admin" not in client.cookies


# --- Queue and comparison -------------------------------------------------------------------


async def test_the_queue_lists_suggestions_best_first_with_both_people(
    admin: httpx.AsyncClient, db: Db
) -> None:
    ids = [await seed_profile(db, {"crm_id": f"c{n}"}, {"name": f"Person {n}"}) for n in range(4)]
    await SuggestionStore(db).record(
        [Proposal(ids[0], ids[1], 0.91, EVIDENCE), Proposal(ids[2], ids[3], 0.99, EVIDENCE)],
        source="dedupe",
        now=NOW,
    )
    page = (await admin.get("/admin/suggestions")).text
    assert page.index("0.990") < page.index("0.910")
    for n in range(4):
        assert f"Person {n}" in page
    filtered = (await admin.get("/admin/suggestions?min_score=0.95")).text
    assert "0.990" in filtered
    assert "0.910" not in filtered
    merged = (await admin.get("/admin/suggestions?status=merged")).text
    assert "No merged suggestions" in merged


async def test_the_queue_pages_with_a_next_link(
    admin: httpx.AsyncClient, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "PAGE_SIZE", 1)
    ids = [await seed_profile(db, {"crm_id": f"c{n}"}, {"name": f"Person {n}"}) for n in range(4)]
    await SuggestionStore(db).record(
        [Proposal(ids[0], ids[1], 0.91, EVIDENCE), Proposal(ids[2], ids[3], 0.99, EVIDENCE)],
        source="dedupe",
        now=NOW,
    )
    first = (await admin.get("/admin/suggestions")).text
    assert "0.990" in first
    assert "0.910" not in first
    next_link = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert next_link
    second = (await admin.get(next_link.group(1).replace("&amp;", "&"))).text
    assert "0.910" in second
    assert "0.990" not in second
    assert 'rel="next"' not in second


async def test_a_bad_filter_is_explained_not_a_500(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/admin/suggestions?min_score=lots")
    assert response.status_code == 422
    assert "number from 0 to 1" in response.text


async def test_the_comparison_shows_agreement_evidence_and_the_rules_survivor(
    admin: httpx.AsyncClient, db: Db
) -> None:
    a, b, sid = await seed_look_alikes(db)
    page = (await admin.get(f"/admin/suggestions/{sid}")).text
    rows = dict(COMPARISON_ROW.findall(page))
    # Same name up to case and spaces; different emails; a city and a phone on one side each.
    assert "Same" in rows["name"]
    assert "Different" in rows["email"]
    assert "Only A" in rows["city"]
    assert "Only B" in rows["phone"]
    assert "crm" in rows["phone"]  # each value shows its source
    assert "Legend" in page
    assert "+5.20" in page
    assert "for a match" in page
    assert "against a match" in page
    # No user ids: the older profile (the smaller id) survives by default.
    assert re.search(rf'value="{min(a, b)}" checked', page)


async def test_an_unknown_suggestion_is_a_404_page(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/admin/suggestions/sug_nope")
    assert response.status_code == 404
    assert "No merge suggestion has that id" in response.text


async def test_a_suggestion_whose_profile_was_merged_since_shows_the_survivor(
    admin: httpx.AsyncClient, app: FastAPI, db: Db
) -> None:
    a, b, sid = await seed_look_alikes(db)
    c = await seed_profile(db, {"crm_id": "c9"}, {"name": "Ada L."})
    await app.state.kindred.merges.merge(
        survivor_id=c, merged_id=b, actor=Actor.admin("key_x", "x"), reason="same crm person"
    )
    page = (await admin.get(f"/admin/suggestions/{sid}")).text
    assert f"Profile B (<code>{b}</code>) was merged into" in page
    assert f'value="{c}"' in page  # the merge would now join a and c


# --- Decisions ------------------------------------------------------------------------------


async def test_not_the_same_person_needs_a_reason_and_a_confirmation(
    admin: httpx.AsyncClient, db: Db
) -> None:
    _, _, sid = await seed_look_alikes(db)
    token = csrf_of((await admin.get(f"/admin/suggestions/{sid}")).text)
    url = f"/admin/suggestions/{sid}/reject"
    missing = await admin.post(url, data={"csrf": token, "reason": "  "}, headers=SAME_ORIGIN)
    assert missing.status_code == 422
    assert "Give a reason" in missing.text
    asked = await admin.post(
        url, data={"csrf": token, "reason": "different birthdays"}, headers=SAME_ORIGIN
    )
    assert asked.status_code == 200
    assert "Confirm: not the same person" in asked.text
    store = SuggestionStore(db)
    suggestion = await store.get(sid)
    assert suggestion is not None
    assert suggestion.status is SuggestionStatus.OPEN
    done = await admin.post(
        url,
        data={"csrf": token, "reason": "different birthdays", "confirmed": "yes"},
        headers=SAME_ORIGIN,
    )
    assert done.status_code == 303
    suggestion = await store.get(sid)
    assert suggestion is not None
    assert suggestion.status is SuggestionStatus.REJECTED
    queue = (await admin.get(done.headers["location"])).text
    assert "as not the same person" in queue
    audit = (await admin.get("/admin/audit")).text
    assert "reject suggestion" in audit
    assert "different birthdays" in audit


async def test_merge_then_undo_gives_both_profiles_back(admin: httpx.AsyncClient, db: Db) -> None:
    a, b, sid = await seed_look_alikes(db)
    token = csrf_of((await admin.get(f"/admin/suggestions/{sid}")).text)
    asked = await admin.post(
        f"/admin/suggestions/{sid}/merge", data={"csrf": token, "survivor": b}, headers=SAME_ORIGIN
    )
    assert "Confirm merge" in asked.text
    merged = await admin.post(
        f"/admin/suggestions/{sid}/merge",
        data={"csrf": token, "survivor": b, "confirmed": "yes"},
        headers=SAME_ORIGIN,
    )
    assert merged.status_code == 303
    assert merged.headers["location"] == f"/admin/profiles/{b}"
    profile = (await admin.get(f"/admin/profiles/{b}")).text
    assert f"Merged {a} into {b}" in profile
    assert "ada@example.com" in profile
    assert "ada.lovelace@example.org" in profile
    tombstone = (await admin.get(f"/admin/profiles/{a}")).text
    assert "This profile was merged into" in tombstone
    merge_id = re.search(r'action="/admin/merges/(mrg_\w+)/undo"', profile)
    assert merge_id
    undo = f"/admin/merges/{merge_id.group(1)}/undo"
    no_reason = await admin.post(undo, data={"csrf": token, "reason": ""}, headers=SAME_ORIGIN)
    assert no_reason.status_code == 422
    done = await admin.post(
        undo, data={"csrf": token, "reason": "two people", "confirmed": "yes"}, headers=SAME_ORIGIN
    )
    assert done.status_code == 303
    after = (await admin.get(done.headers["location"])).text
    assert "are two profiles again" in after
    for email, pid in (("ada@example.com", a), ("ada.lovelace@example.org", b)):
        found = (await admin.get("/admin/profiles", params={"q": email})).text
        assert pid in found
        assert (a if pid == b else b) not in found


async def test_a_refused_merge_is_explained_in_words(admin: httpx.AsyncClient, db: Db) -> None:
    a = await seed_profile(db, {"user_id": "u1"}, {"name": "Sam Smith"})
    b = await seed_profile(db, {"user_id": "u2"}, {"name": "Sam Smith"})
    await SuggestionStore(db).record([Proposal(a, b, 0.97, EVIDENCE)], source="dedupe", now=NOW)
    [suggestion], _ = await SuggestionStore(db).page(
        status=SuggestionStatus.OPEN, min_score=0, first=1
    )
    token = csrf_of((await admin.get(f"/admin/suggestions/{suggestion.id}")).text)
    response = await admin.post(
        f"/admin/suggestions/{suggestion.id}/merge",
        data={"csrf": token, "survivor": a, "confirmed": "yes"},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 409
    assert "different user ids" in response.text
    assert "different_user_ids" in response.text
    audit = (await admin.get("/admin/audit")).text
    assert "refused: different user ids" in audit


# --- Search and the profile page ------------------------------------------------------------


async def test_search_finds_a_profile_by_email(admin: httpx.AsyncClient, db: Db) -> None:
    pid = await seed_profile(db, {"email": "ada@example.com"}, {"name": "Ada Lovelace"})
    other = await seed_profile(db, {"email": "grace@example.com"}, {"name": "Grace Hopper"})
    for q in ("ada@example.com", "email:Ada@Example.com", " ADA@example.com "):
        page = (await admin.get("/admin/profiles", params={"q": q})).text
        assert pid in page, q
        assert other not in page, q
    nothing = (await admin.get("/admin/profiles", params={"q": "nobody@example.com"})).text
    assert "No profile found" in nothing


async def test_search_finds_profiles_by_user_id_and_phone(admin: httpx.AsyncClient, db: Db) -> None:
    by_user = await seed_profile(db, {"user_id": "u1"}, {"name": "Ada"})
    by_phone = await seed_profile(db, {"phone": "+442079460958"}, {"name": "Grace"})
    assert by_user in (await admin.get("/admin/profiles", params={"q": "user_id:u1"})).text
    page = (await admin.get("/admin/profiles", params={"q": "phone:+44 20 7946 0958"})).text
    assert by_phone in page


async def test_search_finds_a_profile_by_name(admin: httpx.AsyncClient, db: Db) -> None:
    ada = await seed_profile(db, {"email": "ada@example.com"}, {"name": "Ada Lovelace"})
    split = await seed_profile(
        db, {"email": "al@example.com"}, {"first_name": "Ada", "last_name": "Lovelock"}
    )
    grace = await seed_profile(db, {"email": "grace@example.com"}, {"name": "Grace Hopper"})
    page = (await admin.get("/admin/profiles", params={"q": "ada love"})).text
    assert ada in page
    assert split in page
    assert grace not in page


async def test_search_explains_an_unusable_identifier(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/admin/profiles", params={"q": "phone:not a number"})
    assert response.status_code == 422
    assert "not a valid phone number" in response.text


async def test_search_by_profile_id_opens_the_profile(admin: httpx.AsyncClient, db: Db) -> None:
    pid = await seed_profile(db, {"email": "ada@example.com"})
    response = await admin.get("/admin/profiles", params={"q": pid})
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/profiles/{pid}"


async def test_the_profile_page_shows_traits_with_source_time_and_history(
    admin: httpx.AsyncClient, db: Db
) -> None:
    pid = await seed_profile(
        db, {"email": "ada@example.com"}, {"name": "Ada Lovelace", "city": "London"}, source="crm"
    )
    await seed_profile(db, {"email": "x@example.com"})  # another profile's data stays out
    page = (await admin.get(f"/admin/profiles/{pid}")).text
    row = re.search(r"<code>city</code></th>(.*?)</tr>", page, flags=re.S)
    assert row
    assert "London" in row.group(1)
    assert "crm" in row.group(1)
    assert "2026-01-01 00:00:00 UTC" in row.group(1)
    assert "1 observation" in row.group(1)
    assert "ada@example.com" in page
    assert "This profile took part in no merge" in page


async def test_enrichment_traits_are_marked(admin: httpx.AsyncClient, db: Db) -> None:
    pid = await seed_profile(
        db, {"email": "ada@example.com"}, {"income_band": "C"}, source="enrichment:acme"
    )
    page = (await admin.get(f"/admin/profiles/{pid}")).text
    row = re.search(r'<tr class="enriched">(.*?)</tr>', page, flags=re.S)
    assert row
    assert "income_band" in row.group(1)
    assert ">enrichment<" in row.group(1)


async def test_an_unknown_profile_is_a_404_page(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/admin/profiles/prf_nope")
    assert response.status_code == 404
    assert "no profile with id" in response.text
    assert response.headers["content-type"].startswith("text/html")


# --- Escaping -------------------------------------------------------------------------------


async def test_hostile_trait_values_are_escaped_everywhere(
    admin: httpx.AsyncClient, db: Db
) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    a = await seed_profile(db, {"email": "ada@example.com"}, {"name": hostile, "note": hostile})
    b = await seed_profile(db, {"email": "ada2@example.com"}, {"name": hostile})
    await SuggestionStore(db).record(
        [Proposal(a, b, 0.95, ({"field": hostile, "level": hostile, "weight": 1.0},))],
        source="dedupe",
        now=NOW,
    )
    [suggestion], _ = await SuggestionStore(db).page(
        status=SuggestionStatus.OPEN, min_score=0, first=1
    )
    pages = [
        await admin.get(f"/admin/profiles/{a}"),
        await admin.get("/admin/suggestions"),
        await admin.get(f"/admin/suggestions/{suggestion.id}"),
        await admin.get("/admin/profiles", params={"q": "ada@example.com"}),
        await admin.get("/admin/profiles", params={"q": hostile}),
    ]
    for page in pages:
        assert page.status_code == 200, page.url
        assert "<script>" not in page.text, page.url
        assert "<img src=x" not in page.text, page.url
        assert "&lt;script&gt;" in page.text, page.url
