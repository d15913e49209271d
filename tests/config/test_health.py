"""/healthz and /readyz, against the real database and the real Redis."""

import socket
from collections.abc import Iterator

import pytest
from django.test import Client

from tests.processes import celery_broker


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """Point the Celery app at a broker URL for one test."""
    with celery_broker(request.param):
        yield request.param


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthz_answers_without_touching_anything(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.parametrize("broker", ["redis://127.0.0.1:6379/15"], indirect=True)
def test_readyz_reports_database_and_broker_latency(client: Client, broker: str) -> None:
    body = client.get("/readyz").json()

    assert body["status"] == "ok"
    assert body["database"]["ok"]
    assert body["database"]["latency_ms"] >= 0
    assert body["database"]["detail"] == "postgresql"
    assert body["broker"]["ok"]
    assert body["broker"]["latency_ms"] >= 0


@pytest.mark.django_db
@pytest.mark.parametrize("broker", [f"redis://127.0.0.1:{_closed_port()}/0"], indirect=True)
def test_readyz_is_503_naming_an_unreachable_broker(client: Client, broker: str) -> None:
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["database"]["ok"]
    assert not response.json()["broker"]["ok"]
    assert "Error" in response.json()["broker"]["error"]
