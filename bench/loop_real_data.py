"""The training loop on real data: import the oasst and HH-RLHF files, let a real Celery worker
retrain the reward model, and print what the registry recorded.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rankloop .venv/bin/python \\
        bench/loop_real_data.py [--set KEY=VALUE ...] [--timeout 3600]

1. Creates its own database `<name>_bench_loop` beside the one DATABASE_URL names, and a
   private redis-server on a free port.
2. Imports ../shared/data/oasst1_en_rankings.jsonl and the two HH-RLHF files with
   `manage.py import_batch`, as an admin would.
3. Starts `celery -A config worker -Q default,gpu --concurrency 1`, sends `retrain_if_due`
   (as beat would) and follows the run's progress on the registry row.
4. Prints the run's summary, the registered model version's metrics (held-out accuracy, ECE,
   Kendall tau on the fixed held-out prompts) and the timings.

`--set KEY=VALUE` overrides `rewards.train.TrainConfig` fields for the run (the library's
defaults otherwise), e.g. `--set base=tiny` for a quick check of the plumbing.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the run")
    args = parser.parse_args()
    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rankloop")
    if not DATA.is_dir():
        sys.exit(f"the shared data sets are not at {DATA}")
    server, name = base_url.rsplit("/", 1)
    db_name = f"{name}_bench_loop"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
        conn.execute(f'CREATE DATABASE "{db_name}"')
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="rankloop-bench-loop-"))
    train = {}
    for pair in args.set:
        key, _, raw = pair.partition("=")
        try:
            train[key] = json.loads(raw)
        except json.JSONDecodeError:
            train[key] = raw
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.development",
        "DATABASE_URL": f"{server}/{db_name}",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "RANKLOOP_ARTIFACT_ROOT": str(work / "artifacts"),
        "RANKLOOP_REWARD_TRAIN": json.dumps(train),
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    worker = None
    try:
        subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], env=env, check=True)
        for batch, files in [
            ("oasst", ["oasst1_en_rankings.jsonl"]),
            ("hh-rlhf", ["hh_rlhf_helpful_base_test.jsonl", "hh_rlhf_harmless_base_test.jsonl"]),
        ]:
            out = subprocess.run(
                [
                    *manage,
                    "import_batch",
                    *(str(DATA / f) for f in files),
                    "--name",
                    batch,
                    "--k-min",
                    "2",
                    "--no-progress",
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            print(out.stdout.strip())
        log_path = work / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    "default,gpu",
                    "--concurrency",
                    "1",
                    "-n",
                    "bench@%h",
                    "-l",
                    "info",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.perf_counter()
        subprocess.run(
            [
                *manage,
                "shell",
                "-c",
                "from training.tasks import retrain_if_due; retrain_if_due.delay()",
            ],
            env=env,
            check=True,
        )
        summary = _follow(f"{server}/{db_name}", args.timeout, worker, log_path)
        elapsed = time.perf_counter() - started
        print(
            f"\nrun finished in {elapsed / 60:.1f} min "
            "(queued by retrain_if_due, trained by the worker)"
        )
        print(json.dumps(summary, indent=2, default=str))
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, 15)
            worker.wait(timeout=30)
        redis.terminate()
        shutil.rmtree(work, ignore_errors=True)


def _follow(url: str, timeout: float, worker: subprocess.Popen[bytes], log_path: Path) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT id, status, progress, config, summary, error"
                " FROM training_trainingrun ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if row is not None:
                run_id, status, progress, config, summary, error = row
                line = f"run {run_id}: {status} {progress:.0%}"
                if line != last:
                    print(line, flush=True)
                    last = line
                if status in ("succeeded", "failed", "cancelled"):
                    version = conn.execute(
                        "SELECT version, status, status_reason, metrics"
                        " FROM training_modelversion WHERE run_id = %s",
                        [run_id],
                    ).fetchone()
                    return {
                        "status": status,
                        "error": (error or "")[:2000],
                        "train_config": config.get("train"),
                        "summary": summary,
                        "model_version": None
                        if version is None
                        else {
                            "version": version[0],
                            "status": version[1],
                            "reason": version[2],
                            "metrics": version[3],
                        },
                    }
            if worker.poll() is not None:
                sys.exit(f"the worker exited:\n{log_path.read_text()[-3000:]}")
            time.sleep(5)
    sys.exit(f"no result after {timeout} s:\n{log_path.read_text()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
