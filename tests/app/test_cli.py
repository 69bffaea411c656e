"""`kindred serve` as a user runs it: a real process, real signals, no orphans."""

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.embedded import STATE_FILE, free_port
from tests.fixtures.cli import KINDRED, clean_env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; it only waits for its parent to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


class Serve:
    """A `kindred serve` process on a free port."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log = data_dir.with_name(data_dir.name + ".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [KINDRED, "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
                env=clean_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def server_pid(self) -> int:
        state = json.loads((self.data_dir / STATE_FILE).read_text())
        return int(state["server_pid"])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    proc = Serve(tmp_path / "data")
    server_pid = None
    try:
        assert _wait_for(proc.ready, 60), proc.log.read_text()
        server_pid = proc.server_pid()
        yield proc
    finally:
        # Stop as a user would, so Kindred stops its database in order.
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGINT)
            try:
                proc.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
        if server_pid is not None and not _wait_for(lambda: not _alive(server_pid), 15):
            os.kill(server_pid, signal.SIGKILL)
            pytest.fail(f"the embedded database {server_pid} outlived kindred serve")


def test_ctrl_c_stops_the_service_and_its_database(serve: Serve) -> None:
    server_pid = serve.server_pid()
    serve.process.send_signal(signal.SIGINT)
    assert serve.process.wait(timeout=30) == 0
    assert not _alive(server_pid)
    assert not (serve.data_dir / STATE_FILE).exists()


def test_sigterm_stops_the_service_and_its_database(serve: Serve) -> None:
    server_pid = serve.server_pid()
    serve.process.send_signal(signal.SIGTERM)
    serve.process.wait(timeout=30)
    assert not _alive(server_pid)


def test_a_killed_service_leaves_no_orphan_database(serve: Serve) -> None:
    server_pid = serve.server_pid()
    serve.process.send_signal(signal.SIGKILL)
    serve.process.wait(timeout=10)
    assert _wait_for(lambda: not _alive(server_pid), 30)


def test_a_second_serve_on_the_same_directory_explains_itself(serve: Serve) -> None:
    second = subprocess.run(
        [KINDRED, "serve", "--port", str(free_port()), "--data-dir", str(serve.data_dir)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "already in use" in second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    assert serve.ready()


def test_db_status_connects_to_the_running_service(serve: Serve) -> None:
    status = subprocess.run(
        [KINDRED, "db", "status", "--data-dir", str(serve.data_dir)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "profiles" in status.stdout


def test_with_a_mongodb_uri_no_embedded_server_starts(tmp_path: Path, mongodb_uri: str) -> None:
    data_dir = tmp_path / "unused"
    proc = Serve(data_dir, KINDRED_MONGODB_URI=mongodb_uri, KINDRED_DATABASE="kindred_cli_test")
    try:
        assert _wait_for(proc.ready, 60)
        children = Path(f"/proc/{proc.process.pid}/task/{proc.process.pid}/children").read_text()
        assert children.split() == []
        assert not data_dir.exists()
    finally:
        proc.process.send_signal(signal.SIGINT)
        proc.process.wait(timeout=30)


def test_help_explains_every_flag() -> None:
    wide = clean_env(COLUMNS="200")
    top = subprocess.run(
        [KINDRED, "--help"], capture_output=True, text=True, check=True, env=wide
    ).stdout
    serve = subprocess.run(
        [KINDRED, "serve", "--help"], capture_output=True, text=True, check=True, env=wide
    ).stdout
    assert "serve" in top
    helps = dict(re.findall(r"^│\s+(--[a-z-]+)\s+<[^>]+>\s+(.*?)\s*│$", serve, re.MULTILINE))
    expected = {
        "--host",
        "--port",
        "--mongodb-uri",
        "--data-dir",
        "--database",
        "--env",
        "--log-level",
        "--log-format",
    }
    assert expected <= set(helps)
    assert all(len(text) > 10 for text in helps.values()), helps
