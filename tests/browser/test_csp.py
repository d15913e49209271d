"""The content security policy in a real browser: the pages people use (the login, the ranking
page through a submit, the training admin with its charts, the API documentation) run under
the policy every environment sends (config/csp.py) without a single violation. A page that
added an inline script or style would fail here."""

import pytest

from annotation.roles import Role, user_set_role
from tests.factories import BatchFactory, PromptFactory, UserFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-test-password"

# Runs before any of the page's own code: every violation the browser reports is recorded.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => {
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + e.sourceFile);
});
"""


@pytest.fixture
def csp_page(page):
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(RECORD_VIOLATIONS)

    def violations() -> list[str]:
        reported = page.evaluate("window.__csp")
        return reported + [text for text in console if "Content Security Policy" in text]

    page.violations = violations
    return page


def log_in(page, live_server, username: str, path: str) -> None:
    page.goto(f"{live_server.url}{path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("[type=submit]")


def test_the_ranking_page_runs_under_the_policy(csp_page, live_server) -> None:
    page = csp_page
    user_set_role(user=UserFactory(username="rita"), role=Role.ANNOTATOR)
    batch = BatchFactory(guidelines="Prefer **correct** answers.")
    PromptFactory(batch=batch, k=4)
    PromptFactory(batch=batch, k=4)

    response = page.goto(f"{live_server.url}/annotate/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    log_in(page, live_server, "rita", "/annotate/")
    page.wait_for_selector("#cards .card")
    first = page.get_attribute("#workspace", "data-assignment-id")
    # keyboard moves, a tie, an expanded card, submit, and the next prompt swapped in
    page.keyboard.press("3")
    page.keyboard.press("t")
    page.keyboard.press("e")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "id => document.getElementById('workspace').dataset.assignmentId !== id", arg=first
    )
    page.wait_for_selector("#cards .card")

    assert page.violations() == []


def test_the_admin_charts_and_the_api_docs_run_under_the_policy(csp_page, live_server) -> None:
    page = csp_page
    user_set_role(user=UserFactory(username="ada"), role=Role.ADMIN)
    run = TrainingRun.objects.create(
        kind="reward",
        status="succeeded",
        metrics=[{"step": s, "loss": 1 / s, "pair_accuracy": 0.5 + s / 40} for s in range(1, 11)],
    )

    log_in(page, live_server, "ada", "/admin/login/?next=/admin/")
    page.wait_for_selector("#content")
    page.goto(f"{live_server.url}/admin/training/trainingrun/{run.pk}/change/")
    page.wait_for_selector("svg[aria-label=losses] polyline")
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info", timeout=20_000)

    assert page.violations() == []
