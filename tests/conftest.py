from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection

from tests.processes import CeleryWorker, RedisServer, celery_broker, redis_server


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Each test starts with an empty cache: failed logins counted by one test
    (config/login_throttle.py) must not lock out the same username in the next."""
    yield
    cache.clear()


@pytest.fixture
def postgres() -> None:
    """Skip a test that needs PostgreSQL when the suite runs on SQLite."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://...")


@pytest.fixture
def tasks_queued_not_run() -> Iterator[None]:
    """Tasks go to an in-memory broker instead of running in-process, for tests about what is
    enqueued rather than what the task does."""
    with celery_broker("memory://"):
        yield


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port, for this test alone."""
    with redis_server() as server:
        yield server


@pytest.fixture
def broker(redis: RedisServer) -> Iterator[RedisServer]:
    """This process sends its tasks to the private Redis instead of running them eagerly."""
    with celery_broker(redis.url):
        yield redis


@pytest.fixture
def start_worker(
    broker: RedisServer, tmp_path: Path, transactional_db: None, postgres: None
) -> Iterator[Callable[..., CeleryWorker]]:
    """Start real `celery worker` processes on the private Redis, reading the test database:
    `start_worker(env={...}, name="gpu")`. They are stopped when the test ends."""
    workers: list[CeleryWorker] = []

    def start(env: dict[str, str] | None = None, name: str = "worker") -> CeleryWorker:
        worker = CeleryWorker(
            broker_url=broker.url, log_path=tmp_path / f"{name}.log", extra_env=env or {}
        )
        workers.append(worker)
        worker.start()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def celery_worker(start_worker: Callable[..., CeleryWorker]) -> CeleryWorker:
    """One real worker with the default settings."""
    return start_worker()
