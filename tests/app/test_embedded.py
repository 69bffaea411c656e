"""The embedded SecantusDB server: durability across restarts, ownership of its directory."""

from pathlib import Path

import pytest
from pymongo import MongoClient

from app.embedded import DataDirInUse, EmbeddedServer, database_uri, read_owner


def _client(uri: str) -> MongoClient[dict[str, object]]:
    return MongoClient(uri, serverSelectionTimeoutMS=5000)


def test_data_written_before_a_restart_is_there_after_it(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path) as first, _client(first.uri) as client:
        client.kindred.notes.insert_one({"_id": "n1", "text": "kept"})
    with EmbeddedServer(tmp_path) as second, _client(second.uri) as client:
        assert client.kindred.notes.find_one({"_id": "n1"}) == {"_id": "n1", "text": "kept"}


def test_a_second_server_on_the_same_directory_gets_a_clear_message(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path) as owner:
        with pytest.raises(DataDirInUse) as refused:
            EmbeddedServer(tmp_path).start()
        assert str(tmp_path.resolve()) in str(refused.value)
        assert owner.uri in str(refused.value)
        assert "already in use" in str(refused.value)
        with _client(owner.uri) as client:
            client.admin.command("ping")  # the owner is unharmed


def test_commands_share_the_running_owners_server(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path) as owner, database_uri(tmp_path) as uri:
        assert uri == owner.uri


def test_commands_start_their_own_server_when_no_owner_runs(tmp_path: Path) -> None:
    with database_uri(tmp_path) as uri, _client(uri) as client:
        client.kindred.notes.insert_one({"_id": "n1"})
        assert read_owner(tmp_path) is not None
    assert read_owner(tmp_path) is None
    with EmbeddedServer(tmp_path) as again, _client(again.uri) as client:
        assert client.kindred.notes.count_documents({}) == 1


def test_stop_leaves_no_server_process(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path)
    server.start()
    process = server.process
    assert process is not None
    server.stop()
    assert process.poll() is not None
