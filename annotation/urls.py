"""The API under /api/v1/ (included from config.urls)."""

from django.urls import path

from annotation import apis

urlpatterns = [
    path("assignments/next/", apis.AssignmentNextApi.as_view(), name="assignment-next"),
    path(
        "assignments/<int:assignment_id>/ranking/",
        apis.AssignmentRankingApi.as_view(),
        name="assignment-ranking",
    ),
    path(
        "assignments/<int:assignment_id>/skip/",
        apis.AssignmentSkipApi.as_view(),
        name="assignment-skip",
    ),
]
