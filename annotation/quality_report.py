"""A batch's quality report: progress over time, throughput, the agreement distribution and the
annotators' figures. One selector feeds the dashboard and `manage.py batch_report`, so the two
always show the same numbers.

It reads the stored figures (`PromptQuality`, `RankingQuality`, `AnnotatorQuality`) with a
handful of aggregate queries; the caller refreshes the stale ones first with
`annotation.quality.quality_refresh`, which recomputes only prompts that got rankings since.
"""

import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, F, Max, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from annotation.models import (
    AnnotatorQuality,
    Assignment,
    Completion,
    Prompt,
    PromptBatch,
    PromptQuality,
    RankingQuality,
)

HISTOGRAM_BINS = 10


def batch_report(*, batch: PromptBatch, now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the batch as plain JSON-ready values."""
    now = now or timezone.now()
    return {
        "batch": batch.name,
        "status": batch.status,
        "overlap": batch.overlap,
        "agreement_threshold": batch.agreement_threshold,
        "extra_annotators_max": batch.extra_annotators_max,
        "gold_rate": batch.gold_rate,
        "progress": _progress(batch),
        "throughput": _throughput(batch, now),
        "agreement": _agreement(batch),
        "annotators": _annotators(batch),
    }


def _progress(batch: PromptBatch) -> dict[str, Any]:
    counts = Prompt.objects.filter(batch=batch).aggregate(
        prompts=Count("id"),
        gold_prompts=Count("id", filter=Q(gold_ranking__isnull=False)),
        attention_checks=Count("id", filter=Q(attention_check__isnull=False)),
        wanted=Sum(F("extra_overlap") + batch.overlap, filter=Q(gold_ranking__isnull=True)),
        submitted=Sum("human_ranking_count", filter=Q(gold_ranking__isnull=True)),
        gold_rankings=Sum("human_ranking_count", filter=Q(gold_ranking__isnull=False)),
        complete=Count(
            "id",
            filter=Q(
                gold_ranking__isnull=True,
                human_ranking_count__gte=F("extra_overlap") + batch.overlap,
            ),
        ),
        active_leases=Sum("lease_count"),
    )
    wanted = counts["wanted"] or 0
    submitted = counts["submitted"] or 0
    return {
        "prompts": counts["prompts"],
        "gold_prompts": counts["gold_prompts"],
        "attention_checks": counts["attention_checks"],
        "rankings_wanted": wanted,
        "rankings_submitted": submitted,
        "gold_rankings": counts["gold_rankings"] or 0,
        "prompts_complete": counts["complete"],
        "active_leases": counts["active_leases"] or 0,
        "share_done": round(min(submitted, wanted) / wanted, 4) if wanted else 0.0,
    }


def _throughput(batch: PromptBatch, now: datetime) -> dict[str, Any]:
    submitted = Assignment.objects.filter(prompt__batch=batch, status=Assignment.Status.SUBMITTED)
    span = submitted.aggregate(
        first=Min("finished_at"),
        last=Max("finished_at"),
        last_hour=Count("id", filter=Q(finished_at__gte=now - timedelta(hours=1))),
        last_day=Count("id", filter=Q(finished_at__gte=now - timedelta(days=1))),
        total=Count("id"),
    )
    first, last = span["first"], span["last"]
    by_day = first is not None and last - first > timedelta(days=3)
    trunc = TruncDay if by_day else TruncHour
    buckets = (
        submitted.annotate(bucket=trunc("finished_at"))
        .values("bucket")
        .annotate(rankings=Count("id"))
        .order_by("bucket")
    )
    timeline, cumulative = [], 0
    for row in buckets:
        cumulative += row["rankings"]
        timeline.append(
            {
                "start": row["bucket"].isoformat(),
                "rankings": row["rankings"],
                "cumulative": cumulative,
            }
        )
    hours = (last - first).total_seconds() / 3600 if first is not None else 0.0
    return {
        "bucket": "day" if by_day else "hour",
        "timeline": timeline,
        "last_hour": span["last_hour"],
        "last_24h": span["last_day"],
        "per_hour": round(span["total"] / hours, 2) if hours > 0 else None,
        "first": first.isoformat() if first else None,
        "last": last.isoformat() if last else None,
    }


def _agreement(batch: PromptBatch) -> dict[str, Any]:
    rows = list(
        PromptQuality.objects.filter(batch=batch, kendall_w__isnull=False).values_list(
            "kendall_w", "pair_agreement"
        )
    )
    ws = [w for w, _ in rows if w is not None]
    pairs = [p for _, p in rows if p is not None]
    histogram = [0] * HISTOGRAM_BINS
    for w in ws:
        histogram[min(int(w * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
    low = sum(w < batch.agreement_threshold for w in ws)
    extra = Prompt.objects.filter(batch=batch).aggregate(n=Sum("extra_overlap"))["n"] or 0
    return {
        "prompts_measured": len(ws),
        "mean_w": _round(statistics.fmean(ws)) if ws else None,
        "median_w": _round(statistics.median(ws)) if ws else None,
        "mean_pair_agreement": _round(statistics.fmean(pairs)) if pairs else None,
        "below_threshold": low,
        "extra_annotators_added": extra,
        "histogram": [
            {
                "from": index / HISTOGRAM_BINS,
                "to": (index + 1) / HISTOGRAM_BINS,
                "prompts": count,
            }
            for index, count in enumerate(histogram)
        ],
    }


def _annotators(batch: PromptBatch) -> list[dict[str, Any]]:
    figures = RankingQuality.objects.filter(batch=batch)
    rows = (
        figures.values("annotator_id", "annotator__username")
        .annotate(
            rankings=Count("ranking"),
            loo_tau=Avg("loo_tau"),
            pair_hits=Sum("pair_hits"),
            pair_total=Sum("pair_total"),
            position_bias=Avg("position_tau"),
            copied=Count("ranking", filter=Q(copied_order=True)),
            copied_known=Count("copied_order"),
            gold_score=Avg("gold_tau"),
            gold_rankings=Count("gold_tau"),
            attention_checks=Count("attention_passed"),
            attention_passed=Count("ranking", filter=Q(attention_passed=True)),
        )
        .order_by("annotator__username")
    )
    speeds: dict[int, list[float]] = {}
    for annotator_id, ms in figures.filter(ms_per_kchar__isnull=False).values_list(
        "annotator_id", "ms_per_kchar"
    ):
        if ms is not None:
            speeds.setdefault(annotator_id, []).append(ms)
    standing = dict(
        AnnotatorQuality.objects.filter(
            annotator_id__in=[row["annotator_id"] for row in rows]
        ).values_list("annotator_id", "status")
    )
    table = []
    for row in rows:
        speed = speeds.get(row["annotator_id"])
        table.append(
            {
                "annotator": row["annotator__username"],
                "annotator_id": row["annotator_id"],
                "rankings": row["rankings"],
                "loo_tau": _round(row["loo_tau"]),
                "pair_agreement": _ratio(row["pair_hits"], row["pair_total"]),
                "position_bias": _round(row["position_bias"]),
                "copied_order_rate": _ratio(row["copied"], row["copied_known"]),
                "seconds_per_1000_chars": _round(statistics.median(speed) / 1000)
                if speed
                else None,
                "gold_score": _round(row["gold_score"]),
                "gold_rankings": row["gold_rankings"],
                "attention_checks": row["attention_checks"],
                "attention_pass_rate": _ratio(row["attention_passed"], row["attention_checks"]),
                "status": standing.get(row["annotator_id"], AnnotatorQuality.Status.OK),
            }
        )
    return table


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _ratio(hits: int | None, total: int | None) -> float | None:
    return round(hits / total, 4) if hits is not None and total else None


def batch_consensus(*, batch: PromptBatch) -> Iterator[dict[str, Any]]:
    """The Bradley-Terry consensus of every measured prompt of the batch, one dict a prompt,
    in the rankings export's terms: completion indices in position order (attention checks
    left out), best first, a group of several a tie; with the ids, scores, W and raters."""
    figures = (
        PromptQuality.objects.filter(batch=batch, raters__gt=0)
        .select_related("prompt")
        .order_by("prompt_id")
    )
    for start in range(0, figures.count(), 1000):
        chunk = list(figures[start : start + 1000])
        positions: dict[int, list[int]] = {}
        for prompt_id, completion_id in (
            Completion.objects.filter(prompt_id__in=[f.prompt_id for f in chunk])
            .order_by("prompt_id", "position")
            .values_list("prompt_id", "id")
        ):
            positions.setdefault(prompt_id, []).append(completion_id)
        for quality in chunk:
            real = [
                pk
                for pk in positions.get(quality.prompt_id, [])
                if pk != quality.prompt.attention_check_id
            ]
            index = {pk: i for i, pk in enumerate(real)}
            yield {
                "prompt_id": quality.prompt_id,
                "external_id": quality.prompt.external_id,
                "batch": batch.name,
                "consensus": [[index[pk] for pk in group] for group in quality.consensus],
                "consensus_ids": quality.consensus,
                "scores": quality.consensus_scores,
                "kendall_w": quality.kendall_w,
                "pair_agreement": quality.pair_agreement,
                "raters": quality.raters,
            }
