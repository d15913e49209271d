"""python manage.py train_reward [--batch NAME ...] [--set KEY=VALUE ...] [--wait]"""

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotation.models import PromptBatch
from training import services
from training.models import TrainingRun
from training.reward_runs import reward_run_create


class Command(BaseCommand):
    help = (
        "Freeze a snapshot of the rankings and queue a reward-model run on the gpu queue "
        "(in-process when no broker is configured)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", action="append", default=[], help="batch name; repeatable")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a rewards.train.TrainConfig field, e.g. --set base=tiny --set epochs=3",
        )
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        batches: list[str] = options["batch"]
        known = set(PromptBatch.objects.filter(name__in=batches).values_list("name", flat=True))
        if missing := sorted(set(batches) - known):
            raise CommandError(f"no such batch: {', '.join(missing)}")
        try:
            run = reward_run_create(
                batches=batches or None, train_config=_overrides(options["set"])
            )
        except services.RunAlreadyActive as exc:
            raise CommandError(f"{exc}; wait for it or cancel it in the admin") from None
        self.stdout.write(f"queued reward run {run.pk} on snapshot {run.snapshot_id}")
        if options["wait"]:
            self._follow(run, progress=not options["no_progress"])

    def _follow(self, run: TrainingRun, *, progress: bool) -> None:
        with tqdm(total=100, unit="%", desc=f"run {run.pk}", disable=not progress or None) as bar:
            while True:
                run.refresh_from_db()
                bar.update(int(run.progress * 100) - bar.n)
                if run.status not in TrainingRun.ACTIVE:
                    break
                time.sleep(2)
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(
                f"run {run.pk} {run.status}: {run.error.splitlines()[0] if run.error else ''}"
            )
        self.stdout.write(json.dumps(run.summary, indent=2))


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from dataclasses import fields

    from rewards.train import TrainConfig

    names = {field.name: field for field in fields(TrainConfig)}
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in names:
            raise CommandError(
                f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(names)}"
            )
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides
