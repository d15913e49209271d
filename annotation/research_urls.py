"""Routes of the research API, included under /api/v1/ by config/urls.py."""

from django.urls import path

from annotation import research_apis

urlpatterns = [
    path("batches/", research_apis.BatchListApi.as_view(), name="research-batch-list"),
    path("prompts/", research_apis.PromptListApi.as_view(), name="research-prompt-list"),
    path("rankings/", research_apis.RankingListApi.as_view(), name="research-ranking-list"),
    path(
        "comparisons/",
        research_apis.ComparisonListApi.as_view(),
        name="research-comparison-list",
    ),
    # slug, not str: a kind or format never holds a dot, so "rankings.jsonl" splits once.
    path("exports/<slug:kind>.<slug:fmt>", research_apis.ExportApi.as_view(), name="export"),
    path("snapshots/", research_apis.SnapshotListApi.as_view(), name="snapshot-list"),
    path("snapshots/create/", research_apis.SnapshotCreateApi.as_view(), name="snapshot-create"),
    path(
        "snapshots/<int:snapshot_id>/",
        research_apis.SnapshotDetailApi.as_view(),
        name="snapshot-detail",
    ),
]
