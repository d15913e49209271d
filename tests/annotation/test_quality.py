"""Annotation quality through the API and the command line: gold prompts mixed into the queue,
gold scores that warn and pause, attention checks that never reach exports, extra annotators
for low agreement, and `batch_report` on simulated annotators."""

import json
import random
from io import StringIO

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_celery_beat.models import PeriodicTask

from annotation.admin import PromptForm
from annotation.agreement import kendalls_w, mid_ranks
from annotation.exports import ExportOptions, Kind, RankingFilter, export_stream
from annotation.leases import assignment_next, assignment_submit
from annotation.models import (
    AnnotatorQuality,
    Assignment,
    Comparison,
    Prompt,
    PromptQuality,
    Ranking,
    RankingQuality,
)
from annotation.quality import (
    annotator_resume,
    attention_checks_add,
    gold_reference_set,
    quality_refresh,
)
from annotation.rankings import InvalidRanking
from annotation.snapshots import snapshot_create, snapshot_rankings
from annotation.tasks import refresh_quality
from tests.annotation.conftest import client_for, make_annotator
from tests.factories import BatchFactory, PromptFactory, completion_ids

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/assignments/next/"


def ranking_url(assignment_id: int) -> str:
    return f"/api/v1/assignments/{assignment_id}/ranking/"


def page_for(user, url: str):
    client = Client()
    client.force_login(user)
    return client.get(url)


def submit(api, body: dict, order: list[int], **extra) -> dict:
    response = api.post(ranking_url(body["id"]), {"order": order, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_gold_prompt_is_served_like_any_other_and_a_copier_scores_1() -> None:
    batch = BatchFactory(overlap=1, gold_rate=1.0)
    gold = PromptFactory(batch=batch, k=4)
    PromptFactory(batch=batch, k=4)
    reference = list(reversed(completion_ids(gold)))
    gold_reference_set(prompt=gold, groups=reference)
    api = client_for(annotator := make_annotator())

    body = api.get(NEXT).json()

    assert body["prompt"]["id"] == gold.pk
    assert set(body) == {"id", "batch", "guidelines", "prompt", "completions", "lease_expires_at"}
    assert all(set(c) == {"id", "text"} for c in body["completions"])
    submit(api, body, reference)
    assert RankingQuality.objects.get(ranking__prompt=gold).gold_tau == pytest.approx(1.0)
    standing = AnnotatorQuality.objects.get(annotator=annotator)
    assert standing.gold_score == pytest.approx(1.0)
    assert standing.gold_count == 1
    # The gold prompt is done for them; the ordinary prompt comes next.
    assert api.get(NEXT).json()["prompt"]["id"] != gold.pk


def test_gold_prompts_are_not_bound_by_overlap_and_stay_out_of_the_ordinary_queue() -> None:
    batch = BatchFactory(overlap=1, gold_rate=0.0)
    gold = PromptFactory(batch=batch, k=3)
    gold_reference_set(prompt=gold, groups=completion_ids(gold))
    # At rate 0 nobody gets it, not even through the ordinary queue.
    assert client_for(make_annotator()).get(NEXT).status_code == 204
    batch.gold_rate = 1.0
    batch.save()
    for _ in range(3):  # overlap 1, yet three annotators rank it
        api = client_for(make_annotator())
        body = api.get(NEXT).json()
        assert body["prompt"]["id"] == gold.pk
        submit(api, body, completion_ids(gold))
    assert Prompt.objects.get(pk=gold.pk).human_ranking_count == 3


def test_a_reference_ranking_must_be_a_partition_of_the_completions() -> None:
    prompt = PromptFactory(k=3)
    with pytest.raises(InvalidRanking):
        gold_reference_set(prompt=prompt, groups=completion_ids(prompt)[:2])
    assert Prompt.objects.get(pk=prompt.pk).gold_ranking is None


def test_poor_gold_scores_warn_then_pause_until_an_admin_resumes(settings) -> None:
    settings.GOLD_MIN_RANKINGS = 2
    settings.GOLD_WARN_BELOW = 0.5
    settings.GOLD_PAUSE_BELOW = 0.2
    batch = BatchFactory(overlap=3, gold_rate=1.0)
    golds = PromptFactory.create_batch(4, batch=batch, k=4)
    for gold in golds:
        gold_reference_set(prompt=gold, groups=completion_ids(gold))
    PromptFactory.create_batch(3, batch=batch, k=4)
    sloppy, bad = make_annotator("sloppy"), make_annotator("bad")

    # Two swapped pairs of four: tau (4 - 2) / 6 = 1/3, a warning but still work.
    api = client_for(sloppy)
    for _ in range(2):
        body = api.get(NEXT).json()
        a, b, c, d = completion_ids(Prompt.objects.get(pk=body["prompt"]["id"]))
        submit(api, body, [b, a, d, c])
    standing = AnnotatorQuality.objects.get(annotator=sloppy)
    assert standing.status == AnnotatorQuality.Status.WARNED
    assert standing.gold_score == pytest.approx(1 / 3)
    assert api.get(NEXT).status_code == 200
    assert b"differ a lot from the reference" in page_for(sloppy, "/annotate/").content

    # Reversed twice: tau -1, paused; no more work although prompts are open.
    api = client_for(bad)
    for _ in range(2):
        body = api.get(NEXT).json()
        ids = completion_ids(Prompt.objects.get(pk=body["prompt"]["id"]))
        submit(api, body, list(reversed(ids)))
    assert AnnotatorQuality.objects.get(annotator=bad).status == AnnotatorQuality.Status.PAUSED
    assert api.get(NEXT).status_code == 204
    assert b"Your work is paused" in page_for(bad, "/annotate/").content

    annotator_resume(annotator=bad, decided_by=None)

    assert api.get(NEXT).status_code == 200
    assert AnnotatorQuality.objects.get(annotator=bad).gold_count == 0


def test_attention_checks_are_shown_scored_and_never_exported(postgres) -> None:
    batch = BatchFactory(name="att", overlap=1, k_min=4, k_max=4)
    prompts = PromptFactory.create_batch(2, batch=batch, k=4)
    assert attention_checks_add(batch=batch, share=1.0, seed=1) == 2
    checks = {p.pk: Prompt.objects.get(pk=p.pk).attention_check for p in prompts}
    assert all(check is not None for check in checks.values())
    # One answer cut off mid-sentence, one answer to the other prompt.
    first, second = (checks[p.pk] for p in prompts)
    own = [c.text for c in prompts[0].completions.exclude(pk=first.pk)]
    assert any(text.startswith(first.text) and len(first.text) < len(text) for text in own)
    assert not first.text.endswith((".", "!", "?"))
    assert second.text in [c.text for c in prompts[0].completions.exclude(pk=first.pk)]
    api = client_for(annotator := make_annotator())

    results = []
    for check_last in (True, False):
        body = api.get(NEXT).json()
        check = checks[body["prompt"]["id"]]
        shown = [c["id"] for c in body["completions"]]
        assert len(shown) == 5
        assert check.pk in shown
        real = [pk for pk in shown if pk != check.pk]
        order = [*real, check.pk] if check_last else [check.pk, *real]
        results.append(submit(api, body, order))

    # The stored rankings know nothing of the check: K = 4, six comparisons each.
    assert [r["comparisons"] for r in results] == [6, 6]
    check_ids = {check.pk for check in checks.values()}
    for ranking in Ranking.objects.all():
        assert ranking.k == 4
        assert not check_ids & {pk for group in ranking.groups for pk in group}
        assert not check_ids & set(ranking.display_order)
    assert not Comparison.objects.filter(winner_id__in=check_ids).exists()
    assert not Comparison.objects.filter(loser_id__in=check_ids).exists()
    passed = RankingQuality.objects.filter(annotator=annotator).values_list(
        "attention_passed", flat=True
    )
    assert sorted(passed, key=bool) == [False, True]

    # Neither exports nor the snapshot a training run reads contain the degraded completions.
    def export(kind: Kind) -> list[dict]:
        data = b"".join(export_stream(ExportOptions(kind=kind, filter=RankingFilter())))
        assert b"attention-check" not in data  # the checks' source
        return [json.loads(line) for line in data.splitlines()]

    assert [len(line["completions"]) for line in export(Kind.RANKINGS)] == [4, 4]
    pairs = export(Kind.COMPARISONS)
    assert len(pairs) == 12
    assert not check_ids & ({p["winner_id"] for p in pairs} | {p["loser_id"] for p in pairs})
    assert len(export(Kind.PREFERENCE)) == 12
    snapshot = snapshot_create(batches=["att"])
    lines = list(snapshot_rankings(snapshot=snapshot))
    assert [len(line["completions"]) for line in lines] == [4, 4]

    out = StringIO()
    call_command("batch_report", "att", "--json", stdout=out)
    row = orjson.loads(out.getvalue())["annotators"][0]
    assert row["attention_checks"] == 2
    assert row["attention_pass_rate"] == pytest.approx(0.5)


def test_low_agreement_prompts_get_extra_annotators_up_to_the_cap() -> None:
    batch = BatchFactory(overlap=2, extra_annotators_max=1, agreement_threshold=0.9)
    prompt = PromptFactory(batch=batch, k=4)
    ids = completion_ids(prompt)
    for order in (ids, list(reversed(ids))):
        api = client_for(make_annotator())
        submit(api, api.get(NEXT).json(), order)
    assert client_for(make_annotator()).get(NEXT).status_code == 204

    assert quality_refresh(batch_ids=[batch.pk]) == 1

    assert PromptQuality.objects.get(prompt=prompt).kendall_w == pytest.approx(0.0)
    assert Prompt.objects.get(pk=prompt.pk).extra_overlap == 1
    third = client_for(make_annotator())
    submit(third, third.get(NEXT).json(), ids)
    quality_refresh(batch_ids=[batch.pk])
    # Still below 0.9, but the cap is reached: nobody else gets it.
    w = PromptQuality.objects.get(prompt=prompt).kendall_w
    assert w is not None
    assert w < 0.9
    assert Prompt.objects.get(pk=prompt.pk).extra_overlap == 1
    assert client_for(make_annotator()).get(NEXT).status_code == 204


def test_refresh_recomputes_only_prompts_with_new_rankings() -> None:
    batch = BatchFactory(overlap=2)
    PromptFactory.create_batch(3, batch=batch, k=3)
    api = client_for(make_annotator())
    for _ in range(3):
        body = api.get(NEXT).json()
        submit(api, body, [c["id"] for c in body["completions"]])
    assert quality_refresh(batch_ids=[batch.pk]) == 3
    assert quality_refresh(batch_ids=[batch.pk]) == 0
    other = client_for(make_annotator())
    body = other.get(NEXT).json()
    submit(other, body, [c["id"] for c in body["completions"]])
    assert quality_refresh(batch_ids=[batch.pk]) == 1


def simulate(batch, annotators: dict, *, rng: random.Random, duration_ms: int = 6000) -> None:
    """Each annotator ranks every prompt the queue gives them with their own strategy."""
    for user, strategy in annotators.items():
        while (assignment := assignment_next(annotator=user)) is not None:
            truth = completion_ids(assignment.prompt)  # position 0 is the best answer
            order = strategy(truth, list(assignment.display_order), rng)
            assignment_submit(
                annotator=user,
                assignment_id=assignment.pk,
                groups=[[pk] for pk in order],
                duration_ms=duration_ms,
            )


def careful(truth, shown, rng):
    order = truth[:]
    if rng.random() < 0.3:
        i = rng.randrange(len(order) - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
    return order


def by_position(truth, shown, rng):
    return shown


def at_random(truth, shown, rng):
    order = truth[:]
    rng.shuffle(order)
    return order


def test_batch_report_on_simulated_annotators(tmp_path) -> None:
    batch = BatchFactory(name="sim", overlap=5, k_min=5, k_max=5)
    prompts = PromptFactory.create_batch(40, batch=batch, k=5)
    gold = prompts[0]
    gold_reference_set(prompt=gold, groups=completion_ids(gold))
    batch.gold_rate = 1.0
    batch.save()
    users = {
        make_annotator("careful1"): careful,
        make_annotator("careful2"): careful,
        make_annotator("careful3"): careful,
        make_annotator("positional"): by_position,
        make_annotator("random"): at_random,
    }
    simulate(batch, users, rng=random.Random(11))

    out = StringIO()
    call_command("batch_report", "sim", "--json", stdout=out)
    report = orjson.loads(out.getvalue())

    rows = {row["annotator"]: row for row in report["annotators"]}
    assert rows["positional"]["position_bias"] > 0.95
    assert rows["positional"]["copied_order_rate"] == pytest.approx(1.0)
    assert abs(rows["random"]["loo_tau"]) < 0.2
    assert rows["careful1"]["loo_tau"] > 0.4
    assert abs(rows["careful1"]["position_bias"]) < 0.2
    assert rows["careful1"]["gold_score"] == pytest.approx(1.0, abs=0.34)
    assert report["progress"]["prompts"] == 40
    assert report["progress"]["gold_prompts"] == 1
    assert report["progress"]["rankings_submitted"] == 39 * 5
    assert report["agreement"]["prompts_measured"] == 40
    assert sum(b["prompts"] for b in report["agreement"]["histogram"]) == 40
    assert report["throughput"]["last_hour"] == 40 * 5
    assert report["throughput"]["timeline"][-1]["cumulative"] == 40 * 5

    # A stored W is the formula's W over the prompt's rankings.
    prompt = prompts[5]
    ids = completion_ids(prompt)
    rows_of_ranks = [mid_ranks(r.groups, ids) for r in Ranking.objects.filter(prompt=prompt)]
    assert PromptQuality.objects.get(prompt=prompt).kendall_w == pytest.approx(
        kendalls_w(rows_of_ranks)
    )
    # Seconds per 1,000 characters: 6 s over the prompt and its five answers.
    chars = len(prompt.text) + sum(len(c.text) for c in prompt.completions.all())
    figure = RankingQuality.objects.filter(prompt=prompt).first()
    assert figure.ms_per_kchar == pytest.approx(6000 * 1000 / chars)

    # The consensus, as the rankings export counts completions: indices in position order.
    consensus_file = tmp_path / "consensus.jsonl"
    call_command("batch_report", "sim", "--consensus", str(consensus_file), stdout=StringIO())
    lines = [json.loads(line) for line in consensus_file.read_text().splitlines()]
    assert len(lines) == 40
    # Every completion meets every other once per ranking, so Bradley-Terry orders them by
    # their wins: the consensus's first group is exactly the completions with the most wins.
    for line in lines:
        ids = completion_ids(Prompt.objects.get(pk=line["prompt_id"]))
        wins = dict.fromkeys(range(len(ids)), 0)
        for ranking in Ranking.objects.filter(prompt_id=line["prompt_id"]):
            for place, group in enumerate(ranking.groups):
                below = sum(len(g) for g in ranking.groups[place + 1 :])
                for pk in group:
                    wins[ids.index(pk)] += below
        best = max(wins.values())
        assert sorted(line["consensus"][0]) == [i for i, n in wins.items() if n == best]
    # The careful majority puts the first completion at the top of most prompts.
    assert sum(0 in line["consensus"][0] for line in lines) >= 24
    assert all(line["raters"] == 5 for line in lines[1:])

    text = StringIO()
    call_command("batch_report", "sim", stdout=text)
    assert "positional" in text.getvalue()
    assert "Kendall's W mean" in text.getvalue()


def test_batch_report_names_the_batches_when_the_name_is_wrong() -> None:
    BatchFactory(name="known")
    with pytest.raises(CommandError, match=r"no batch named 'nope' .*known"):
        call_command("batch_report", "nope")


def test_the_dashboard_is_for_staff_only() -> None:
    batch = BatchFactory()
    assert page_for(make_annotator(), f"/quality/{batch.pk}/").status_code == 403
    admin = make_annotator("boss")
    admin.is_staff = True
    admin.save()
    page = page_for(admin, f"/quality/{batch.pk}/")
    assert page.status_code == 200
    assert b"<svg" in page.content
    assert page_for(admin, "/quality/999999/").status_code == 404
    assert Assignment.objects.count() == 0


def test_the_admin_checks_a_reference_ranking_and_resumes_a_paused_annotator() -> None:
    prompt = PromptFactory(k=3)
    ids = completion_ids(prompt)
    data = {
        "batch": prompt.batch_id,
        "text": prompt.text,
        "messages": json.dumps(prompt.messages),
        "external_id": prompt.external_id,
        "metadata": "{}",
    }
    form = PromptForm(instance=prompt, data={**data, "gold_ranking": json.dumps([ids[0], ids[1]])})
    assert not form.is_valid()
    assert "not a reference ranking" in str(form.errors["gold_ranking"])
    form = PromptForm(
        instance=prompt, data={**data, "gold_ranking": json.dumps([[ids[2]], ids[:2]])}
    )
    assert form.is_valid(), form.errors
    form.save()
    assert Prompt.objects.get(pk=prompt.pk).gold_ranking == [[ids[2]], ids[:2]]

    paused = make_annotator("paused")
    AnnotatorQuality.objects.create(annotator=paused, status=AnnotatorQuality.Status.PAUSED)
    admin = make_annotator("boss")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/annotation/annotatorquality/",
        {"action": "resume", "_selected_action": [paused.pk]},
    )
    assert response.status_code == 302
    standing = AnnotatorQuality.objects.get(annotator=paused)
    assert standing.status == AnnotatorQuality.Status.OK
    assert standing.decided_by == admin
    assert standing.gold_since is not None


def test_the_beat_task_refreshes_what_changed() -> None:
    assert PeriodicTask.objects.get(task="annotation.tasks.refresh_quality").enabled
    batch = BatchFactory(overlap=2)
    prompt = PromptFactory(batch=batch, k=3)
    api = client_for(make_annotator())
    submit(api, api.get(NEXT).json(), completion_ids(prompt))

    assert refresh_quality.delay().get() == 1
    assert PromptQuality.objects.get(prompt=prompt).raters == 1
    assert refresh_quality.delay().get() == 0
