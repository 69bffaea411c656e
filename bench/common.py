"""Helpers shared by the benchmarks: the API process, timing loops, percentiles and printing.

Not a benchmark itself: `run_all.py` skips this file.
"""

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import httpx

from app.embedded import die_with_parent, free_port
from app.mongo import Document, create_client

T = TypeVar("T")
R = TypeVar("R")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# --- figures -----------------------------------------------------------------------------


def percentile(samples: Sequence[float], pct: float) -> float:
    """Returns the nearest-rank `pct` percentile (0 < pct <= 100) of `samples`."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Timing:
    """Latencies (seconds) of the measured requests of one mode, and the wall time they took."""

    name: str
    latencies: list[float]
    elapsed: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    @property
    def rate(self) -> float:
        """Requests per second over the measured wall time."""
        return len(self.latencies) / self.elapsed


async def closed_loop(
    workers: Sequence[Callable[[T], Awaitable[None]]], items: Sequence[T], name: str = ""
) -> Timing:
    """Runs `items` through the workers, one asyncio task each, every worker one at a time.

    Each worker takes the next item as soon as its previous request is answered (a
    closed loop), so the number of requests in flight is `len(workers)`.
    """
    pending = iter(items)
    latencies: list[float] = []

    async def run(worker: Callable[[T], Awaitable[None]]) -> None:
        for item in pending:  # shared iterator: tasks interleave, nothing runs twice
            started = time.perf_counter()
            await worker(item)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for worker in workers:
            group.create_task(run(worker))
    return Timing(name, latencies, time.perf_counter() - started)


def ratio_row(
    name: str, value: float, target: float | None, *, higher_is_better: bool
) -> list[str]:
    """Returns a table row: the ratio, its target and PASS/MISS (`info` without a target)."""
    if target is None:
        return [name, f"{value:.2f}", "-", "info"]
    ok = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return [name, f"{value:.2f}", f"{sign} {target:g}", "PASS" if ok else "MISS"]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Prints an aligned plain-text table; the first column is left-aligned, others right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


# --- the database --------------------------------------------------------------------------


def with_async_db(uri: str, database: str, work: Callable[[Any], Awaitable[R]]) -> R:
    """Runs `work(db)` on a fresh event loop with an app-configured async client, then closes it."""

    async def go() -> R:
        client = create_client(uri)
        try:
            return await work(client[database])
        finally:
            await client.close()

    return asyncio.run(go())


# --- the API process -----------------------------------------------------------------------


def kindred_binary() -> Path:
    """Returns the `kindred` console script beside this interpreter."""
    binary = Path(sys.executable).parent / "kindred"
    if not binary.exists():
        raise BenchError(f"{binary} does not exist; run `make` to install the project first.")
    return binary


class ApiServer:
    """Runs `kindred serve` against a given database as a child process (KINDRED_ENV=prod)."""

    def __init__(
        self,
        mongodb_uri: str,
        database: str,
        log_path: Path,
        *,
        ready_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.mongodb_uri = mongodb_uri
        self.database = database
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Starts the API, waits until `/readyz` answers 200, and returns its base URL."""
        self.port = free_port()
        env = {**os.environ, "KINDRED_ENV": "prod"}
        env.pop("KINDRED_MONGODB_URI", None)
        self._log = self.log_path.open("ab")
        # Owned by the `with` block / stop(); not a context manager here on purpose.
        self.process = subprocess.Popen(  # noqa: SIM115
            [
                str(kindred_binary()),
                "serve",
                "--port",
                str(self.port),
                "--mongodb-uri",
                self.mongodb_uri,
                "--database",
                self.database,
                "--log-level",
                "WARNING",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent(signal.SIGINT),  # the API stops its own children
        )
        self._wait_until_ready()
        return self.url

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchError(
                        f"`kindred serve` exited with {self.process.returncode}. {self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return
                time.sleep(0.1)
        raise BenchError(
            f"`kindred serve` was not ready within {self.ready_timeout:.0f}s. {self.log_tail()}"
        )

    def log_tail(self, lines: int = 10) -> str:
        """Returns the end of the API's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "Its log ends with:\n" + "\n".join(text[-lines:]) if text else "Its log is empty."

    def stop(self) -> None:
        """Stops the API by PID: SIGINT (a graceful uvicorn shutdown), SIGKILL after the timeout."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"warning: kindred serve (pid {proc.pid}) ignored SIGINT; killing it")
                proc.kill()
                proc.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Prints `label`, then how long the block took."""
    print(f"{label}…", end=" ", flush=True)
    started = time.perf_counter()
    yield
    print(f"{time.perf_counter() - started:.1f}s", flush=True)


__all__ = [
    "ApiServer",
    "BenchError",
    "Document",
    "Timing",
    "closed_loop",
    "percentile",
    "phase",
    "print_table",
    "ratio_row",
    "with_async_db",
]
