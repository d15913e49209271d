"""The production settings as an operator meets them: `check --deploy` is clean with the
documented environment, a missing secret stops start-up with one line naming it, logs are JSON;
and the protections every environment shares (Argon2, request size limits, the CSP header)."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from annotation.models import Ranking
from annotation.roles import Role, user_set_role
from tests.factories import BatchFactory, PromptFactory, UserFactory

REPO = Path(__file__).resolve().parents[2]

# The environment README.md and .env.example document for a deployment.
REQUIRED = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "rankloop.example.org",
    "DATABASE_URL": "postgres://rankloop:secret@db:5432/rankloop",
    "CELERY_BROKER_URL": "redis://redis:6379/0",
    "EXPORT_PSEUDONYM_KEY": secrets.token_urlsafe(32),
}


def production_env(env: dict[str, str]) -> dict[str, str]:
    """The machine's variables (not the test run's: the browser tests set
    DJANGO_ALLOW_ASYNC_UNSAFE, which check --deploy rightly refuses), the production settings
    module, and `env`."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in REQUIRED and not k.startswith(("DJANGO_", "LOG_", "CELERY_", "RANKLOOP_"))
    }
    return {**clean, "DJANGO_SETTINGS_MODULE": "config.settings.production", **env}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO,
        env=production_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_environment() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=REQUIRED)

    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_production_refuses_to_start_without_a_required_setting(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"RankLoop cannot start: The environment variable {missing} must be set."
    )


def test_production_logs_are_one_json_object_a_line() -> None:
    code = (
        "import logging; "
        "logging.getLogger('rankloop.test').warning('hello %s', 'there', extra={'run': 7})"
    )

    result = manage("shell", "-c", code, env=REQUIRED)

    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "rankloop.test"
    assert entry["message"] == "hello there"
    assert entry["run"] == 7
    assert entry["time"].endswith("+00:00")


@pytest.mark.django_db
def test_passwords_are_hashed_with_argon2(client: Client) -> None:
    user = User.objects.create_user("ana", password="a-long-test-password")

    assert user.password.startswith("argon2$")
    assert client.login(username="ana", password="a-long-test-password")


@pytest.mark.django_db
def test_a_request_body_over_the_limit_is_refused_and_writes_nothing(client: Client) -> None:
    annotator = UserFactory()
    user_set_role(user=annotator, role=Role.ANNOTATOR)
    PromptFactory(batch=BatchFactory(k_min=2), k=3)
    client.force_login(annotator)
    assignment = client.get("/api/v1/assignments/next/").json()
    ids = [c["id"] for c in assignment["completions"]]

    url = f"/api/v1/assignments/{assignment['id']}/ranking/"
    body = {"order": ids, "rationale": "x" * 1_500}

    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1_000):
        refused = client.post(url, body, content_type="application/json")
    assert 400 <= refused.status_code < 500
    assert not Ranking.objects.exists()
    # the same ranking within the limit is accepted
    assert client.post(url, body, content_type="application/json").status_code == 201


def test_every_response_carries_the_content_security_policy(client: Client) -> None:
    response = client.get("/healthz")

    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
