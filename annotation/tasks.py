"""Celery entry points of the annotation side. Thin: each calls a service."""

from celery import shared_task

from annotation import quality


@shared_task
def refresh_quality() -> int:
    """Recompute the agreement figures of prompts that got rankings since the last run, and
    give low-agreement prompts their extra annotators (beat, every minute)."""
    return quality.quality_refresh()
