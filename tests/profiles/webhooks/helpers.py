"""Webhook test helpers: a real HTTP receiver on a loopback port, services, transitions."""

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.mongo import Document
from profiles.segments.models import Change, Transition
from profiles.webhooks.policy import RetryPolicy
from profiles.webhooks.service import WebhookConfig, WebhookService
from profiles.webhooks.store import WebhookStore

SLOW = "slow"  # a scripted answer: hold the request longer than the sender waits
TIMEOUT = timedelta(seconds=0.5)


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Receiver:
    """An HTTP server in a thread that records every POST and answers as scripted.

    Each hook (a path) answers from its script of statuses (or `SLOW`) in
    order, then 200 once the script runs out.
    """

    def __init__(self, slow_seconds: float = 2.0) -> None:
        self.slow_seconds = slow_seconds
        self._lock = threading.Condition()
        self._requests: list[Received] = []
        self._scripts: dict[str, list[int | str]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = receiver._record(Received(self.path, headers, data))
                if answer == SLOW:
                    time.sleep(receiver.slow_seconds)
                    answer = 200
                try:
                    self.send_response(int(answer))
                    self.send_header("content-type", "text/plain")
                    self.end_headers()
                    self.wfile.write(f"answered {answer}\r\n\x00details".encode())
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _record(self, request: Received) -> int | str:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
            script = self._scripts.get(request.path)
            return script.pop(0) if script else 200

    def hook(self, *script: int | str) -> str:
        """Returns the URL of a new hook that answers `script` in order, then 200."""
        path = f"/hooks/{uuid.uuid4().hex[:8]}"
        self._scripts[path] = list(script)
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, url: str | None = None) -> list[Received]:
        """Returns the requests received, at one hook's URL or all."""
        with self._lock:
            return list(self._requests) if url is None else self._at(url)

    async def wait_for(self, url: str, *, count: int = 1) -> None:
        """Waits until a hook has received `count` requests."""

        def wait() -> bool:
            with self._lock:
                return self._lock.wait_for(lambda: len(self._at(url)) >= count, timeout=5.0)

        if not await asyncio.to_thread(wait):
            raise TimeoutError(f"{url} did not receive {count} requests")

    def _at(self, url: str) -> list[Received]:
        path = url.removeprefix(f"http://127.0.0.1:{self.port}")
        return [r for r in self._requests if r.path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


# No jitter (rand() = 0.5 gives a factor of 1), three attempts, short timeouts.
TEST_CONFIG = WebhookConfig(
    timeout=TIMEOUT,
    concurrency=4,
    cache_seconds=5.0,
    retry=RetryPolicy(max_attempts=3),
)


def make_service(
    db: AsyncDatabase[Document], config: WebhookConfig = TEST_CONFIG, **kwargs: Any
) -> WebhookService:
    """Returns a webhook service on the database, with no jitter."""
    kwargs.setdefault("rand", lambda: 0.5)
    return WebhookService(WebhookStore(db), config=config, **kwargs)


def utcnow() -> datetime:
    """Returns now in UTC, in whole milliseconds as MongoDB keeps it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def transition(
    segment_id: str = "vip",
    change: Change = Change.ENTERED,
    *,
    profile_id: str = "prf_01TEST",
    version: int = 3,
    at: datetime | None = None,
    cause: dict[str, Any] | None = None,
) -> Transition:
    """Returns a membership change with sensible defaults."""
    return Transition(
        segment_id=segment_id,
        segment_version=version,
        profile_id=profile_id,
        change=change,
        at=at or utcnow(),
        cause=cause if cause is not None else {"kind": "event", "event_id": "evt_1"},
    )
