"""The staff quality dashboard: a batch list, and per batch its progress over time, throughput,
agreement distribution and a sortable table of annotators, with the plots drawn on the server
(annotation/quality_charts.py). The figures come from `annotation.quality_report`, the same
selector `manage.py batch_report` prints."""

from datetime import datetime
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.models import PromptBatch
from annotation.quality import quality_refresh
from annotation.quality_charts import bar_chart_svg, line_chart_svg, scatter_svg
from annotation.quality_report import batch_report
from annotation.roles import Role, user_role

# The annotator table's columns: (report key, heading, what it means).
COLUMNS = [
    ("annotator", "Annotator", ""),
    ("rankings", "Rankings", "rankings with figures in this batch"),
    ("loo_tau", "LOO tau", "Kendall tau-b against the mean ranks of the prompt's other rankings"),
    ("pair_agreement", "Pair agreement", "share of item pairs ordered as the others did"),
    (
        "position_bias",
        "Position bias",
        "tau-b between display position and rank given (1: top shown = best)",
    ),
    ("copied_order_rate", "Copied order", "share of rankings submitted exactly as shown"),
    ("seconds_per_1000_chars", "s / 1000 chars", "median time per 1,000 characters read"),
    ("gold_score", "Gold score", "mean Kendall tau-b against gold reference rankings"),
    ("gold_rankings", "Gold n", ""),
    ("attention_pass_rate", "Attention pass", "share of attention checks ranked last"),
    ("status", "Status", "ok, warned or paused (paused annotators get no work)"),
]


def _staff_only(request: HttpRequest) -> HttpResponse | None:
    if user_role(request.user) != Role.ADMIN:
        return render(request, "annotation/forbidden_staff.html", status=403)
    return None


@login_required
def quality_index(request: HttpRequest) -> HttpResponse:
    if refused := _staff_only(request):
        return refused
    batches = PromptBatch.objects.order_by("-created_at")
    return render(request, "annotation/quality_index.html", {"batches": batches})


@login_required
def quality_batch(request: HttpRequest, batch_id: int) -> HttpResponse:
    if refused := _staff_only(request):
        return refused
    batch = PromptBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        raise Http404("no such batch")
    # Only prompts that got rankings since their figures were stored are recomputed.
    quality_refresh(batch_ids=[batch.pk])
    report = batch_report(batch=batch)
    return render(
        request,
        "annotation/quality_batch.html",
        {"batch": batch, "report": report, "charts": _charts(report), **_table(report)},
    )


def _charts(report: dict[str, Any]) -> dict[str, str]:
    timeline = report["throughput"]["timeline"]
    starts = [datetime.fromisoformat(row["start"]) for row in timeline]
    origin = starts[0] if starts else None
    hours = [(start - origin).total_seconds() / 3600 for start in starts] if origin else []
    labels = (timeline[0]["start"][:16], timeline[-1]["start"][:16]) if timeline else ("", "")
    hourly = report["throughput"]["bucket"] == "hour"
    histogram = report["agreement"]["histogram"]
    low_bins = sum(1 for bin_ in histogram if bin_["to"] <= report["agreement_threshold"])
    annotators = report["annotators"]
    return {
        "progress": line_chart_svg(
            [(h, row["cumulative"]) for h, row in zip(hours, timeline, strict=True)],
            title="Rankings submitted, cumulative",
            x_labels=labels,
        ),
        "throughput": bar_chart_svg(
            [(_bucket_label(row["start"], hourly), row["rankings"]) for row in timeline],
            title=f"Rankings per {report['throughput']['bucket']}",
        ),
        "agreement": bar_chart_svg(
            [(f"W {bin_['from']:.1f}-{bin_['to']:.1f}", bin_["prompts"]) for bin_ in histogram],
            title="Prompts by Kendall's W (red: below the threshold)",
            highlight_below=low_bins,
        ),
        "annotators": scatter_svg(
            [
                (row["position_bias"], row["loo_tau"], row["annotator"])
                for row in annotators
                if row["position_bias"] is not None and row["loo_tau"] is not None
            ],
            title="Annotators: agreement with others against position bias",
            x_label="position bias (tau with display order)",
            y_label="LOO tau",
        ),
        "gold": bar_chart_svg(
            [
                (row["annotator"], max(row["gold_score"], 0.0))
                for row in annotators
                if row["gold_score"] is not None
            ],
            title="Gold score per annotator (tau with the reference, negatives as 0)",
        ),
    }


def _bucket_label(start: str, hourly: bool) -> str:
    return start[11:16] if hourly else start[:10]


def _table(report: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for row in report["annotators"]:
        cells = []
        for key, _, _ in COLUMNS:
            value = row[key]
            shown = (
                "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else value)
            )
            # Sorting reads data-sort: numbers as numbers, missing values last.
            sort = "" if value is None else value
            cells.append({"key": key, "shown": shown, "sort": sort})
        rows.append({"cells": cells, "status": row["status"]})
    return {"columns": COLUMNS, "rows": rows}
