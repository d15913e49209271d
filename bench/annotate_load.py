"""Load benchmark for the annotation loop: annotators asking for the next assignment, then
submitting a ranking of its K = 6 completions, against gunicorn on PostgreSQL.

    .venv/bin/python bench/annotate_load.py                 # both settings, 60 s each
    .venv/bin/python bench/annotate_load.py --pause 5       # one setting

For each setting it creates a fresh database (default rankloop_bench3; never the one in
DATABASE_URL), migrates it, seeds a published batch and the annotators with API tokens, starts
gunicorn, runs the annotators for the given time, stops gunicorn, prints p50/p95/p99 per
request, cycles per second and errors, and then checks the database: exactly one ranking (with
its 15 comparisons) per successful submit, no prompt over its overlap, no annotator with a
prompt twice. Every request goes to 127.0.0.1 only, and the run stops by itself.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
K = 6


@dataclass
class Client:
    token: str
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"next": [], "submit": []})
    errors: list[str] = field(default_factory=list)
    cycles: int = 0
    ranking_ids: list[int] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds first")
    parser.add_argument("--pause", type=float, action="append", help="seconds between cycles")
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--database", default="rankloop_bench3")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--port", type=int, default=8763)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--worker-class", default="gthread")
    args = parser.parse_args()
    pauses = args.pause if args.pause else [0.0, 5.0]
    failed = False
    for pause in pauses:
        failed |= not run_setting(args, pause)
    sys.exit(1 if failed else 0)


def run_setting(args: argparse.Namespace, pause: float) -> bool:
    database_url = f"{args.pg}/{args.database}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings.development",
        "DJANGO_DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        # Connections live through the run (the default recycles them every 60 s), so that
        # the PostgreSQL backends whose CPU time is counted below last until it is read.
        "DATABASE_CONN_MAX_AGE": "600",
    }
    print(
        f"\n== {args.annotators} annotators, pause {pause:g} s, {args.seconds:g} s; gunicorn "
        f"{args.workers} {args.worker_class} workers x {args.threads} threads =="
    )
    recreate_database(args.pg, args.database)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True
    )
    tokens = seed(env, args)
    server = subprocess.Popen(
        [
            PYTHON, "-m", "gunicorn", "config.wsgi",
            "--bind", f"127.0.0.1:{args.port}",
            "--worker-class", args.worker_class,
            "--workers", str(args.workers),
            "--threads", str(args.threads),
            "--keep-alive", "30",
            "--log-level", "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(args.port)
        clients = [Client(token=token) for token in tokens]
        # Measured: the `seconds` after a warm-up in which every annotator has made a first
        # cycle (new connections, workers' first requests) that would otherwise be counted.
        window = Window(
            start=time.monotonic() + args.warmup + pause,
            seconds=args.seconds,
        )
        threads = [
            threading.Thread(target=annotate, args=(c, args.port, window, pause), daemon=True)
            for c in clients
        ]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, window.start - time.monotonic()))
        cpu_before = cpu_seconds(server.pid, args.database)
        time.sleep(max(0.0, window.end - time.monotonic()))
        cpu_after = cpu_seconds(server.pid, args.database)
        for thread in threads:
            thread.join(timeout=60)
        elapsed = args.seconds
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    used = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    return report(clients, elapsed, env, used)


@dataclass(frozen=True)
class Window:
    start: float
    seconds: float

    @property
    def end(self) -> float:
        return self.start + self.seconds


def annotate(client: Client, port: int, window: Window, pause: float) -> None:
    """One annotator: next, then submit a random order, then pause; until the window closes.

    Plain http.client on one kept-alive connection: the load generator shares the two cores
    with the server, so it should cost as little as it can."""
    headers = {"Authorization": f"Token {client.token}", "Content-Type": "application/json"}
    rng = random.Random()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    # Spread the first requests over the pause, as people do not all start on the same second.
    time.sleep(rng.uniform(0, pause))
    while time.monotonic() < window.end:
        try:
            t0 = time.monotonic()
            status, body = request(conn, "GET", "/api/v1/assignments/next/", None, headers)
            t1 = time.monotonic()
            if t0 >= window.start:
                client.latencies["next"].append(t1 - t0)
            if status != 200:
                client.errors.append(f"next {status} {body[:200]!r}")
                time.sleep(max(pause, 0.5))
                continue
            assignment = json.loads(body)
            order = [c["id"] for c in assignment["completions"]]
            rng.shuffle(order)
            path = f"/api/v1/assignments/{assignment['id']}/ranking/"
            payload = json.dumps({"order": order}).encode()
            t2 = time.monotonic()
            status, body = request(conn, "POST", path, payload, headers)
            t3 = time.monotonic()
            if t2 >= window.start:
                client.latencies["submit"].append(t3 - t2)
            if status != 201:
                client.errors.append(f"submit {status} {body[:200]!r}")
            else:
                client.ranking_ids.append(json.loads(body)["ranking_id"])
                if window.start <= t3 < window.end:
                    client.cycles += 1
        except (OSError, http.client.HTTPException) as exc:
            client.errors.append(repr(exc))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if pause:
            time.sleep(pause)
    conn.close()


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    payload: bytes | None,
    headers: dict[str, str],
) -> tuple[int, bytes]:
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def report(
    clients: list[Client], elapsed: float, env: dict[str, str], cpu: dict[str, float]
) -> bool:
    for kind in ("next", "submit"):
        samples = sorted(s for c in clients for s in c.latencies[kind])
        if not samples:
            print(f"{kind:>7}: no samples")
            continue
        q = statistics.quantiles(samples, n=100, method="inclusive")
        print(
            f"{kind:>7}: {len(samples):6d} requests  p50 {q[49] * 1000:6.1f} ms  "
            f"p95 {q[94] * 1000:6.1f} ms  p99 {q[98] * 1000:6.1f} ms  "
            f"max {samples[-1] * 1000:6.1f} ms"
        )
    cycles = sum(c.cycles for c in clients)
    if cycles:
        print(
            "    cpu: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
            + f" of {2 * elapsed:.0f} core-seconds; "
            + f"{sum(cpu.values()) / cycles * 1000:.1f} ms per cycle "
            + "(the rest went to other work on the machine)"
        )
    errors = [e for c in clients for e in c.errors]
    per_annotator = sorted(c.cycles for c in clients)
    print(
        f" cycles: {cycles} in {elapsed:.1f} s = {cycles / elapsed:.1f} cycles/s "
        f"(per annotator: min {per_annotator[0]}, median {per_annotator[len(clients) // 2]}, "
        f"max {per_annotator[-1]})"
    )
    print(f" errors: {len(errors)}")
    for error in errors[:5]:
        print(f"         {error}")
    ranking_ids = [r for c in clients for r in c.ranking_ids]
    ok = check_database(env, ranking_ids) and not errors
    print(f" result: {'OK' if ok else 'FAILED'}")
    return ok


def check_database(env: dict[str, str], ranking_ids: list[int]) -> bool:
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        rankings = [r for (r,) in conn.execute("SELECT id FROM annotation_ranking ORDER BY id")]
        comparisons = scalar(conn, "SELECT count(*) FROM annotation_comparison")
        over = scalar(
            conn,
            """SELECT count(*) FROM (
                 SELECT r.prompt_id FROM annotation_ranking r
                 JOIN annotation_prompt p ON p.id = r.prompt_id
                 JOIN annotation_promptbatch b ON b.id = p.batch_id
                 GROUP BY r.prompt_id, b.overlap HAVING count(*) > b.overlap) AS x""",
        )
        twice = scalar(
            conn,
            """SELECT count(*) FROM (SELECT 1 FROM annotation_assignment
                 GROUP BY prompt_id, annotator_id HAVING count(*) > 1) AS x""",
        )
        counters_off = scalar(
            conn,
            """SELECT count(*) FROM annotation_prompt p WHERE p.human_ranking_count <>
                 (SELECT count(*) FROM annotation_ranking r WHERE r.prompt_id = p.id)""",
        )
    checks = {
        "one ranking per successful submit": sorted(ranking_ids) == rankings,
        f"{K * (K - 1) // 2} comparisons per ranking": comparisons == len(rankings) * 15,
        "no prompt over its overlap": over == 0,
        "no annotator with a prompt twice": twice == 0,
        "queue counters match the rankings": counters_off == 0,
    }
    print(
        f"     db: {len(rankings)} rankings for {len(ranking_ids)} successful submits, "
        f"{comparisons} comparisons"
    )
    for name, passed in checks.items():
        print(f"         {'ok ' if passed else 'BAD'} {name}")
    return all(checks.values())


def scalar(conn: psycopg.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def recreate_database(pg: str, name: str) -> None:
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing odd database name {name!r}")
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


SEED = """
import sys
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from annotation.models import Completion, Prompt, PromptBatch
from annotation.roles import Role, user_set_role

prompts, overlap, annotators, k = (int(x) for x in sys.argv[1:5])
batch = PromptBatch.objects.create(
    name="bench", status="published", k_min=k, k_max=k, overlap=overlap,
    guidelines="Rank by helpfulness.",
)
made = Prompt.objects.bulk_create(
    Prompt(batch=batch, text=f"Prompt {i}: explain a thing.",
           messages=[{"role": "user", "content": f"Prompt {i}: explain a thing."}],
           external_id=f"p{i}")
    for i in range(prompts)
)
Completion.objects.bulk_create(
    (Completion(prompt=p, position=j, text=f"Answer {j} to prompt {p.pk}. " * 20)
     for p in made for j in range(k)),
    batch_size=5000,
)
# Fresh statistics, as autovacuum would have after a real import: the claim's plan walks the
# queue index only when the planner knows how many prompts there are.
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")
for i in range(annotators):
    user = User.objects.create(username=f"bench{i}")
    user_set_role(user=user, role=Role.ANNOTATOR)
    print(Token.objects.create(user=user).key)
"""


def seed(env: dict[str, str], args: argparse.Namespace) -> list[str]:
    out = subprocess.run(
        [PYTHON, "-c", "import django; django.setup(); exec(open(0).read())",
         str(args.prompts), str(args.overlap), str(args.annotators), str(K)],
        input=SEED, cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    tokens = out.stdout.split()
    print(f"seeded {args.prompts} prompts x {K} completions, overlap {args.overlap}, "
          f"{len(tokens)} annotators")  # fmt: skip
    return tokens


def cpu_seconds(server_pid: int, database: str) -> dict[str, float]:
    """CPU time so far of gunicorn (master and workers), of the PostgreSQL backends serving
    the bench database, and of this process (the load generator), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = {"gunicorn": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid, used = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
        if int(entry.name) == server_pid or ppid == server_pid:
            totals["gunicorn"] += used
        elif cmdline.startswith("postgres:") and f" {database} " in cmdline:
            totals["postgres"] += used
    totals["load generator"] = time.process_time()
    return totals


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not listen on port {port} within {timeout} s")


if __name__ == "__main__":
    main()
