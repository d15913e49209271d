"""The ranking page in a real browser: log in, rank with the mouse and with the keyboard only,
tie, "none acceptable", submit, and check what landed in PostgreSQL."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, Comparison, Ranking
from annotation.roles import Role, user_set_role
from tests.factories import BatchFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-test-password"


@pytest.fixture
def annotator():
    user = UserFactory(username="rita")
    user_set_role(user=user, role=Role.ANNOTATOR)
    return user


@pytest.fixture
def batch():
    return BatchFactory(
        name="helpfulness", overlap=2, guidelines="Prefer **correct** answers.", k_min=2
    )


def log_in(page, live_server) -> None:
    page.goto(f"{live_server.url}/annotate/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#cards .card")


def shown_ids(page) -> list[int]:
    return [
        int(x)
        for x in page.eval_on_selector_all("#cards .card", "els => els.map(e => e.dataset.id)")
    ]


def shown_groups(page) -> list[list[int]]:
    """The ranking as the page shows it: card ids grouped by their rank badges."""
    rows = page.eval_on_selector_all(
        "#cards .card", "els => els.map(e => [e.dataset.id, e.dataset.rankValue])"
    )
    groups: dict[str, list[int]] = {}
    for card_id, rank in rows:
        groups.setdefault(rank, []).append(int(card_id))
    return [groups[rank] for rank in sorted(groups, key=int)]


def card(page, card_id: int):
    return page.locator(f'#cards .card[data-id="{card_id}"]')


def drag(page, card_id: int, onto_id: int, where: str) -> None:
    """Drag a card by its header and drop it on another card's top edge, middle or bottom edge."""
    head = card(page, card_id).locator(".card-head").bounding_box()
    target = card(page, onto_id).bounding_box()
    y = {
        "before": target["y"] + 4,
        "middle": target["y"] + target["height"] / 2,
        "after": target["y"] + target["height"] - 4,
    }[where]
    page.mouse.move(head["x"] + 60, head["y"] + head["height"] / 2)
    page.mouse.down()
    page.mouse.move(head["x"] + 60, y, steps=12)
    page.mouse.up()


def submitted_ranking(page, assignment_id: int) -> Ranking:
    page.wait_for_function(
        f"() => document.getElementById('workspace').dataset.assignmentId !== '{assignment_id}'"
    )
    ranking = Assignment.objects.select_related("ranking").get(pk=assignment_id).ranking
    assert ranking is not None
    return ranking


def current_assignment(page) -> int:
    return int(page.get_attribute("#workspace", "data-assignment-id"))


def test_log_in_rank_by_dragging_with_a_tie_and_submit(page, live_server, annotator, batch):
    # given
    PromptFactory(batch=batch, k=4)
    PromptFactory(batch=batch, k=4)
    log_in(page, live_server)
    assignment_id = current_assignment(page)
    a, b, c, d = shown_ids(page)
    assert page.locator("[data-rank]").all_inner_texts() == ["1", "2", "3", "4"]
    page.evaluate("window.__sameDocument = true")

    # when: D dragged to the top, then C dropped onto A's middle to tie with it
    drag(page, d, onto_id=a, where="before")
    assert shown_groups(page) == [[d], [a], [b], [c]]
    drag(page, c, onto_id=a, where="middle")
    assert shown_groups(page) == [[d], [a, c], [b]]
    assert card(page, c).locator("[data-rank]").inner_text() == "2="
    page.keyboard.press("Enter")

    # then: the ranking and its comparisons are in PostgreSQL, and the next prompt came in
    # without a page load
    ranking = submitted_ranking(page, assignment_id)
    assert ranking.annotator == annotator
    assert ranking.groups == [[d], [a, c], [b]]
    pairs = {
        (cmp.winner_id, cmp.loser_id, cmp.is_tie)
        for cmp in Comparison.objects.filter(ranking=ranking)
    }
    tie = (min(a, c), max(a, c), True)
    assert pairs == {(d, a, False), (d, c, False), (d, b, False), tie, (a, b, False), (c, b, False)}
    assert page.evaluate("window.__sameDocument") is True
    assert "Saved: 6 comparisons." in page.inner_text("[data-message]")
    assert "1 done today" in " ".join(page.inner_text("[data-testid=progress]").split())


def test_rank_with_the_keyboard_only(page, live_server, annotator, batch):
    # given: the first card has the focus when the page opens
    PromptFactory(batch=batch, k=6)
    log_in(page, live_server)
    assignment_id = current_assignment(page)
    a, b, c, d, e, f = shown_ids(page)
    assert page.evaluate("document.activeElement.dataset.id") == str(a)

    # when: A to rank 3, up one, tie it with the card above; Tab to C, send it last;
    # flag it with the keyboard too (Shift+Tab back is not needed: flags are buttons)
    page.keyboard.press("3")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("t")
    assert shown_groups(page) == [[b, a], [c], [d], [e], [f]]
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.id") == str(c)
    page.keyboard.press("6")
    page.keyboard.press("ArrowDown")  # already last: stays
    assert shown_groups(page) == [[b, a], [d], [e], [f], [c]]
    page.keyboard.press("Enter")

    # then
    ranking = submitted_ranking(page, assignment_id)
    assert ranking.groups == [[b, a], [d], [e], [f], [c]]
    assert Comparison.objects.filter(ranking=ranking).count() == 15
    assert Comparison.objects.filter(ranking=ranking, is_tie=True).count() == 1
    assert ranking.display_order == [a, b, c, d, e, f]
    assert ranking.duration_ms is not None


def test_none_acceptable_with_a_flag_and_a_rationale(page, live_server, annotator, batch):
    PromptFactory(batch=batch, k=3)
    log_in(page, live_server)
    assignment_id = current_assignment(page)
    a, _, _ = shown_ids(page)

    card(page, a).locator("button[data-flag=unsafe]").click()
    card(page, a).locator("button[data-flag=off_topic]").click()
    page.keyboard.press("n")
    page.fill("[data-rationale]", "All three dodge the question.")
    page.click("[data-action=submit]")

    ranking = submitted_ranking(page, assignment_id)
    assert ranking.not_rankable
    assert ranking.flags == {str(a): ["off_topic", "unsafe"]}
    assert ranking.rationale == "All three dodge the question."
    assert not Comparison.objects.filter(ranking=ranking).exists()
    # The queue is empty for rita now: the page says so instead of a blank.
    assert "Nothing left to rank" in page.inner_text("#workspace")


def test_an_unchanged_order_asks_before_submitting(page, live_server, annotator, batch):
    PromptFactory(batch=batch, k=3)
    log_in(page, live_server)
    assignment_id = current_assignment(page)
    shown = shown_ids(page)

    page.keyboard.press("Enter")
    dialog = page.locator("#confirm-unchanged")
    assert dialog.is_visible()
    assert "Submit the order as shown?" in dialog.inner_text()
    page.click("#confirm-unchanged button[value=cancel]")
    assert not dialog.is_visible()
    assert not Ranking.objects.exists()

    page.keyboard.press("Enter")
    page.click("#confirm-unchanged button[value=submit]")

    assert submitted_ranking(page, assignment_id).groups == [[pk] for pk in shown]


def test_skip_with_s_moves_to_the_next_prompt(page, live_server, annotator, batch):
    first = PromptFactory(batch=batch, k=3)
    PromptFactory(batch=batch, k=3)
    log_in(page, live_server)
    assignment_id = current_assignment(page)

    page.keyboard.press("s")

    page.wait_for_function(
        f"() => document.getElementById('workspace').dataset.assignmentId !== '{assignment_id}'"
    )
    assert Assignment.objects.get(pk=assignment_id).status == Assignment.Status.SKIPPED
    assert Assignment.objects.get(status=Assignment.Status.ACTIVE).prompt_id != first.pk


def test_an_expired_lease_says_so(page, live_server, annotator, batch, settings):
    # given: leases of three seconds
    settings.ANNOTATION_LEASE_MINUTES = 0.05
    PromptFactory(batch=batch, k=3)
    log_in(page, live_server)

    # then: the countdown runs out and the page says the lease expired
    banner = page.locator("[data-expired]")
    banner.wait_for(state="visible", timeout=8000)
    assert "expired" in banner.inner_text()
    assert page.inner_text("[data-lease-left]") == "expired"
    assert page.is_disabled("[data-action=submit]")
    assert not Ranking.objects.exists()


def test_a_lease_that_expired_on_the_server_shows_the_409(page, live_server, annotator, batch):
    PromptFactory(batch=batch, k=3)
    log_in(page, live_server)
    assignment_id = current_assignment(page)
    Assignment.objects.filter(pk=assignment_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    page.keyboard.press("2")
    page.keyboard.press("Enter")

    page.locator("[data-expired]").wait_for(state="visible")
    assert "expired" in page.inner_text("[data-message]")
    assert not Ranking.objects.exists()


def test_html_and_script_in_a_completion_render_as_inert_text(page, live_server, annotator, batch):
    # given: a completion trying to run script in the annotator's session
    prompt = PromptFactory(batch=batch, k=2, text="Say hi <img src=x onerror=window.__xss=1>")
    payload = (
        "<img src=x onerror=\"window.__xss='img'\"> "
        "<script>window.__xss='script'</script> [click](javascript:window.__xss='link') "
        '<a href="#" onclick="window.__xss=\'a\'">a</a>'
    )
    prompt.completions.filter(position=0).update(text=payload)
    log_in(page, live_server)

    # then: the markup is shown as text and nothing ran
    bodies = page.locator("#cards .card-body").all_inner_texts()
    assert any("<img src=x onerror=" in text and "<script>" in text for text in bodies)
    assert "<img src=x onerror=" in page.inner_text(".chat")
    assert page.locator("#cards img, #cards script, .chat img").count() == 0
    assert page.locator("#cards a[href^=javascript]").count() == 0
    page.locator("#cards .card-body").first.click()
    assert page.evaluate("window.__xss") is None


def test_rank_by_touch(browser, live_server, annotator, batch):
    # given: a touch screen (Chrome DevTools' touch events become pointer events, as on a phone)
    PromptFactory(batch=batch, k=3)
    context = browser.new_context(viewport={"width": 420, "height": 900}, has_touch=True)
    page = context.new_page()
    log_in(page, live_server)
    assignment_id = current_assignment(page)
    a, b, c = shown_ids(page)
    head = card(page, c).locator(".card-head").bounding_box()
    top = card(page, a).bounding_box()
    x, y = head["x"] + 60, head["y"] + head["height"] / 2
    cdp = context.new_cdp_session(page)

    # when: a finger drags C above A
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for step in range(1, 11):
        to_y = y + (top["y"] + 4 - y) * step / 10
        cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": to_y}]}
        )
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    # then
    assert shown_groups(page) == [[c], [a], [b]]
    page.click("[data-action=submit]")
    assert submitted_ranking(page, assignment_id).groups == [[c], [a], [b]]
    context.close()
