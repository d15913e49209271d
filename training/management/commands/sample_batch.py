"""python manage.py sample_batch --from-batch NAME --k 4 --name NEW [--prompts FILE]
[--reference N] [--temperature T] [--top-p P] [--max-new-tokens N] [--seed S] [--wait]"""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training import services
from training.follow import follow_and_report
from training.policy_runs import UnknownBatch
from training.sampling_runs import (
    BatchNameTaken,
    NoPromotedPolicy,
    PromptFileErrors,
    SamplingOptions,
    read_prompt_file,
    sampling_run_create,
)


class Command(BaseCommand):
    help = (
        "Queue a sampling run: the promoted policy writes K completions per prompt into a new "
        "draft batch, for an admin to review and publish. The prompts are those of --from-batch, "
        "or of --prompts FILE (JSONL: {'prompt'} or {'messages'} a line, optional 'id')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = SamplingOptions()
        parser.add_argument("--name", required=True, help="name of the new draft batch")
        parser.add_argument(
            "--from-batch",
            help="batch whose prompts are sampled (and whose guidelines, overlap and priority "
            "the new batch takes)",
        )
        parser.add_argument("--prompts", type=Path, help="JSONL prompt file instead")
        parser.add_argument("--k", type=int, default=defaults.k, help="completions per prompt")
        parser.add_argument(
            "--reference",
            type=int,
            default=defaults.reference,
            help="more completions per prompt from the reference (base) policy",
        )
        parser.add_argument("--temperature", type=float, default=defaults.temperature)
        parser.add_argument("--top-p", type=float, default=defaults.top_p)
        parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["from_batch"] is None and options["prompts"] is None:
            raise CommandError("give --from-batch NAME or --prompts FILE")
        if options["max_new_tokens"] < 1:
            raise CommandError("--max-new-tokens must be at least 1")
        prompts = None
        if options["prompts"] is not None:
            try:
                prompts = read_prompt_file(options["prompts"])
            except PromptFileErrors as exc:
                raise CommandError(f"{len(exc.errors)} bad line(s):\n" + str(exc)) from None
        sampling = SamplingOptions(
            k=options["k"],
            reference=options["reference"],
            temperature=options["temperature"],
            top_p=options["top_p"],
            max_new_tokens=options["max_new_tokens"],
            seed=options["seed"],
        )
        try:
            run = sampling_run_create(
                name=options["name"],
                from_batch=options["from_batch"],
                prompts=prompts,
                options=sampling,
            )
        except services.RunAlreadyActive as exc:
            raise CommandError(f"{exc}; wait for it or cancel it in the admin") from None
        except (NoPromotedPolicy, UnknownBatch, BatchNameTaken, ValueError) as exc:
            raise CommandError(str(exc)) from None
        assert run.parent is not None
        self.stdout.write(
            f"queued sampling run {run.pk}: {len(run.config['prompts'])} prompts x {sampling.k} "
            f"from policy v{run.parent.version} into draft batch {options['name']!r}"
        )
        if options["wait"]:
            follow_and_report(self, run, progress=not options["no_progress"])
