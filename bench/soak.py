"""Soak: annotators, a researcher and the training loop together against gunicorn on
PostgreSQL, for a while; then proof that nothing was lost, duplicated or over-assigned.

    .venv/bin/python bench/soak.py                       # 50 annotators, 10 minutes
    .venv/bin/python bench/soak.py --seconds 20          # the CI version (tests/hardening)

- 50 annotators loop GET /api/v1/assignments/next/ then POST their ranking (bench/annotate_load's
  harness: one kept-alive connection each, a random order of the K = 6 completions);
- a researcher streams exports (comparisons as JSONL, rankings as CSV) back to back, reading
  every byte;
- the training loop retrains the reward model (a tiny one, `manage.py train_reward`, in its own
  process) on a snapshot of what has been ranked so far, run after run.

It creates a fresh database (default rankloop_soak; never the one in DATABASE_URL), prints
throughput, p50/p95/p99 per request kind, every error, the training runs, and at the end checks
the database: every successful submit is there exactly once (with its 15 comparisons), no
prompt has more rankings than its overlap, no annotator has a prompt twice, and the queue
counters match. Exit status 1 if any error or check failed.
"""

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

# bench/ is not a package: its scripts import each other from their folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate_load import (
    Client,
    Window,
    annotate,
    check_database,
    cpu_seconds,
    recreate_database,
    request,
    seed,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EXPORTS = ("/api/v1/exports/comparisons.jsonl", "/api/v1/exports/rankings.csv")
TRAIN = ["--set", "base=tiny", "--set", "mode=full", "--set", "max_length=32",
         "--set", "epochs=1", "--set", "batch_size=16", "--no-progress"]  # fmt: skip


@dataclass
class Researcher:
    token: str
    latencies: list[float] = field(default_factory=list)
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Trainer:
    runs: list[tuple[float, int, str]] = field(default_factory=list)  # (seconds, rc, output tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=20000)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--database", default="rankloop_soak")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--port", type=int, default=8764, help="0: any free port")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    sys.exit(0 if soak(args) else 1)


def soak(args: argparse.Namespace) -> bool:
    if args.port == 0:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.port = sock.getsockname()[1]
    artifacts = tempfile.mkdtemp(prefix="rankloop-soak-")
    env = {
        **os.environ,
        "DATABASE_URL": f"{args.pg}/{args.database}",
        "DJANGO_SETTINGS_MODULE": "config.settings.development",
        "DJANGO_DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "RANKLOOP_ARTIFACT_ROOT": artifacts,
    }
    env.pop("CELERY_BROKER_URL", None)  # train_reward trains in its own process
    print(
        f"== soak: {args.annotators} annotators, 1 researcher streaming exports, reward "
        f"retraining; {args.seconds:g} s; gunicorn {args.workers} gthread workers x "
        f"{args.threads} threads; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} =="
    )
    recreate_database(args.pg, args.database)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True
    )
    tokens = seed(env, argparse.Namespace(prompts=args.prompts, overlap=args.overlap,
                                          annotators=args.annotators + 1))  # fmt: skip
    researcher = Researcher(token=make_researcher(env, tokens.pop()))
    server = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{args.port}",
         "--worker-class", "gthread", "--workers", str(args.workers),
         "--threads", str(args.threads), "--keep-alive", "30", "--timeout", "120",
         "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    trainer = Trainer()
    try:
        wait_for_port(args.port)
        clients = [Client(token=token) for token in tokens]
        window = Window(start=time.monotonic() + args.warmup, seconds=args.seconds)
        threads = [
            threading.Thread(target=annotate, args=(c, args.port, window, 0.0), daemon=True)
            for c in clients
        ]
        threads.append(threading.Thread(target=export, args=(researcher, args.port, window)))
        # Training starts once a quarter of the window has produced rankings to train on.
        threads.append(threading.Thread(target=retrain, args=(trainer, env, window)))
        for thread in threads:
            thread.start()
        started = time.monotonic()
        time.sleep(max(0.0, window.start - time.monotonic()))
        cpu_before = cpu_seconds(server.pid, args.database)
        time.sleep(max(0.0, window.end - time.monotonic()))
        cpu_after = cpu_seconds(server.pid, args.database)
        load = os.getloadavg()
        while any(t.is_alive() for t in threads[:-1]) and time.monotonic() < window.end + 120:
            time.sleep(1)
        threads[-1].join(timeout=600)  # the run in progress when the window closed
        print(f"wall time {time.monotonic() - started:.0f} s")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    used = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    print(
        "    cpu: "
        + ", ".join(f"{name} {value:.0f} s" for name, value in used.items())
        + f" of {(os.cpu_count() or 1) * args.seconds:.0f} core-seconds in the window (training "
        + "and everything else on the machine took the rest); load average at the end "
        + f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    ok = report(clients, researcher, trainer, args.seconds, env)
    if not args.keep_database:
        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    return ok


def make_researcher(env: dict[str, str], annotator_token: str) -> str:
    """Turn the last seeded annotator into the researcher (same token)."""
    code = (
        "import django; django.setup()\n"
        "from rest_framework.authtoken.models import Token\n"
        "from annotation.roles import Role, user_set_role\n"
        f"user = Token.objects.get(key={annotator_token!r}).user\n"
        "user_set_role(user=user, role=Role.RESEARCHER)\n"
    )
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, check=True)
    return annotator_token


def export(researcher: Researcher, port: int, window: Window) -> None:
    headers = {"Authorization": f"Token {researcher.token}"}
    index = 0
    while time.monotonic() < window.end:
        path = EXPORTS[index % len(EXPORTS)]
        index += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            t0 = time.monotonic()
            status, body = request(conn, "GET", path, None, headers)
            if t0 >= window.start:
                researcher.latencies.append(time.monotonic() - t0)
            if status != 200:
                researcher.errors.append(f"export {path} {status} {body[:200]!r}")
            researcher.bytes_read += len(body)
        except (OSError, http.client.HTTPException) as exc:
            researcher.errors.append(f"export {path} {exc!r}")
        finally:
            conn.close()


def retrain(trainer: Trainer, env: dict[str, str], window: Window) -> None:
    time.sleep(max(0.0, window.start + window.seconds / 4 - time.monotonic()))
    while time.monotonic() < window.end:
        t0 = time.monotonic()
        out = subprocess.run(
            [PYTHON, "manage.py", "train_reward", "--wait", *TRAIN],
            cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        trainer.runs.append(
            (time.monotonic() - t0, out.returncode, (out.stdout + out.stderr)[-400:])
        )


def report(
    clients: list[Client],
    researcher: Researcher,
    trainer: Trainer,
    seconds: float,
    env: dict[str, str],
) -> bool:
    for kind in ("next", "submit"):
        print_latencies(kind, [s for c in clients for s in c.latencies[kind]])
    print_latencies("export", researcher.latencies)
    cycles = sum(c.cycles for c in clients)
    print(f" cycles: {cycles} in {seconds:g} s = {cycles / seconds:.1f} submits/s")
    print(f"exports: {len(researcher.latencies)} streamed, {researcher.bytes_read / 1e6:.1f} MB")
    runs_ok = bool(trainer.runs) and all(rc == 0 for _, rc, _ in trainer.runs)
    print(
        f"  train: {len(trainer.runs)} reward run(s), "
        + ", ".join(f"{s:.0f} s rc {rc}" for s, rc, _ in trainer.runs)
    )
    for _, rc, tail in trainer.runs:
        if rc:
            print(f"         {tail}")
    errors = [e for c in clients for e in c.errors] + researcher.errors
    by_kind: dict[str, int] = {}
    for error in errors:
        by_kind[error.split(" ")[0]] = by_kind.get(error.split(" ")[0], 0) + 1
    print(f" errors: {len(errors)} {by_kind if by_kind else ''}")
    for error in errors[:10]:
        print(f"         {error}")
    ranking_ids = [r for c in clients for r in c.ranking_ids]
    ok = check_database(env, ranking_ids) and not errors and runs_ok
    print(f" result: {'OK' if ok else 'FAILED'}")
    return ok


def print_latencies(kind: str, samples: list[float]) -> None:
    if len(samples) < 2:
        print(f"{kind:>7}: {len(samples)} requests")
        return
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    print(
        f"{kind:>7}: {len(samples):6d} requests  p50 {q[49] * 1000:7.1f} ms  "
        f"p95 {q[94] * 1000:7.1f} ms  p99 {q[98] * 1000:7.1f} ms  max {samples[-1] * 1000:7.1f} ms"
    )


if __name__ == "__main__":
    main()
