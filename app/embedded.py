"""The embedded SecantusDB server: a child process that owns a data directory.

SecantusDB is GPL-2.0, so Kindred never imports it; it runs `secantusd-py` as a
separate process and talks to it over the MongoDB wire protocol like any server.

One process owns a data directory at a time. The owner holds an advisory lock on
`kindred.lock` and records the server's URI in `embedded.json`, so other Kindred
commands connect to the running server instead of fighting over the files.
"""

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

LOCK_FILE = "kindred.lock"
STATE_FILE = "embedded.json"
DB_SUBDIR = "db"
SERVER_LOG = "secantusd.log"
MEMORY = ":memory:"
_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """The embedded server cannot be started or reached; the message says what to do."""


class DataDirInUse(EmbeddedError):
    """Another Kindred process owns the data directory."""

    def __init__(self, data_dir: Path, owner: "OwnerInfo | None") -> None:
        who = f"process {owner.pid}, database at {owner.uri}" if owner else "another process"
        super().__init__(
            f"The data directory {data_dir} is already in use by a running Kindred ({who}). "
            "Stop that one first, or give this one another KINDRED_DATA_DIR."
        )
        self.owner = owner


@dataclass(frozen=True)
class OwnerInfo:
    """What the owner of a data directory publishes for other commands."""

    pid: int
    uri: str
    server_pid: int


def find_server_binary() -> str:
    """Returns the path of `secantusd-py`, preferring the one beside this interpreter."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if found:
        return found
    raise EmbeddedError(
        "The embedded database is not installed. Install it with "
        "`pip install 'kindred-cdp[embedded]'`, or point Kindred at MongoDB "
        "with KINDRED_MONGODB_URI."
    )


def free_port() -> int:
    """Returns a loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with_parent(signum: int) -> Callable[[], None]:
    """Returns a `preexec_fn` that has the kernel send the child `signum` when its parent dies."""

    def arm() -> None:
        # Runs in the child between fork and exec, so it holds even if the
        # parent dies by SIGKILL.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        # The parent may have died between fork and prctl.
        if os.getppid() == 1:
            os._exit(1)

    return arm


def read_owner(data_dir: Path) -> OwnerInfo | None:
    """Returns what the owner of `data_dir` published, if anything."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        return OwnerInfo(
            pid=int(raw["pid"]), uri=str(raw["uri"]), server_pid=int(raw["server_pid"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class EmbeddedServer:
    """Starts, watches and stops one SecantusDB process.

    `storage` is a data directory, or `:memory:` for a throwaway server (tests).
    """

    def __init__(
        self,
        storage: Path | str,
        *,
        cache_size: str = "256M",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.in_memory = str(storage) == MEMORY
        self.data_dir = None if self.in_memory else Path(storage).resolve()
        self.cache_size = cache_size
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._lock: IO[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        """Returns the connection string of the running server."""
        if self.port is None:
            raise EmbeddedError("The embedded server is not running.")
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> str:
        """Starts the server, waits until it answers `ping`, and returns its URI."""
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        try:
            self._spawn()
            if self.data_dir is not None:
                self._publish()
        except BaseException:
            self.stop()
            raise
        return self.uri

    def _acquire_lock(self) -> None:
        assert self.data_dir is not None
        lock = (self.data_dir / LOCK_FILE).open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DataDirInUse(self.data_dir, read_owner(self.data_dir)) from None
        self._lock = lock

    def _spawn(self) -> None:
        binary = find_server_binary()
        # A free port can be taken between our probe and the server's bind; retry then.
        for _attempt in range(3):
            self.port = free_port()
            storage = MEMORY if self.data_dir is None else str(self.data_dir / DB_SUBDIR)
            args = [
                binary,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                storage,
                "--cache-size",
                self.cache_size,
                "--log-level",
                "WARNING",
            ]
            if self.data_dir is not None:
                # Acknowledged writes must survive a crash of the server or the machine.
                args.append("--sync-on-commit")
            self._log = self._open_log()
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches Kindred, which then
                # stops the server in order, instead of both dying at once.
                start_new_session=True,
                # SIGKILL, not SIGTERM: SecantusDB sometimes never finishes a SIGTERM
                # shutdown, and with --sync-on-commit every acknowledged write is on disk.
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
            if self._wait_until_ready():
                log.info(
                    "embedded database ready", extra={"uri": self.uri, "pid": self.process.pid}
                )
                return
        raise EmbeddedError(f"The embedded database did not start. {self._log_tail()}")

    def _open_log(self) -> IO[bytes]:
        if self._log is not None:
            self._log.close()
        if self.data_dir is None:
            return open(os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        return (self.data_dir / SERVER_LOG).open("ab")

    def _wait_until_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        client: MongoClient[dict[str, object]]
        with MongoClient(self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    client.admin.command("ping")
                    return True
                except PyMongoError:
                    time.sleep(0.05)
        self._terminate()
        raise EmbeddedError(
            f"The embedded database did not answer within {self.start_timeout:.0f}s. "
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self.data_dir is None:
            return ""
        try:
            lines = (self.data_dir / SERVER_LOG).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "Its log ends with: " + " | ".join(lines[-5:]) if lines else ""

    def _publish(self) -> None:
        assert self.data_dir is not None
        assert self.process is not None
        state = self.data_dir / STATE_FILE
        tmp = state.with_suffix(".tmp")
        owner = {"pid": os.getpid(), "uri": self.uri, "server_pid": self.process.pid}
        tmp.write_text(json.dumps(owner))
        tmp.replace(state)

    def _terminate(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded database ignored SIGTERM; killing it", extra={"pid": proc.pid})
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL after the timeout) and releases the directory."""
        self._terminate()
        if self.data_dir is not None and self._lock is not None:
            with contextlib.suppress(OSError):
                (self.data_dir / STATE_FILE).unlink()
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.process = None
        self.port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def database_uri(data_dir: Path, *, cache_size: str = "256M") -> Iterator[str]:
    """Yields a URI for `data_dir`'s database: the running owner's, or a server started for now."""
    server = EmbeddedServer(data_dir, cache_size=cache_size)
    try:
        uri = server.start()
    except DataDirInUse as busy:
        if busy.owner is None or not _answers(busy.owner.uri):
            raise
        uri = busy.owner.uri
    try:
        yield uri
    finally:
        server.stop()


def _answers(uri: str) -> bool:
    try:
        client: MongoClient[dict[str, object]]
        with MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
            client.admin.command("ping")
        return True
    except PyMongoError:
        return False
