"""Renders docs/admin-comparison.png: the console's comparison page, in Debian's chromium.

Run from the repository root: `.venv/bin/python -m scripts.admin_screenshot`.
It starts an in-memory database and a server of its own, seeds two look-alike
profiles and a suggestion, logs in and takes the screenshot; nothing else is touched.
"""

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright
from pymongo import AsyncMongoClient

from app.auth import KeyStore, Scope
from app.embedded import MEMORY, EmbeddedServer
from identity.store import Proposal, SuggestionStatus, SuggestionStore
from tests.conftest import LiveServer, make_settings
from tests.fixtures.factories import T0, seed_profile

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "admin-comparison.png"
DATABASE = "kindred_screenshot"
EVIDENCE = (
    {"field": "phone", "level": "exact", "weight": 8.2},
    {"field": "surname", "level": "exact", "weight": 6.3},
    {"field": "birth_date", "level": "exact", "weight": 5.6},
    {"field": "given_name", "level": "exact", "weight": 4.1},
    {"field": "postcode", "level": "exact", "weight": 3.4},
    {"field": "email", "level": "different", "weight": -2.1},
)


async def seed(uri: str) -> tuple[str, str]:
    """Creates the two profiles, the suggestion and an admin key; returns (suggestion, secret)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[DATABASE]
        a = await seed_profile(
            db,
            {"email": "ada.lovelace@example.com"},
            {
                "name": "Ada Lovelace",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada.lovelace@example.com",
                "phone": "+44 20 7946 0958",
                "birthday": "1815-12-10",
                "city": "London",
                "postcode": "W1 2AB",
                "plan": "pro",
            },
            source="web",
        )
        b = await seed_profile(
            db,
            {"email": "a.lovelace@example.org"},
            {
                "name": "Ada LOVELACE",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "a.lovelace@example.org",
                "phone": "+44 20 7946 0958",
                "birthday": "1815-12-10",
                "city": "London",
                "postcode": "w1 2ab",
                "loyalty_tier": "gold",
            },
            source="crm",
            at=T0 + timedelta(days=12, hours=3),
        )
        store = SuggestionStore(db)
        await store.record([Proposal(a, b, 0.962, EVIDENCE)], source="dedupe", now=T0)
        [suggestion], _ = await store.page(status=SuggestionStatus.OPEN, min_score=0, first=1)
        _, secret = await KeyStore(db).create(name="docs-admin", scopes=[Scope.ADMIN])
        return suggestion.id, secret
    finally:
        await client.close()


def main() -> None:
    """Takes the screenshot."""
    with EmbeddedServer(MEMORY) as database:
        suggestion, secret = asyncio.run(seed(database.uri))
        server = LiveServer(make_settings(database.uri, DATABASE))
        server.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    headless=True,
                    args=["--no-sandbox", "--headless=new"],
                )
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                page.goto(f"{server.url}/admin/suggestions/{suggestion}")
                page.get_by_label("Admin API key").fill(secret)
                page.get_by_role("button", name="Log in").click()
                page.get_by_role("heading", name="Compare profiles").wait_for()
                # Again, without the "logged in" message.
                page.reload()
                page.screenshot(path=OUTPUT, full_page=True)
                browser.close()
        finally:
            server.stop()
    sys.stderr.write(f"wrote {OUTPUT}\n")


if __name__ == "__main__":
    main()
