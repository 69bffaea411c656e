"""`kindred keys` and the dev admin key as a user meets them: the real console script."""

import asyncio
import contextlib
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import KeyStore, Scope
from app.embedded import free_port
from app.mongo import Document
from tests.fixtures.cli import KINDRED, clean_env, run_kindred

SECRET = re.compile(r"kdk_[A-Za-z0-9_-]{43}")


async def test_create_prints_a_secret_that_verifies(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    result = await run_kindred(
        cli_env, "keys", "create", "--name", "ci", "--scope", "profiles:read", "--scope", "admin"
    )
    assert result.returncode == 0, result.stderr
    secret = result.stdout.splitlines()[-1]
    assert SECRET.fullmatch(secret)
    assert "will not be shown again" in result.stdout
    key = await KeyStore(db).verify(secret)
    assert key is not None
    assert key.name == "ci"
    assert key.scopes == {Scope.PROFILES_READ, Scope.ADMIN}
    assert key.id in result.stdout


async def test_list_shows_keys_but_never_secrets(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    key, secret = await KeyStore(db).create(name="billing-sync", scopes=[Scope.PROFILES_WRITE])
    raw = await db["api_keys"].find_one({"_id": key.id})
    assert raw is not None
    result = await run_kindred(cli_env, "keys", "list")
    assert result.returncode == 0, result.stderr
    assert "billing-sync" in result.stdout
    assert key.id in result.stdout
    assert "profiles:write" in result.stdout
    assert secret not in result.stdout
    assert raw["hash"] not in result.stdout


async def test_revoke_makes_the_key_stop_verifying(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    key, secret = await KeyStore(db).create(name="leaving", scopes=[Scope.PROFILES_READ])
    result = await run_kindred(cli_env, "keys", "revoke", key.id)
    assert result.returncode == 0, result.stderr
    assert await KeyStore(db).verify(secret) is None
    listed = await run_kindred(cli_env, "keys", "list")
    assert re.search(rf"{key.id}.*\d{{4}}-\d\d-\d\d.*\d{{4}}-\d\d-\d\d", listed.stdout)


async def test_revoking_an_unknown_key_exits_1(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    result = await run_kindred(cli_env, "keys", "revoke", "key_0000000000000000")
    assert result.returncode == 1
    assert "key_0000000000000000" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_a_bad_scope_names_the_allowed_scopes(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    result = await run_kindred(
        cli_env, "keys", "create", "--name", "ci", "--scope", "profiles:delete"
    )
    assert result.returncode == 2
    assert "profiles:delete" in result.stderr
    assert all(scope.value in result.stderr for scope in Scope)
    assert "Traceback" not in result.stderr + result.stdout
    assert await KeyStore(db).list() == []


async def test_a_bad_name_is_refused_before_any_key_exists(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    result = await run_kindred(cli_env, "keys", "create", "--name", "x" * 101, "--scope", "admin")
    assert result.returncode == 2
    assert "1 to 100" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert await KeyStore(db).list() == []


def test_every_keys_option_has_help() -> None:
    wide = clean_env(COLUMNS="200")
    for command in ("create", "list", "revoke"):
        text = subprocess.run(
            [KINDRED, "keys", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
            env=wide,
        ).stdout
        helps = dict(
            re.findall(r"^│\s+\*?\s*(--[a-z-]+)\s+<[^>]+>\s+(.*?)\s*│$", text, re.MULTILINE)
        )
        assert {"--mongodb-uri", "--data-dir", "--database"} <= set(helps), text
        assert all(len(h) > 10 for h in helps.values()), helps
        if command == "revoke":
            assert "The id of the key to revoke" in text


async def serve_until_ready(env: dict[str, str], log: Path) -> str:
    """Runs `kindred serve` until it is ready, stops it, and returns what it printed."""
    port = free_port()
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            KINDRED, "serve", "--port", str(port), env=env, stdout=sink, stderr=sink
        )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    ready = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    if ready.status_code == 200:
                        return await asyncio.to_thread(log.read_text)
                await asyncio.sleep(0.1)
        printed = await asyncio.to_thread(log.read_text)
        pytest.fail(f"kindred serve did not become ready:\n{printed}")
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 30)


async def test_serve_in_dev_prints_an_admin_key_once(
    cli_env: dict[str, str], db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    dev = cli_env | {"KINDRED_ENV": "dev"}
    first = await serve_until_ready(dev, tmp_path / "first.log")
    [secret] = SECRET.findall(first)
    assert "local-admin" in first
    key = await KeyStore(db).verify(secret)
    assert key is not None
    assert key.allows(Scope.ADMIN)
    second = await serve_until_ready(dev, tmp_path / "second.log")
    assert not SECRET.findall(second), "an admin key exists, so none is printed again"


async def test_serve_in_prod_creates_no_key(
    cli_env: dict[str, str], db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    printed = await serve_until_ready(cli_env | {"KINDRED_ENV": "prod"}, tmp_path / "prod.log")
    assert not SECRET.findall(printed)
    assert await KeyStore(db).list() == []
