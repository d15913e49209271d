"""Import all three shared data sets into a fresh PostgreSQL database and print throughput.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rankloop python bench/import_shared.py

The benchmark creates (and afterwards drops) its own database, `<name>_bench_import`, next
to the one DATABASE_URL names, migrates it, then runs `manage.py import_batch` as a user would,
one process per batch, and times each run from start to exit.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
IMPORTS = [
    ("oasst", ["oasst1_en_rankings.jsonl"]),
    ("hh-rlhf", ["hh_rlhf_helpful_base_test.jsonl", "hh_rlhf_harmless_base_test.jsonl"]),
]


def main() -> None:
    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rankloop")
    if not base_url.startswith("postgres"):
        sys.exit("DATABASE_URL must point at PostgreSQL")
    if not DATA.is_dir():
        sys.exit(f"the shared data sets are not at {DATA}")
    server, name = base_url.rsplit("/", 1)
    bench_name = f"{name}_bench_import"
    bench_url = f"{server}/{bench_name}"
    admin_url = f"{server}/postgres"
    env = {**os.environ, "DATABASE_URL": bench_url}

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}"')
        conn.execute(f'CREATE DATABASE "{bench_name}"')
    try:
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], env=env, check=True)
        total = 0.0
        for batch, files in IMPORTS:
            command = [*manage, "import_batch", *(str(DATA / f) for f in files)]
            command += ["--name", batch, "--k-min", "2", "--no-progress"]
            started = time.perf_counter()
            done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            total += elapsed
            print(f"{batch:8s} {elapsed:6.2f} s  {done.stdout.strip()}")

        with psycopg.connect(bench_url) as conn:
            prompts, comparisons = conn.execute(
                "SELECT (SELECT count(*) FROM annotation_prompt),"
                " (SELECT count(*) FROM annotation_comparison)"
            ).fetchone()  # type: ignore[misc]
        print(
            f"all three files: {prompts} prompts, {comparisons} comparisons in {total:.2f} s "
            f"(process start-up included): {prompts / total:,.0f} prompts/s, "
            f"{comparisons / total:,.0f} comparisons/s"
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}"')


if __name__ == "__main__":
    main()
