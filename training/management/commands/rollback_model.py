"""python manage.py rollback_model KIND"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.models import ModelKind, ModelVersion
from training.services import ArtifactIncomplete, model_rollback


class Command(BaseCommand):
    help = "Archive the promoted model of KIND and promote the one promoted before it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=ModelKind.values)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            promoted = model_rollback(kind=options["kind"])
        except (ModelVersion.DoesNotExist, ArtifactIncomplete) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"rolled back: {promoted} is promoted again")
