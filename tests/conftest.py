from collections.abc import Iterator

import pytest
from django.db import connection


@pytest.fixture
def postgres() -> None:
    """Skip a test that needs PostgreSQL when the suite runs on SQLite."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://...")


@pytest.fixture
def tasks_queued_not_run() -> Iterator[None]:
    """Tasks go to an in-memory broker instead of running in-process, for tests about what is
    enqueued rather than what the task does."""
    from config.celery import app

    saved = app.conf.task_always_eager, app.conf.broker_url
    app.conf.task_always_eager, app.conf.broker_url = False, "memory://"
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.broker_url = saved
