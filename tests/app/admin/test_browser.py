"""The admin console in a real browser: Debian's chromium, driven by Playwright.

`make chromium` (a step of `make test`) installs the browser with apt where it
can. Without a browser these tests skip, loudly: a skip reason naming what is
missing, and a warning in the summary.
"""

import os
import re
import shutil
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import KeyStore, Scope
from tests.conftest import LiveServer
from tests.fixtures.factories import seed_look_alikes

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


class NoBrowserWarning(UserWarning):
    """The browser tests cannot run here."""


# Shown as a warning, not raised as an error, whatever `filterwarnings = error` says.
pytestmark = pytest.mark.filterwarnings(f"always::{__name__}.NoBrowserWarning")

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL_HINT = (
    "install Debian's chromium (`apt-get install --no-install-recommends chromium`, "
    "which `make chromium` runs as root) to run the admin console's browser tests"
)


def _skip_loudly(reason: str) -> NoReturn:
    warnings.warn(reason, NoBrowserWarning, stacklevel=2)
    pytest.skip(reason)


def chromium_path() -> str | None:
    """Returns the chromium executable to drive, if one is installed."""
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
async def browser() -> AsyncIterator["Browser"]:
    """A headless chromium, or a loud skip when none can run here."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _skip_loudly(f"Playwright is not installed (pip install -e '.[dev]'); {INSTALL_HINT}")
    executable = chromium_path()
    if executable is None:
        _skip_loudly(f"No chromium found at {' or '.join(CHROMIUM_PATHS)}; {INSTALL_HINT}")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--headless=new"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def search(page: "Page", text: str) -> str:
    """Searches profiles from the console's search page; returns the results' text."""
    await page.get_by_role("link", name="Profiles").click()
    await page.get_by_label("Identifier or name").fill(text)
    await page.get_by_role("button", name="Search").click()
    return await page.locator("main").inner_text()


async def test_review_merge_and_undo_in_a_browser(
    browser: "Browser",
    live_server: LiveServer,
    db: AsyncDatabase[dict[str, Any]],
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    a, b, _ = await seed_look_alikes(db)
    _, secret = await KeyStore(db).create(name="browser-admin", scopes=[Scope.ADMIN])
    page = await browser.new_page(viewport={"width": 1366, "height": 768})
    page.set_default_timeout(10_000)

    # Any console page asks for a login first, then comes back to it.
    await page.goto(f"{live_server.url}/admin/suggestions")
    await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    await page.get_by_label("Admin API key").fill(secret)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Merge suggestions")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("Logged in as browser-admin")

    # The queue links to the comparison, which highlights agreement in colour and in words.
    await page.get_by_role("link", name=re.compile(r"^Compare")).click()
    await expect(page.get_by_role("heading", name="Compare profiles")).to_be_visible()
    rows = page.locator("table.compare tbody tr")
    name_row = rows.filter(has=page.locator("th code", has_text=re.compile(r"^name$")))
    email_row = rows.filter(has=page.locator("th code", has_text=re.compile(r"^email$")))
    await expect(name_row.locator(".agree")).to_have_text(re.compile(r"Same"))
    await expect(email_row.locator(".agree")).to_have_text(re.compile(r"Different"))
    same_bg = await name_row.locator(".agree").evaluate("e => getComputedStyle(e).backgroundColor")
    diff_bg = await email_row.locator(".agree").evaluate("e => getComputedStyle(e).backgroundColor")
    assert same_bg != diff_bg, "the stylesheet did not load: agreement is not highlighted"
    await expect(page.get_by_text("for a match").first).to_be_visible()
    screenshot = tmp_path / "admin-comparison.png"
    await page.screenshot(path=screenshot, full_page=True)
    assert screenshot.stat().st_size > 10_000

    # Merge, confirmed on a second page; the survivor holds both emails.
    await page.get_by_role("button", name="Merge…").click()
    await expect(page.get_by_role("heading", name="Merge these profiles?")).to_be_visible()
    await page.get_by_role("button", name="Confirm merge").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Merged {b} into {a}")
    identities = page.locator("ul.identities")
    await expect(identities).to_contain_text("ada@example.com")
    await expect(identities).to_contain_text("ada.lovelace@example.org")
    assert a in await search(page, "ada.lovelace@example.org")

    # Undo from the survivor's page, with a reason and a confirmation.
    await page.goto(f"{live_server.url}/admin/profiles/{a}")
    await page.get_by_label("Reason for undoing").fill("Two people: different cities")
    await page.get_by_role("button", name="Undo merge…").click()
    await expect(page.get_by_role("heading", name="Undo this merge?")).to_be_visible()
    await page.get_by_role("button", name="Confirm undo").click()
    await expect(page.get_by_role("status")).to_contain_text("are two profiles again")

    # Both people are back, each found under their own email.
    first = await search(page, "ada@example.com")
    assert a in first
    assert b not in first
    second = await search(page, "ada.lovelace@example.org")
    assert b in second
    assert a not in second
