"""`manage.py demo` as a newcomer runs it: a fresh SQLite file in an empty folder, no broker,
no configuration. The demo sets everything up (a reward run on a snapshot included), a second
run serves it without adding anything, and the printed annotator logs in, ranks one prompt in
headless chromium and gets the next one."""

import os
import re
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.processes import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


def demo_env(folder: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "CELERY_", "DJANGO_", "RANKLOOP_"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}",
        RANKLOOP_ARTIFACT_ROOT=str(folder / "artifacts"),
        PYTHONUNBUFFERED="1",
    )
    return env


def counts(database: Path) -> dict[str, int]:
    tables = {
        "users": "auth_user",
        "batches": "annotation_promptbatch",
        "prompts": "annotation_prompt",
        "completions": "annotation_completion",
        "rankings": "annotation_ranking",
        "human rankings": "annotation_ranking WHERE origin = 'human'",
        "runs": "training_trainingrun",
        "models": "training_modelversion",
        "snapshots": "annotation_datasetsnapshot",
    }
    with sqlite3.connect(database) as db:
        return {
            name: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for name, table in tables.items()
        }


def up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_the_demo_sets_up_serves_and_an_annotator_ranks(browser, tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    manage = [sys.executable, str(REPO / "manage.py"), "demo"]

    # given: the demo set up once, without serving
    first = subprocess.run(
        [*manage, "--no-serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    login = re.search(r"annotator\s+login: (\S+)\s+password: (\S+)", first.stdout)
    assert login, first.stdout
    username, password = login.groups()
    assert "8 seeded rankings" in first.stdout
    database = tmp_path / "db.sqlite3"
    before = counts(database)
    assert before["users"] == 4
    assert before["prompts"] == 14
    assert before["human rankings"] == 0
    # a tiny reward model trained on a snapshot of the seeded rankings, for the admin to show
    assert (before["runs"], before["models"], before["snapshots"]) == (1, 1, 1)
    assert any((tmp_path / "artifacts" / "reward").glob("run-*/meta.json"))

    # when: the demo runs again, this time serving
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [*manage, "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: up(f"{base}/healthz") or server.poll() is not None,
            timeout=120,
            what="the demo server",
        )
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        # then it added nothing
        assert counts(database) == before

        # and the printed annotator logs in, ranks the first prompt and sees the next one
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/annotate/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_selector("#cards .card")
        first_assignment = page.get_attribute("#workspace", "data-assignment-id")
        first_prompt = page.inner_text("#workspace")
        # the focused first card goes to rank 2, and Enter submits
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "id => document.getElementById('workspace').dataset.assignmentId !== id",
            arg=first_assignment,
        )
        page.wait_for_selector("#cards .card")
        assert page.inner_text("#workspace") != first_prompt
        assert "Saved:" in page.inner_text("[data-message]")
        context.close()
        assert errors == []
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    after = counts(database)
    assert after["human rankings"] == 1
    assert {k: v for k, v in after.items() if "rankings" not in k} == {
        k: v for k, v in before.items() if "rankings" not in k
    }
