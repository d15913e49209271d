"""`python manage.py add_user NAME --role annotator|researcher|admin [--password P]`

Creates the user, or updates the role (and password, when given) of an existing one, and
prints the user's API token. Without --password the user can use only the API token until
an admin sets one: RankLoop never invents a password that would then sit in a terminal.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from annotation.roles import Role, user_set_role


class Command(BaseCommand):
    help = "Create a user (or change an existing user's role) and print their API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--password", default=None)
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"].strip()
        if not username:
            raise CommandError("the username must not be empty")
        User = get_user_model()
        try:
            User.username_validator(username)
            if len(username) > 150:
                raise ValidationError("a username has at most 150 characters")
        except ValidationError as exc:
            raise CommandError(f"username {username!r}: {'; '.join(exc.messages)}") from exc
        password: str | None = options["password"]
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=username, defaults={"email": options["email"]}
            )
            if password is not None:
                try:
                    validate_password(password, user)
                except ValidationError as exc:
                    raise CommandError("; ".join(exc.messages)) from exc
                user.set_password(password)
            elif created:
                user.set_unusable_password()
            user.save()
            user_set_role(user=user, role=Role(options["role"]))
            token, _ = Token.objects.get_or_create(user=user)
        verb = "created" if created else "updated"
        self.stderr.write(f"{verb} {username} ({options['role']})")
        self.stdout.write(token.key)
