from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.processes import CeleryWorker, RedisServer, celery_broker, redis_server


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
def celery_worker(
    redis: RedisServer, tmp_path: Path, transactional_db: None, postgres: None
) -> Iterator[CeleryWorker]:
    """A real `celery worker` process on the private Redis, reading the test database. The test
    process enqueues to the same Redis (not eagerly)."""
    worker = CeleryWorker(broker_url=redis.url, log_path=tmp_path / "worker.log")
    with celery_broker(redis.url):
        worker.start()
        try:
            yield worker
        finally:
            worker.stop()
