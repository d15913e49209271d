"""What the training commands share: `--set KEY=VALUE` options, and `--wait`, which follows a
run with a tqdm bar fed by its progress until it ends."""

import json
import time
from collections.abc import Iterable
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from training.models import TrainingRun


def follow_run(
    run: TrainingRun, *, progress: bool = True, poll_seconds: float = 2.0
) -> TrainingRun:
    """Wait for `run` to end, showing its progress; returns it as it ended."""
    with tqdm(total=100, unit="%", desc=f"run {run.pk}", disable=not progress or None) as bar:
        while True:
            run.refresh_from_db()
            bar.update(int(run.progress * 100) - bar.n)
            if run.status not in TrainingRun.ACTIVE:
                return run
            time.sleep(poll_seconds)


def follow_and_report(command: BaseCommand, run: TrainingRun, *, progress: bool) -> None:
    """`--wait`: follow `run`, then print its summary, or fail with its first error line."""
    run = follow_run(run, progress=progress)
    if run.status != TrainingRun.Status.SUCCEEDED:
        error = run.error.splitlines()[0] if run.error else ""
        raise CommandError(f"run {run.pk} {run.status}: {error}")
    command.stdout.write(json.dumps(run.summary, indent=2))


def parse_overrides(pairs: list[str], names: Iterable[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` options -> {KEY: VALUE}, VALUE read as JSON when it is JSON (3, 1e-4,
    true, [1, 2]) and as a string otherwise; KEY must be one of `names`."""
    allowed = sorted(names)
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in allowed:
            raise CommandError(
                f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(allowed)}"
            )
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides
