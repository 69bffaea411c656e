"""`kindred traits` manages the catalog that the write path enforces."""

from pymongo.asynchronous.database import AsyncDatabase

from app.mongo import Document
from profiles.models import TraitType
from profiles.store import ProfileStore
from tests.fixtures.cli import run_kindred


async def test_define_list_and_remove_a_trait(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    defined = await run_kindred(
        cli_env,
        "traits",
        "define",
        "company_size",
        "--type",
        "number",
        "--pii",
        "--description",
        "Employees",
        "--precedence",
        "enrichment:*",
        "--precedence",
        "*",
    )
    assert defined.returncode == 0, defined.stderr
    entry = (await ProfileStore(db).catalog_entries())["company_size"]
    assert entry.type is TraitType.NUMBER
    assert entry.pii
    assert entry.precedence == ("enrichment:*", "*")
    listed = await run_kindred(cli_env, "traits", "list")
    assert "company_size" in listed.stdout
    assert "Employees" in listed.stdout
    removed = await run_kindred(cli_env, "traits", "remove", "company_size")
    again = await run_kindred(cli_env, "traits", "remove", "company_size")
    assert removed.returncode == 0
    assert again.returncode == 1
    assert await ProfileStore(db).catalog_entries() == {}


async def test_a_bad_declaration_is_refused_naming_the_key(cli_env: dict[str, str]) -> None:
    result = await run_kindred(cli_env, "traits", "define", "a.b", "--type", "string")
    assert result.returncode == 2
    assert "a.b" in result.stderr
    assert "Traceback" not in result.stderr
