"""python manage.py train_policy [--batch NAME ...] [--steps N] [--set KEY=VALUE ...] [--wait]"""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training import services
from training.follow import follow_run
from training.policy_runs import NoPromotedRewardModel, UnknownBatch, policy_run_create


class Command(BaseCommand):
    help = (
        "Queue a PPO run against the promoted reward model on the prompts of the named batches "
        "(all batches when none is named), starting from the promoted policy or the base policy "
        "(RANKLOOP_POLICY_PPO's 'policy'). Runs in-process when no broker is configured."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", action="append", default=[], help="batch name; repeatable")
        parser.add_argument("--steps", type=int, help="PPO steps (default: the PPOConfig's)")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a training.ppo.PPOConfig field, e.g. --set batch_size=8 --set kl_coef=0.1",
        )
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        overrides = _overrides(options["set"])
        if options["steps"] is not None:
            if options["steps"] < 1:
                raise CommandError("--steps must be at least 1")
            overrides["steps"] = options["steps"]
        try:
            run = policy_run_create(batches=options["batch"], ppo_config=overrides)
        except services.RunAlreadyActive as exc:
            raise CommandError(f"{exc}; wait for it or cancel it in the admin") from None
        except (NoPromotedRewardModel, UnknownBatch, ValueError) as exc:
            raise CommandError(str(exc)) from None
        start = f"policy v{run.parent.version}" if run.parent else run.config["base_policy"]
        self.stdout.write(
            f"queued policy run {run.pk}: reward model v{run.config['reward_model']['version']}, "
            f"starting from {start}"
        )
        if options["wait"]:
            run = follow_run(run, progress=not options["no_progress"])
            if run.status != "succeeded":
                raise CommandError(f"run {run.pk} {run.status}: {_first_line(run.error)}")
            self.stdout.write(json.dumps(run.summary, indent=2))


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from training.policy_runs import ppo_config_fields

    names = sorted(ppo_config_fields())
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
