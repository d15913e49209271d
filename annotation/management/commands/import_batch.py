"""python manage.py import_batch PATH [PATH ...] --name NAME [--k-min N] [--k-max N] [--publish]"""

import time
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from tqdm import tqdm

from annotation.imports import ImportErrors, read_records
from annotation.models import PromptBatch
from annotation.rankings import InvalidRanking
from annotation.services import batch_create, batch_import_records

MAX_ERRORS_SHOWN = 50


class Command(BaseCommand):
    help = (
        "Import prompts, completions and optional rankings from JSONL or CSV files into a batch. "
        "All or nothing: a file with a bad line writes nothing and names the line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "paths", nargs="+", type=Path, metavar="PATH", help="JSONL or CSV file(s)"
        )
        parser.add_argument("--name", required=True, help="batch name")
        parser.add_argument("--k-min", type=int, default=4, help="fewest completions (default 4)")
        parser.add_argument("--k-max", type=int, default=9, help="most completions (default 9)")
        parser.add_argument("--overlap", type=int, default=3, help="human rankings per prompt")
        parser.add_argument("--priority", type=int, default=0)
        parser.add_argument("--guidelines", type=Path, help="a text or markdown file of guidelines")
        parser.add_argument(
            "--publish", action="store_true", help="publish the batch to annotators"
        )
        parser.add_argument(
            "--append",
            action="store_true",
            help="add to an existing batch; prompts whose id it already holds are skipped",
        )
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        paths: list[Path] = options["paths"]
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
        guidelines = ""
        if options["guidelines"]:
            guidelines = options["guidelines"].read_text(encoding="utf-8")

        existing = PromptBatch.objects.filter(name=options["name"]).first()
        if existing is not None and not options["append"]:
            raise CommandError(
                f"batch {options['name']!r} already exists; pass --append to add to it"
            )
        k_range = (
            (existing.k_min, existing.k_max) if existing else (options["k_min"], options["k_max"])
        )

        started = time.perf_counter()
        total = sum(path.stat().st_size for path in paths)
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc="reading",
            disable=options["no_progress"] or None,
        ) as bar:
            try:
                records = read_records(paths, k_range=k_range, progress=bar.update)
            except ImportErrors as exc:
                for error in exc.errors[:MAX_ERRORS_SHOWN]:
                    self.stderr.write(str(error))
                if len(exc.errors) > MAX_ERRORS_SHOWN:
                    self.stderr.write(f"... and {len(exc.errors) - MAX_ERRORS_SHOWN} more")
                raise CommandError(f"{len(exc.errors)} bad line(s); nothing was written.") from None

        try:
            with transaction.atomic():
                batch = self._batch(options, guidelines)
                result = batch_import_records(batch=batch, records=records)
        except (InvalidRanking, ValidationError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            raise CommandError(f"{message}; nothing was written.") from None

        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"batch {result.batch.name!r} ({result.batch.status}): {result.prompts} prompts, "
            f"{result.completions} completions, {result.rankings} rankings, "
            f"{result.comparisons} comparisons"
            + (f", {result.skipped_existing} already present" if result.skipped_existing else "")
            + f" in {elapsed:.1f} s"
        )

    def _batch(self, options: dict[str, Any], guidelines: str) -> PromptBatch:
        status = PromptBatch.Status.PUBLISHED if options["publish"] else PromptBatch.Status.DRAFT
        existing = PromptBatch.objects.select_for_update().filter(name=options["name"]).first()
        if existing is not None:
            if not options["append"]:
                raise CommandError(
                    f"batch {options['name']!r} already exists; pass --append to add to it"
                )
            if options["publish"] and existing.status != status:
                existing.status = status
                existing.save(update_fields=["status"])
            return existing
        return batch_create(
            name=options["name"],
            k_min=options["k_min"],
            k_max=options["k_max"],
            overlap=options["overlap"],
            priority=options["priority"],
            guidelines=guidelines,
            status=status,
        )
