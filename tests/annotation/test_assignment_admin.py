import pytest

from annotation.models import Assignment
from annotation.roles import Role, user_set_role
from tests.annotation.conftest import client_for, make_annotator
from tests.factories import BatchFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_admins_see_leases_and_queue_counters_read_only(client) -> None:
    # given: a lease
    prompt = PromptFactory(batch=BatchFactory(), k=3)
    client_for(make_annotator()).get("/api/v1/assignments/next/")
    assignment = Assignment.objects.get()
    admin = UserFactory()
    user_set_role(user=admin, role=Role.ADMIN)
    client.force_login(admin)

    # when / then
    leases = client.get("/admin/annotation/assignment/")
    assert leases.status_code == 200
    assert str(assignment) in leases.content.decode()
    detail = client.get(f"/admin/annotation/assignment/{assignment.pk}/change/")
    assert detail.status_code == 200
    prompt_page = client.get(f"/admin/annotation/prompt/{prompt.pk}/change/")
    assert prompt_page.status_code == 200
    assert 'name="lease_count"' not in prompt_page.content.decode()
