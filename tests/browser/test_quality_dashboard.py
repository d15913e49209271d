"""The staff quality dashboard in headless chromium: the plots are drawn with data, the annotator
table sorts, and screenshots are kept for a person to look at (outside the repository: in
RANKLOOP_SCREENSHOT_DIR when set, else the test's temporary folder)."""

import os
import random
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import F

from annotation.leases import assignment_next, assignment_submit
from annotation.models import Assignment
from annotation.quality import gold_reference_set
from annotation.roles import Role, user_set_role
from tests.factories import BatchFactory, PromptFactory, UserFactory, completion_ids

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-test-password"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RANKLOOP_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def seed_batch():
    """A batch ranked by two careful annotators, a positional and a random one over a few
    hours."""
    batch = BatchFactory(name="helpfulness", overlap=4, k_min=4, k_max=4, gold_rate=0.3)
    prompts = PromptFactory.create_batch(24, batch=batch, k=4)
    for gold in prompts[:2]:
        gold_reference_set(prompt=gold, groups=completion_ids(gold))
    rng = random.Random(5)
    for name in ("careful", "careful2", "positional", "random"):
        user = UserFactory(username=name)
        user_set_role(user=user, role=Role.ANNOTATOR)
        while (assignment := assignment_next(annotator=user)) is not None:
            truth = completion_ids(assignment.prompt)
            shown = list(assignment.display_order)
            if name.startswith("careful"):
                order = truth
            elif name == "positional":
                order = shown
            else:
                order = rng.sample(truth, len(truth))
            assignment_submit(
                annotator=user,
                assignment_id=assignment.pk,
                groups=[[pk] for pk in order],
                duration_ms=rng.randint(5000, 20000),
            )
    # Spread the submissions over the last five hours, for the progress and throughput plots.
    for index, pk in enumerate(Assignment.objects.order_by("id").values_list("pk", flat=True)):
        Assignment.objects.filter(pk=pk).update(
            finished_at=F("finished_at") - timedelta(hours=5 - index % 5)
        )
    return batch


def test_the_dashboard_draws_every_plot_with_data_and_sorts_annotators(
    page, live_server, screenshots
):
    batch = seed_batch()
    admin = UserFactory(username="boss")
    user_set_role(user=admin, role=Role.ADMIN)

    page.goto(f"{live_server.url}/quality/")
    page.fill("input[name=username]", "boss")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.click("text=helpfulness")
    page.wait_for_selector("#annotators tbody tr")
    page.screenshot(path=str(screenshots / "quality-dashboard.png"), full_page=True)

    assert page.url.endswith(f"/quality/{batch.pk}/")
    # Progress over time: a line through one point per hour.
    assert page.locator("#chart-progress polyline.series").count() == 1
    assert page.locator("#chart-progress circle.point").count() >= 5
    assert page.locator("#chart-throughput rect.bar").count() >= 5
    # Agreement: ten bins of Kendall's W, some of them filled.
    heights = page.eval_on_selector_all(
        "#chart-agreement rect.bar", "els => els.map(e => Number(e.getAttribute('height')))"
    )
    assert len(heights) == 10
    assert sum(h > 0 for h in heights) >= 2
    assert page.locator("#chart-annotators circle.point").count() == 4
    assert page.locator("#chart-gold rect.bar").count() >= 1
    for chart in ("progress", "throughput", "agreement", "annotators"):
        assert "no data yet" not in page.locator(f"#chart-{chart}").inner_text()

    # Sorting by position bias, highest first: the annotator who ranks as shown tops it.
    page.click("#annotators th[data-key=position_bias] button")
    first = page.locator("#annotators tbody tr").first.locator("td").first.inner_text()
    assert first == "positional"
    page.click("#annotators th[data-key=loo_tau] button")
    first = page.locator("#annotators tbody tr").first.locator("td").first.inner_text()
    assert first.startswith("careful")
    page.screenshot(path=str(screenshots / "quality-dashboard-sorted.png"), full_page=True)
    assert (screenshots / "quality-dashboard.png").stat().st_size > 10_000
