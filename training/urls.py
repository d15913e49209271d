"""Routes of the training API, included under /api/v1/ by config/urls.py."""

from django.urls import path

from training import apis

urlpatterns = [
    path("reward/score/", apis.RewardScoreApi.as_view(), name="reward-score"),
]
