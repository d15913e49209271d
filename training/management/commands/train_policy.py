"""python manage.py train_policy [--batch NAME ...] [--steps N] [--set KEY=VALUE ...] [--wait]"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training import services
from training.follow import follow_and_report, parse_overrides
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
            follow_and_report(self, run, progress=not options["no_progress"])


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from training.policy_runs import ppo_config_fields

    return parse_overrides(pairs, ppo_config_fields())
