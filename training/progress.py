"""A training's progress callback for a claimed run: buffers the per-step metrics and writes
them, with the heartbeat, at most every REPORT_SECONDS. Writing on every step would rewrite the
run's growing metrics column thousands of times (a reward head run takes ~20,000 steps)."""

import time
from typing import Any

from training import services
from training.models import TrainingRun


class RunReporter:
    REPORT_SECONDS = 2.0

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.pending: list[dict[str, Any]] = []
        self.last = time.monotonic()

    def __call__(self, step: int, total: int, metrics: dict[str, Any]) -> None:
        self.pending.append(metrics)
        if step < total and time.monotonic() - self.last < self.REPORT_SECONDS:
            return
        self.flush(progress=step / max(total, 1))

    def flush(self, progress: float) -> None:
        """Write what is pending; raises when the run was cancelled or reaped, to stop it."""
        rows, self.pending, self.last = self.pending, [], time.monotonic()
        if not services.run_report(run=self.run, progress=progress, metrics=rows):
            raise RuntimeError(f"run {self.run.pk} is no longer running; stopping")
