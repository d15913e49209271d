"""The deployment files: `docker compose config` validates docker-compose.yml with the
documented .env (the CLI needs no Docker engine for that), and .env.example documents every
setting the settings modules read."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "redis", "migrate", "web", "worker", "worker-gpu", "beat", "flower"}


def compose_cli() -> list[str] | None:
    """`docker compose` (the v2 plugin) when present, else the standalone `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture
def compose(tmp_path: Path):
    cli = compose_cli()
    if cli is None:
        pytest.skip("needs the compose CLI: apt-get install docker-compose (.ci/run does)")
    shutil.copy(REPO / "docker-compose.yml", tmp_path)

    def run(env_file: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / ".env").write_text(env_file)
        return subprocess.run(
            [*cli, "config"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        )

    return run


def filled_env_example() -> str:
    """.env.example as an operator fills it in: the required values set."""
    text = (REPO / ".env.example").read_text()
    for name in ("DJANGO_SECRET_KEY", "EXPORT_PSEUDONYM_KEY", "POSTGRES_PASSWORD"):
        text = text.replace(f"\n{name}=\n", f"\n{name}=not-a-real-secret\n")
    return text.replace("\nFLOWER_BASIC_AUTH=\n", "\nFLOWER_BASIC_AUTH=ops:not-a-real-secret\n")


def test_docker_compose_config_validates_with_the_documented_env(compose) -> None:
    result = compose(filled_env_example())

    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == SERVICES
    assert set(config["volumes"]) >= {"pgdata", "artifacts"}
    assert services["beat"]["deploy"]["replicas"] == 1
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert gpu["command"][gpu["command"].index("-Q") + 1] == "gpu"
    for name in ("postgres", "redis", "web", "worker", "worker-gpu", "flower"):
        assert "test" in services[name]["healthcheck"], name
    web = services["web"]
    assert web["environment"]["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    assert web["environment"]["DATABASE_URL"].startswith("postgres://rankloop:not-a-real-secret@")
    assert "gunicorn" in web["command"]


def test_docker_compose_refuses_a_missing_database_password(compose) -> None:
    result = compose((REPO / ".env.example").read_text())

    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_env_example_documents_every_setting() -> None:
    read = set()
    for path in (REPO / "config" / "settings").glob("*.py"):
        read |= set(re.findall(r'env_\w+\("([A-Z0-9_]+)"', path.read_text()))
    documented = set(re.findall(r"^#? ?([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))

    assert read, "no settings found: has config/env.py's helpers been renamed?"
    assert read - documented == set()
