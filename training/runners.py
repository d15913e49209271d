"""What a claimed run does, by kind. Called by the `run_training` task inside a worker, or
in-process when Celery runs eagerly."""

import logging
import traceback
from collections.abc import Callable

from training import services
from training.models import TrainingRun
from training.policy_runs import policy_run_execute
from training.reward_runs import reward_run_execute
from training.sampling_runs import sampling_run_execute

log = logging.getLogger(__name__)

Runner = Callable[[TrainingRun], dict]

RUNNERS: dict[str, Runner] = {
    "reward": reward_run_execute,
    "policy": policy_run_execute,
    "sampling": sampling_run_execute,
}


def run_execute(*, run: TrainingRun) -> str:
    """Run a claimed run to its end: succeeded with a summary, or failed with the error."""
    execute = RUNNERS.get(run.kind)
    if execute is None:
        services.run_fail(run=run, error=f"no runner for {run.kind!r} runs")
        return "failed"
    try:
        summary = execute(run)
    except Exception as exc:
        log.exception("run %s failed", run.pk)
        services.run_fail(run=run, error=f"{exc}\n\n{traceback.format_exc()}")
        return "failed"
    services.run_succeed(run=run, summary=summary)
    return "succeeded"
