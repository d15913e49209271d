"""Real processes for tests: a private redis-server and a Celery worker on it.

Each test that needs them gets its own Redis on a free port, so stopping and restarting it
(fault tests) disturbs nobody else, and its own worker process reading the test database.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: _port_open(self.port), what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def database_url() -> str:
    """The URL of the database this test runs on (pytest-django's test database)."""
    s = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError(
            "a worker process needs PostgreSQL: SQLite test databases live in memory"
        )
    user = s["USER"] or "postgres"
    return f"postgres://{user}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class _ProcessGroup:
    """A server started in a process group of its own (`start_new_session=True`): its log, its
    child processes, killing and stopping the whole group."""

    process: subprocess.Popen[bytes] | None
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of the main process's children (Celery's pool, gunicorn's workers)."""
        assert self.process is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole group, main process and children, as a crash or an OOM kill would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class CeleryWorker(_ProcessGroup):
    broker_url: str
    log_path: Path
    queues: str = "default,gpu"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.development",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": self.broker_url,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.log_path.write_text("")
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            self.queues,
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
            "-l",
            "info",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for(
            lambda: "ready." in self.log, what="the Celery worker", timeout=60, process=self.process
        )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float = 20,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        time.sleep(0.1)
    raise TimeoutError(f"{what} was not ready after {timeout} s")


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float = 60,
    interval: float = 0.2,
    what: str = "condition",
) -> None:
    """Poll `check` until it is true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what() if callable(what) else what}"
    )


@contextmanager
def celery_broker(url: str | None) -> Iterator[None]:
    """Send this process's tasks to `url` (None: run them eagerly in-process) for a while.

    Celery caches its connection and producer pools; they are dropped on each switch so the
    next task really goes to the new broker.
    """
    from config.celery import app

    def switch(eager: bool, broker: str) -> None:
        app.conf.task_always_eager, app.conf.broker_url = eager, broker
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.task_always_eager, app.conf.broker_url
    switch(url is None, url or "memory://")
    try:
        yield
    finally:
        switch(*saved)


@dataclass
class GunicornServer(_ProcessGroup):
    """`gunicorn config.wsgi` on a free port, reading the test database. Its database sessions
    carry `application_name` so a test can find (and terminate) them in pg_stat_activity."""

    log_path: Path
    workers: int = 1
    threads: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    application_name: str = "rankloop-test-gunicorn"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.development",
            "DJANGO_DEBUG": "0",
            "DATABASE_URL": f"{database_url()}?application_name={self.application_name}",
            # Connections outlive requests, as in production, so a terminated one is reused.
            "DATABASE_CONN_MAX_AGE": "600",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        command = [
            sys.executable, "-m", "gunicorn", "config.wsgi",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--worker-class", "gthread" if self.threads > 1 else "sync",
            "--timeout", "60",
            "--log-level", "info",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _wait_for(lambda: len(self.workers_pids()) >= self.workers, what="gunicorn's workers",
                  timeout=60, process=self.process)  # fmt: skip
        _wait_for(lambda: _port_open(self.port), what="gunicorn", timeout=60, process=self.process)

    def workers_pids(self) -> list[int]:
        return self.children()
