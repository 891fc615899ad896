"""A real ``redis-server`` on a free loopback port, for tests that need Redis and its failures.

Public so that users can test their own agents against a real Redis with pytest-asyncio, the
way this library's own suite does (no fakeredis)::

    from toolweaver_async.testing import RedisServer

    with RedisServer().start() as server:
        config = CacheConfig(use_redis=True, redis_url=server.url)

Started with no persistence (``--save ''``, no AOF), bound to 127.0.0.1 only. Fault tests kill,
pause (SIGSTOP) and restart it on the same port; every wait polls against a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["FakeClock", "RedisServer", "find_free_port", "redis_server_binary", "stop_process"]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """``$REDIS_SERVER_BIN`` or ``redis-server`` on the PATH; a clear error when neither exists."""
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary or not os.access(binary, os.X_OK):
        raise RuntimeError(
            "redis-server not found: the tests start a real Redis. Install it (for example "
            "`apt-get install redis-server`) or set REDIS_SERVER_BIN, then run `make test`."
        )
    return binary


def _answers_ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; ``start()`` returns once it answers PING."""

    def __init__(self, port: int | None = None, *, binary: str | None = None) -> None:
        self.host = HOST
        self.port = port if port is not None else find_free_port()
        self._binary = binary or redis_server_binary()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = Path(tempfile.gettempdir()) / f"tw-redis-{self.port}-{os.getpid()}.log"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    def start(self) -> RedisServer:
        """Start the server on ``self.port`` and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    "--save", "",
                    "--appendonly", "no",
                    "--port", str(self.port),
                    "--bind", HOST,
                    "--daemonize", "no",
                    "--dir", tempfile.gettempdir(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._wait_until_ready()
        return self

    @classmethod
    def start_on_free_port(cls, attempts: int = 3) -> RedisServer:
        """Start a server on a fresh free port, trying again if another process won the port."""
        binary = redis_server_binary()
        for attempt in range(attempts):
            server = cls(binary=binary)
            try:
                return server.start()
            except RuntimeError:
                server.stop()
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _wait_until_ready(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {process.returncode} on port {self.port}:\n"
                    f"{self._log_tail()}"
                )
            if _answers_ping(self.port):
                return
            time.sleep(0.005)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT} s")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the server and reap it: connections drop with no goodbye."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a stopped process would not die before SIGCONT
        process.kill()
        process.wait(timeout=START_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: the port stays open and the kernel accepts connections; nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self._wait_for_state(stopped=True)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`; harmless when the server is not paused or not running."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self._wait_for_state(stopped=False)

    def _wait_for_state(self, *, stopped: bool) -> None:
        stat = Path(f"/proc/{self.pid}/stat")
        if not stat.exists():  # not Linux: signals are delivered promptly enough
            return
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
            if (state in {"T", "t"}) == stopped:
                return
            time.sleep(0.001)
        raise RuntimeError(f"redis-server did not {'stop' if stopped else 'continue'} in time")

    @property
    def running(self) -> bool:
        """Started and not dead (a paused server is running)."""
        return self._process is not None and self._process.poll() is None

    def ensure_running(self) -> None:
        """Resume a paused server, start a killed one again on its port; for fixtures that
        share one server between tests that may have stopped it."""
        if self._process is None:
            return
        if self.running:
            self.resume()
        else:
            self.start()

    def restart(self) -> None:
        """Start again on the same port (killing it first if it still runs); wait for PING."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL if it lingers). Idempotent."""
        if self._process is None:
            return
        stop_process(self._process)
        self._process = None
        self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FakeClock:
    """A wall clock that moves only when a test says so: pass it as ``AsyncToolCache(clock=...)``
    to expire entries without sleeping. ``reads`` counts how often it was read."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """End a server process we started: wake it if paused, SIGTERM, SIGKILL if it lingers past
    5 s, and reap it. Shared by every fixture that starts redis-server or redis-sentinel."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=START_TIMEOUT)
