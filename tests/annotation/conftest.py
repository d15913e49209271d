import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.roles import Role, user_set_role
from tests.factories import UserFactory


def make_annotator(username: str | None = None):
    user = UserFactory(username=username) if username else UserFactory()
    user_set_role(user=user, role=Role.ANNOTATOR)
    return user


def client_for(user) -> APIClient:
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def annotator():
    return make_annotator()


@pytest.fixture
def api(annotator) -> APIClient:
    return client_for(annotator)
