"""python manage.py promote_model ID"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.models import ModelVersion
from training.services import ArtifactIncomplete, model_promote


class Command(BaseCommand):
    help = "Promote a model version (by id); the kind's promoted model is archived."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, help="the ModelVersion id")
        parser.add_argument("--reason", default="promoted by hand")

    def handle(self, *args: Any, **options: Any) -> None:
        version = ModelVersion.objects.filter(pk=options["id"]).first()
        if version is None:
            raise CommandError(f"no model version with id {options['id']}")
        try:
            promoted = model_promote(version=version, reason=options["reason"])
        except ArtifactIncomplete as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"promoted {promoted} ({promoted.artifact_path})")
