"""gunicorn with the production settings, as the web container runs it: the probes answer over
plain HTTP, pages redirect to HTTPS, and behind the proxy's X-Forwarded-Proto a page comes with
HSTS, the CSP and a secure cookie, and its hashed static files are served by WhiteNoise."""

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from tests.config.test_production import REPO, REQUIRED, manage, production_env
from tests.processes import free_port, wait_until

HOST = REQUIRED["DJANGO_ALLOWED_HOSTS"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str, *, https: bool = True) -> tuple[int, dict[str, str], bytes]:
    headers = {"Host": HOST, **({"X-Forwarded-Proto": "https"} if https else {})}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.usefixtures("postgres")
def test_gunicorn_serves_production_pages_and_static_files(
    transactional_db: None, tmp_path: Path
) -> None:
    db = connection.settings_dict
    env = {
        **REQUIRED,
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    collected = manage("collectstatic", "--no-input", "--verbosity", "0", env=env)
    assert collected.returncode == 0, collected.stderr
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        f"--bind=127.0.0.1:{port}",
    ]
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        command,
        cwd=REPO,
        env=production_env(env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: server.poll() is not None or _answers(f"{base}/healthz"),
            timeout=60,
            what="gunicorn",
        )
        assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()

        # the probes answer over plain HTTP; a page redirects to HTTPS
        assert get(f"{base}/healthz", https=False)[0] == 200
        status, headers, _ = get(f"{base}/accounts/login/", https=False)
        assert status == 301
        assert headers["Location"] == f"https://{HOST}/accounts/login/"

        # behind the proxy
        status, headers, body = get(f"{base}/accounts/login/")
        assert status == 200
        assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "Secure" in headers["Set-Cookie"]
        assert "HttpOnly" in headers["Set-Cookie"]
        stylesheet = re.search(rb'href="(/static/annotation/annotate\.[0-9a-f]{12}\.css)"', body)
        assert stylesheet, body[:2000]
        status, headers, css = get(base + stylesheet.group(1).decode())
        assert status == 200
        assert "max-age=315360000" in headers["Cache-Control"]
        assert css == (REPO / "static" / "annotation" / "annotate.css").read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _answers(url: str) -> bool:
    try:
        return get(url, https=False)[0] == 200
    except OSError:
        return False
