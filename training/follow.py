"""Following a run from a shell: a tqdm bar fed by the run's progress until it ends."""

import time

from tqdm import tqdm

from training.models import TrainingRun


def follow_run(
    run: TrainingRun, *, progress: bool = True, poll_seconds: float = 2.0
) -> TrainingRun:
    """Wait for `run` to end, showing its progress; returns it as it ended."""
    with tqdm(total=100, unit="%", desc=f"run {run.pk}", disable=not progress or None) as bar:
        while True:
            run.refresh_from_db()
            bar.update(int(run.progress * 100) - bar.n)
            if run.status not in TrainingRun.ACTIVE:
                return run
            time.sleep(poll_seconds)
