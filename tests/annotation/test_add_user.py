from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from annotation.roles import Role, user_role

pytestmark = pytest.mark.django_db


def _add_user(*args: str) -> str:
    out = StringIO()
    call_command("add_user", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_add_user_creates_the_user_with_a_role_and_prints_a_working_token(client) -> None:
    # when
    token = _add_user("ada", "--role", "annotator", "--password", "correct-horse-battery")

    # then
    user = get_user_model().objects.get(username="ada")
    assert user_role(user) == Role.ANNOTATOR
    assert user.check_password("correct-horse-battery")
    assert Token.objects.get(user=user).key == token
    response = client.get("/api/v1/assignments/next/", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 204


def test_add_user_again_changes_the_role_and_keeps_the_token() -> None:
    first = _add_user("bob", "--role", "annotator")
    second = _add_user("bob", "--role", "admin")

    user = get_user_model().objects.get(username="bob")
    assert first == second
    assert user_role(user) == Role.ADMIN
    assert user.is_staff
    assert not user.has_usable_password()


def test_add_user_refuses_a_weak_password_and_creates_nobody() -> None:
    with pytest.raises(CommandError, match="too short"):
        _add_user("carol", "--role", "researcher", "--password", "abc")

    assert not get_user_model().objects.filter(username="carol").exists()


def test_add_user_refuses_an_unknown_role() -> None:
    with pytest.raises(CommandError):
        _add_user("dave", "--role", "owner")
