"""python manage.py train_reward [--batch NAME ...] [--set KEY=VALUE ...] [--wait]"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import PromptBatch
from training import services
from training.follow import follow_and_report, parse_overrides
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
            follow_and_report(self, run, progress=not options["no_progress"])


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from dataclasses import fields

    from rewards.train import TrainConfig

    return parse_overrides(pairs, (field.name for field in fields(TrainConfig)))
