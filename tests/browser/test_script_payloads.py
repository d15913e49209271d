"""Script payloads in every text an annotator sees, in a real browser: none runs, on the page
as first served nor in the workspace the page's script swaps in after a submit."""

from typing import Any

import pytest

from annotation.models import Completion, Prompt
from annotation.roles import Role, user_set_role
from tests.factories import BatchFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-test-password"
PAYLOADS = [
    "<script>window.__xss = 'script'; alert('script')</script>",
    "<img src=x onerror=\"window.__xss = 'img'; alert('img')\">",
    "<svg onload=\"window.__xss = 'svg'\"></svg>",
    "[click](javascript:window.__xss='link')",
    "<a href=\"javascript:window.__xss='a'\">a</a>",
    "<iframe srcdoc=\"<script>parent.__xss='iframe'</script>\"></iframe>",
]
EVIL = " ".join(PAYLOADS)


@pytest.fixture
def evil_batch() -> None:
    batch = BatchFactory(
        name=f"batch {PAYLOADS[0]}", overlap=1, k_min=2, guidelines=f"Guidelines {EVIL}"
    )
    for number in range(2):
        prompt = Prompt.objects.create(
            batch=batch,
            text=f"Prompt {number} {EVIL}",
            messages=[
                {"role": "system", "content": f"System {EVIL}"},
                {"role": f"user {PAYLOADS[1]}", "content": f"Prompt {number} {EVIL}"},
            ],
            external_id=f"evil-{number}",
        )
        for position, payload in enumerate(PAYLOADS):
            Completion.objects.create(prompt=prompt, position=position, text=f"Answer {payload}")
    user = UserFactory(username="rita")
    user_set_role(user=user, role=Role.ANNOTATOR)


def test_no_payload_runs_on_the_ranking_page(page, live_server, evil_batch) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    # when: rita logs in and the first prompt is shown
    page.goto(f"{live_server.url}/annotate/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#cards .card")
    first = page.inner_text(".prompt")

    # then: the payloads are text on the page, and none ran
    assert "<script>" in page.inner_text(".statusbar")  # the batch name, as typed
    assert "Prompt" in first
    page.wait_for_timeout(300)  # an onerror or onload would have fired by now
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert page.locator("a[href^='javascript:']").count() == 0
    assert page.locator("iframe, svg[onload], img[onerror]").count() == 0
    first_id = page.get_attribute("#workspace", "data-assignment-id")

    # when: she submits the order as shown and the page's script swaps in the next workspace
    page.keyboard.press("Enter")
    page.click("#confirm-unchanged button[value=submit]")
    page.wait_for_function(
        f"() => document.getElementById('workspace').dataset.assignmentId !== '{first_id}'"
    )
    page.wait_for_selector("#cards .card")
    page.wait_for_timeout(300)

    # then: the next prompt's payloads did not run either
    assert "Prompt" in page.inner_text(".prompt")
    assert page.evaluate("window.__xss") is None
    assert page.locator("iframe, svg[onload], img[onerror]").count() == 0
    assert dialogs == []
