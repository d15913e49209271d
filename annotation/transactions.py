"""Retrying a whole transaction that PostgreSQL aborted to break a deadlock or a
serialization conflict. Both are normal outcomes under concurrency, not bugs: the database
rolled everything back, and running the same transaction again is the documented remedy.
"""

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# deadlock_detected, serialization_failure
RETRYABLE_SQLSTATES = {"40P01", "40001"}


def is_retryable(exc: BaseException) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES


def retry_aborted_transaction(attempts: int = 4) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated transaction again (with a short random wait) when the database
    aborted it as a deadlock victim. Apply it outside `@transaction.atomic`: inside an outer
    transaction a retry is impossible, so then the error propagates at once."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(1, attempts + 1):
                try:
                    return function(*args, **kwargs)
                except OperationalError as exc:
                    if attempt == attempts or connection.in_atomic_block or not is_retryable(exc):
                        raise
                    log.info(
                        "%s aborted (%s); attempt %d", function.__name__, exc.__cause__, attempt
                    )
                    time.sleep(random.uniform(0.01, 0.05) * attempt)
            raise AssertionError("unreachable")

        return run

    return decorate
