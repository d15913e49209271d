"""Stream 1,000,000 comparisons out of PostgreSQL three ways and compare their speed.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rankloop .venv/bin/python \\
        bench/export_throughput.py [--comparisons 1000000] [--repeat 2] [--reuse]

1. Creates its own database, `<name>_bench_export` beside the one DATABASE_URL names, migrates
   it and loads 25,000 prompts x 5 completions, ranked by 4 of 40 annotators each: 100,000
   rankings, 1,000,000 comparisons, all written with COPY. `--reuse` keeps a loaded database.
2. `psql -c "\\copy (SELECT ...) TO STDOUT"` over the export's columns: the reference.
3. GET /api/v1/exports/comparisons.jsonl from a real gunicorn (1 gthread worker on
   127.0.0.1), read by curl; the worker's peak resident memory is its VmHWM in /proc.
4. `manage.py export_dataset --kind comparisons --format jsonl` into a file.

Each is run `--repeat` times and the best is kept (other work shares the CPU). Prints rows/s,
the API/COPY ratio (target >= 0.5) and the web process's peak memory (target < 300 MB).
"""

import argparse
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotation.rankings import expand_pairs  # noqa: E402

K = 5
RANKINGS_PER_PROMPT = 4
ANNOTATORS = 40
PAIRS_PER_RANKING = K * (K - 1) // 2
WORDS = [
    "the",
    "model",
    "answer",
    "explains",
    "clearly",
    "a",
    "reward",
    "ranking",
    "human",
    "preference",
    "because",
    "data",
    "training",
    "policy",
    "gradient",
    "value",
    "loss",
    "example",
    "however",
    "therefore",
    "simple",
    "careful",
    "wrong",
    "right",
    "helpful",
    "harmless",
    "honest",
    "question",
    "context",
    "detail",
    "step",
    "first",
    "then",
    "finally",
]

# The export's columns, minus the pseudonym join (psql has no key): what COPY is timed on.
COPY_SQL = """
SELECT c.id, c.ranking_id, c.prompt_id, b.name AS batch,
       c.winner_id, w.text AS winner_text, c.loser_id, l.text AS loser_text,
       c.rank_gap, c.is_tie, c.annotator_id
FROM annotation_comparison c
JOIN annotation_ranking r ON r.id = c.ranking_id
JOIN annotation_prompt p ON p.id = c.prompt_id
JOIN annotation_promptbatch b ON b.id = p.batch_id
JOIN annotation_completion w ON w.id = c.winner_id
JOIN annotation_completion l ON l.id = c.loser_id
ORDER BY c.id
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rankloop")
    if not base_url.startswith("postgres"):
        sys.exit("DATABASE_URL must point at PostgreSQL")
    server, name = base_url.rsplit("/", 1)
    bench_name = f"{name}_bench_export"
    bench_url = f"{server}/{bench_name}"
    env = {
        **os.environ,
        "DATABASE_URL": bench_url,
        "DJANGO_SETTINGS_MODULE": "config.settings.development",
        "DJANGO_DEBUG": "0",
    }
    prompts = -(-args.comparisons // (RANKINGS_PER_PROMPT * PAIRS_PER_RANKING))

    loaded = args.reuse and _count(server, bench_name)
    if loaded:
        print(f"reusing {bench_name}: {loaded:,} comparisons")
    else:
        started = time.perf_counter()
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}"')
            conn.execute(f'CREATE DATABASE "{bench_name}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        loaded = _load(bench_url, prompts)
        print(f"loaded {loaded:,} comparisons in {time.perf_counter() - started:.1f} s")
    token = _researcher_token(env)

    out = Path(tempfile.mkdtemp(prefix="rankloop-bench-export-"))
    try:
        copy_runs = [_time_psql(bench_url) for _ in range(args.repeat)]
        api_runs, peak_rss = _time_api(env, token, out, args.repeat)
        command_runs = [_time_command(env, out) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(out)

    copy_s = min(copy_runs)
    api_s, api_bytes = min(api_runs)
    command_s, _, command_rss = min(command_runs)
    print(f"rows: {loaded:,} comparisons (JSONL {api_bytes / 1e6:.0f} MB)")
    print(f"psql \\copy      {copy_s:6.2f} s  {loaded / copy_s:>10,.0f} rows/s")
    print(f"API (gunicorn)  {api_s:6.2f} s  {loaded / api_s:>10,.0f} rows/s")
    print(
        f"export_dataset  {command_s:6.2f} s  {loaded / command_s:>10,.0f} rows/s "
        "(process start included)"
    )
    print(f"API / COPY ratio: {copy_s / api_s:.2f} (target >= 0.5)")
    print(f"web worker peak RSS: {peak_rss / 2**20:.0f} MB (target < 300 MB)")
    print(f"export_dataset peak RSS: {command_rss / 2**20:.0f} MB")
    print(
        "runs (s): copy",
        _fmt([(run,) for run in copy_runs]),
        "api",
        _fmt(api_runs),
        "command",
        _fmt(command_runs),
    )


def _fmt(runs: Sequence[tuple[float, ...]]) -> str:
    return "[" + ", ".join(f"{run[0]:.2f}" for run in runs) + "]"


def _count(server: str, name: str) -> int:
    try:
        with psycopg.connect(f"{server}/{name}") as conn:
            row = conn.execute("SELECT count(*) FROM annotation_comparison").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _load(url: str, prompts: int) -> int:
    """Everything with COPY in one transaction, ids chosen here, sequences moved past them."""
    rng = random.Random(4)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    comparisons = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY auth_user (id, password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) FROM STDIN"
        ) as copy:
            for user in range(1, ANNOTATORS + 2):
                username = "bench-researcher" if user > ANNOTATORS else f"bench-annotator-{user}"
                copy.write_row((user, "!", False, username, "", "", "", False, True, now))
        cur.execute(
            "INSERT INTO annotation_promptbatch (id, name, status, k_min, k_max, overlap, "
            "priority, guidelines, guidelines_version, created_at) "
            "VALUES (1, 'bench', 'published', %s, %s, %s, 0, '', 1, %s)",
            (K, K, RANKINGS_PER_PROMPT, now),
        )
        with cur.copy(
            "COPY annotation_prompt (id, batch_id, text, messages, external_id, metadata, "
            "created_at) FROM STDIN"
        ) as copy:
            for prompt in range(1, prompts + 1):
                text = _sentence(rng, 18)
                messages = orjson.dumps([{"role": "user", "content": text}]).decode()
                copy.write_row((prompt, 1, text, messages, f"bench-{prompt}", "{}", now))
        with cur.copy(
            "COPY annotation_completion (id, prompt_id, text, source, position) FROM STDIN"
        ) as copy:
            for prompt in range(1, prompts + 1):
                for position in range(K):
                    completion = (prompt - 1) * K + position + 1
                    text = _sentence(rng, rng.randint(20, 45))
                    copy.write_row((completion, prompt, text, "bench-model", position))
        ranking = 0
        with (
            cur.copy(
                "COPY annotation_ranking (id, prompt_id, annotator_id, origin, external_id, "
                "groups, k, not_rankable, display_order, duration_ms, rationale, flags, "
                "guidelines_version, created_at) FROM STDIN"
            ) as copy,
        ):
            orders: list[tuple[int, int, int, list[int]]] = []
            for prompt in range(1, prompts + 1):
                ids = [(prompt - 1) * K + position + 1 for position in range(K)]
                for annotator in rng.sample(range(1, ANNOTATORS + 1), RANKINGS_PER_PROMPT):
                    ranking += 1
                    order = rng.sample(ids, K)
                    orders.append((ranking, prompt, annotator, order))
                    copy.write_row(
                        (
                            ranking,
                            prompt,
                            annotator,
                            "human",
                            "",
                            orjson.dumps([[i] for i in order]).decode(),
                            K,
                            False,
                            orjson.dumps(ids).decode(),
                            rng.randint(5_000, 90_000),
                            "",
                            "{}",
                            1,
                            now,
                        )
                    )
        with cur.copy(
            "COPY annotation_comparison (id, ranking_id, prompt_id, winner_id, loser_id, "
            "rank_gap, is_tie, annotator_id) FROM STDIN"
        ) as copy:
            for ranking_id, prompt, annotator, order in orders:
                for pair in expand_pairs([[i] for i in order]):
                    comparisons += 1
                    copy.write_row(
                        (
                            comparisons,
                            ranking_id,
                            prompt,
                            pair.winner,
                            pair.loser,
                            pair.rank_gap,
                            pair.is_tie,
                            annotator,
                        )
                    )
        for table in ("auth_user", "annotation_promptbatch", "annotation_prompt"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        for table in ("annotation_completion", "annotation_ranking", "annotation_comparison"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return comparisons


def _researcher_token(env: dict[str, str]) -> str:
    script = (
        "from django.contrib.auth.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        "from annotation.roles import Role, user_set_role\n"
        "user = User.objects.get(username='bench-researcher')\n"
        "user_set_role(user=user, role=Role.RESEARCHER)\n"
        "print(Token.objects.get_or_create(user=user)[0].key)\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def _time_psql(url: str) -> float:
    query = " ".join(COPY_SQL.split())
    started = time.perf_counter()
    subprocess.run(
        ["psql", url, "-c", f"\\copy ({query}) TO STDOUT"], stdout=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _time_api(
    env: dict[str, str], token: str, out: Path, repeat: int
) -> tuple[list[tuple[float, int]], int]:
    port = _free_port()
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    # gthread: the worker's heartbeat runs beside the request, so a long stream is not
    # mistaken for a hung worker (a sync worker would be killed after --timeout).
    server = subprocess.Popen(
        [
            gunicorn,
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    auth = ["-H", f"Authorization: Token {token}"]
    try:
        for _ in range(100):  # wait for it to listen, and load the app in the worker
            probe = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    *auth,
                    f"{base}/api/v1/batches/",
                ],
                capture_output=True,
                text=True,
            )
            if probe.stdout == "200":
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("gunicorn did not answer")
        workers = psutil.Process(server.pid).children()
        runs = []
        for _ in range(repeat):
            started = time.perf_counter()
            result = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-f",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                    *auth,
                    f"{base}/api/v1/exports/comparisons.jsonl",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append((time.perf_counter() - started, int(result.stdout)))
        peak = max(_vm_hwm(worker.pid) for worker in workers)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return runs, peak


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _time_command(env: dict[str, str], out: Path) -> tuple[float, int, int]:
    target = out / "command.jsonl"
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "export_dataset",
            "--kind",
            "comparisons",
            "--format",
            "jsonl",
            "--output",
            str(target),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    # VmHWM only grows, so its last reading before exit is the peak to within one poll.
    while process.poll() is None:
        with contextlib.suppress(OSError, RuntimeError):  # it may exit between poll and read
            peak = max(peak, _vm_hwm(process.pid))
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"export_dataset exited with {process.returncode}")
    size = target.stat().st_size
    target.unlink()
    return elapsed, size, peak


if __name__ == "__main__":
    main()
