"""How long `manage.py batch_report` takes on a batch of 500 prompts ranked by 3 simulated
annotators each, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rankloop .venv/bin/python bench/batch_report.py
    ... bench/batch_report.py --reuse      # time again on the database the last run left

1. Creates its own database, `<name>_bench_quality` beside the one DATABASE_URL names (dropped
   first if it exists), and migrates it.
2. Imports a published batch of 500 prompts with K = 6 completions (overlap 3), makes 10 of them
   gold prompts (gold rate 0.05) and gives 5 % of the rest an attention check.
3. Six simulated annotators work the queue through the real services (`assignment_next`,
   `assignment_submit`) until every prompt has its 3 rankings: three careful ones (the true
   order, an adjacent swap 30 % of the time), one who submits the order shown, one at random
   and one who ties everything in two halves.
4. Times `manage.py batch_report NAME --json` as a subprocess (Django start-up included, and
   `manage.py help` beside it: the start-up alone), the command in-process (`call_command`) and
   the refresh + report alone: cold (every prompt's figures computed), warm (nothing changed)
   and after 20 new rankings (only those prompts recomputed). Best and median of 5 runs each.
"""

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PROMPTS, K, OVERLAP, GOLD, RUNS = 500, 6, 3, 10, 5
NAME = "bench-quality"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true", help="skip steps 1-3")
    args = parser.parse_args()
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rankloop")
    parts = urlsplit(base)
    bench_db = f"{parts.path.lstrip('/')}_bench_quality"
    server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if not args.reuse:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{bench_db}"')
            conn.execute(f'CREATE DATABASE "{bench_db}"')
    url = f"{server}/{bench_db}"
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    if not args.reuse:
        subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User

    from annotation.models import PromptBatch, PromptQuality, RankingQuality

    print(f"database {bench_db}: {PROMPTS} prompts, K={K}, overlap {OVERLAP}")
    if args.reuse:
        batch = PromptBatch.objects.get(name=NAME)
    else:
        seeded = time.perf_counter()
        batch, annotators = _seed()
        started = time.perf_counter()
        cycles = _simulate(annotators, random.Random(0))
        print(
            f"seeded in {started - seeded:.1f} s; {cycles} rankings through "
            f"assignment_next/submit in {time.perf_counter() - started:.1f} s"
        )

    def command() -> float:
        start = time.perf_counter()
        subprocess.run(
            [*manage, "batch_report", NAME, "--json"],
            env=env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - start

    def start_up() -> float:
        start = time.perf_counter()
        subprocess.run([*manage, "help"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    def call() -> float:
        from django.core.management import call_command

        start = time.perf_counter()
        call_command("batch_report", NAME, "--json", stdout=io.StringIO())
        return time.perf_counter() - start

    def in_process() -> float:
        from annotation.quality import quality_refresh
        from annotation.quality_report import batch_report

        start = time.perf_counter()
        quality_refresh(batch_ids=[batch.pk])
        batch_report(batch=batch)
        return time.perf_counter() - start

    def forget() -> None:
        PromptQuality.objects.all().delete()
        RankingQuality.objects.filter(gold_tau__isnull=True, attention_passed__isnull=True).delete()

    cold_cmd, cold_call, cold_in = [], [], []
    for _ in range(RUNS):
        forget()
        cold_cmd.append(command())
        forget()
        cold_call.append(call())
        forget()
        cold_in.append(in_process())
    warm_cmd = [command() for _ in range(RUNS)]
    bare = [start_up() for _ in range(RUNS)]
    warm_call = [call() for _ in range(RUNS)]
    warm_in = [in_process() for _ in range(RUNS)]
    after_new = []
    extra = _more_annotators(RUNS, start=User.objects.filter(username__startswith="late").count())
    for user in extra:
        _simulate({user: _careful}, random.Random(1), limit=20)
        after_new.append(in_process())

    print(f"batch_report {NAME} --json (subprocess, Django start-up included):")
    print(f"  cold (500 prompts recomputed): {_fmt(cold_cmd)}")
    print(f"  warm (nothing to recompute):   {_fmt(warm_cmd)}")
    print(f"  manage.py help (start-up only): {_fmt(bare)}")
    print("call_command('batch_report', ..., '--json') in-process:")
    print(f"  cold:                          {_fmt(cold_call)}")
    print(f"  warm:                          {_fmt(warm_call)}")
    print("refresh + report in-process:")
    print(f"  cold:                          {_fmt(cold_in)}")
    print(f"  warm:                          {_fmt(warm_in)}")
    print(f"  after 20 new rankings:         {_fmt(after_new)}")
    from annotation.quality_report import batch_report

    report = batch_report(batch=batch)
    for row in report["annotators"]:
        print(
            f"  {row['annotator']:>10}: rankings {row['rankings']:4d}  loo tau "
            f"{_num(row['loo_tau'])}  position bias {_num(row['position_bias'])}  gold "
            f"{_num(row['gold_score'])}  attention {_num(row['attention_pass_rate'])}"
        )
    agreement = report["agreement"]
    print(
        f"  W mean {agreement['mean_w']}, median {agreement['median_w']}, "
        f"{agreement['prompts_measured']} prompts measured"
    )


def _seed():
    from django.contrib.auth.models import User

    from annotation.models import PromptBatch
    from annotation.quality import attention_checks_add, gold_reference_set
    from annotation.roles import Role, user_set_role
    from annotation.services import (
        CompletionRecord,
        PromptRecord,
        batch_create,
        batch_import_records,
    )

    rng = random.Random(0)
    batch = batch_create(
        name=NAME, k_min=K, k_max=K + 1, overlap=OVERLAP, status=PromptBatch.Status.PUBLISHED
    )
    words = [
        "the",
        "a",
        "model",
        "answer",
        "explains",
        "why",
        "how",
        "data",
        "rank",
        "reward",
        "policy",
        "careful",
        "helpful",
    ]
    records = [
        PromptRecord(
            text=f"Question {i}: " + " ".join(rng.choices(words, k=20)),
            messages=[{"role": "user", "content": f"Question {i}"}],
            completions=[
                CompletionRecord(text=f"Answer {j}. " + " ".join(rng.choices(words, k=60)))
                for j in range(K)
            ],
            external_id=f"q{i}",
        )
        for i in range(PROMPTS)
    ]
    batch_import_records(batch=batch, records=records)
    for prompt in batch.prompts.order_by("id")[:GOLD]:
        ids = list(prompt.completions.order_by("position").values_list("id", flat=True))
        gold_reference_set(prompt=prompt, groups=ids)
    batch.gold_rate = 0.05
    batch.save()
    attention_checks_add(batch=batch, share=0.05, seed=0)
    strategies = {
        "careful1": _careful,
        "careful2": _careful,
        "careful3": _careful,
        "positional": _positional,
        "random": _random,
        "halves": _halves,
    }
    annotators = {}
    for name, strategy in strategies.items():
        user = User.objects.create(username=name)
        user_set_role(user=user, role=Role.ANNOTATOR)
        annotators[user] = strategy
    return batch, annotators


def _more_annotators(n: int, start: int = 0):
    from django.contrib.auth.models import User

    from annotation.roles import Role, user_set_role

    users = []
    for i in range(start, start + n):
        user = User.objects.create(username=f"late{i}")
        user_set_role(user=user, role=Role.ANNOTATOR)
        users.append(user)
    # Room for them: 20 more rankings each on prompts that already have their three.
    from django.db.models import F

    from annotation.models import Prompt

    Prompt.objects.filter(batch__name=NAME).update(extra_overlap=F("extra_overlap") + n)
    return users


def _simulate(annotators, rng: random.Random, limit: int | None = None) -> int:
    from annotation.leases import assignment_next, assignment_submit

    done = 0
    active = dict(annotators)
    while active:
        for user in list(active):
            assignment = assignment_next(annotator=user)
            if assignment is None or (limit is not None and done >= limit):
                del active[user]
                continue
            prompt = assignment.prompt
            real = list(
                prompt.completions.exclude(pk=prompt.attention_check_id or 0)
                .order_by("position")
                .values_list("id", flat=True)
            )
            check = prompt.attention_check_id
            groups = active[user](real, list(assignment.display_order), check, rng)
            assignment_submit(
                annotator=user,
                assignment_id=assignment.pk,
                groups=groups,
                duration_ms=rng.randint(8000, 40000),
            )
            done += 1
    return done


def _careful(truth, shown, check, rng):
    """The true order (position 0 is best), an adjacent swap now and then, the check last."""
    order = truth[:]
    if rng.random() < 0.3:
        i = rng.randrange(len(order) - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
    return [[x] for x in order] + ([[check]] if check else [])


def _positional(truth, shown, check, rng):
    return [[x] for x in shown]


def _random(truth, shown, check, rng):
    order = shown[:]
    rng.shuffle(order)
    return [[x] for x in order]


def _halves(truth, shown, check, rng):
    half = len(truth) // 2
    return [truth[:half], truth[half:] + ([check] if check else [])]


def _fmt(seconds: list[float]) -> str:
    return f"best {min(seconds):.3f} s, median {statistics.median(seconds):.3f} s"


def _num(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


if __name__ == "__main__":
    main()
