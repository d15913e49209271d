"""Celery entry points. Thin: each takes ids, fetches rows and calls a service."""

import logging
import socket

from celery import shared_task
from django.conf import settings

from training import runners, services
from training.models import TrainingRun

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_training(self, run_id: int) -> str:
    """Train (or sample) for one run. Routed to the `gpu` queue by CELERY_TASK_ROUTES.

    Acknowledged late and rejected when its worker dies, so the message survives a crash; the
    conditional claim makes a redelivered message a no-op while the run is held elsewhere.
    """
    worker = f"{self.request.hostname or socket.gethostname()}"
    run = services.run_claim(run_id=run_id, worker=worker)
    if run is None:
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        log.info("run %s not claimed (status %s): nothing to do", run_id, status)
        return f"skipped ({status})"
    return runners.run_execute(run=run)


@shared_task
def reap_stale_runs() -> list[int]:
    retries = services.runs_reap_stale(timeout_seconds=settings.RUN_HEARTBEAT_TIMEOUT)
    return [run.pk for run in retries]
