"""The soak benchmark, shortened: bench/soak.py runs 50 annotators, a researcher streaming
exports and reward retraining against gunicorn on PostgreSQL for 20 s, then checks the
database itself (every successful submit stored once, no prompt over its overlap). The
10-minute run is a benchmark (bench/RESULTS.md), not a test."""

import subprocess
import sys
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_loses_nothing_and_has_no_errors(postgres: None) -> None:
    s = connection.settings_dict
    pg = f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"

    out = subprocess.run(
        [sys.executable, "bench/soak.py", "--seconds", "20", "--prompts", "1500",
         "--pg", pg, "--database", f"{s['NAME']}_soak", "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip

    report = out.stdout + out.stderr[-3000:]
    assert out.returncode == 0, report
    assert " errors: 0" in out.stdout, report
    assert "ok  one ranking per successful submit" in out.stdout, report
    assert "ok  no prompt over its overlap" in out.stdout, report
    assert "result: OK" in out.stdout, report
