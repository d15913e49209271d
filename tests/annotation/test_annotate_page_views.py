"""The ranking page's server side, without a browser: who may open it, and what it renders."""

import pytest

from annotation.models import Assignment
from annotation.roles import Role, user_set_role
from tests.annotation.conftest import make_annotator
from tests.factories import BatchFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_the_page_asks_anonymous_visitors_to_log_in(client) -> None:
    response = client.get("/annotate/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/annotate/")


def test_the_page_is_403_for_a_researcher(client) -> None:
    researcher = UserFactory()
    user_set_role(user=researcher, role=Role.RESEARCHER)
    client.force_login(researcher)

    response = client.get("/annotate/")

    assert response.status_code == 403
    assert "annotator role" in response.content.decode()
    assert not Assignment.objects.exists()


def test_the_page_renders_the_leased_prompt_with_sanitised_markdown(client) -> None:
    # given
    batch = BatchFactory(guidelines="Be **kind**. <script>alert(1)</script>")
    prompt = PromptFactory(batch=batch, k=3)
    prompt.completions.filter(position=0).update(text="`code` and <b>bold?</b>")
    annotator = make_annotator()
    client.force_login(annotator)

    # when
    page = client.get("/annotate/").content.decode()

    # then: one card per completion in the recorded order, markdown rendered, HTML escaped
    assignment = Assignment.objects.get(annotator=annotator)
    positions = [page.index(f'data-id="{pk}"') for pk in assignment.display_order]
    assert positions == sorted(positions)
    assert "<code>code</code> and &lt;b&gt;bold?&lt;/b&gt;" in page
    assert "<strong>kind</strong>" in page
    assert "<script>alert" not in page
    assert 'src="/static/annotation/annotate.js"' in page
    assert "<script>" not in page.replace('<script src="/static/annotation/annotate.js" defer>', "")


def test_the_fragment_says_when_nothing_is_left(client) -> None:
    client.force_login(make_annotator())

    response = client.get("/annotate/next/")

    assert response.status_code == 200
    assert "Nothing left to rank" in response.content.decode()
