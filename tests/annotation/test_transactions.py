"""A deadlock victim's transaction runs again instead of failing the request."""

import threading

import pytest
from django.db import OperationalError, connection, transaction

from annotation.models import Prompt
from annotation.transactions import retry_aborted_transaction
from tests.factories import PromptFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


def _lock_in_order(first: int, second: int, barrier: threading.Barrier, calls: list[int]) -> None:
    with transaction.atomic():
        calls.append(1)
        Prompt.objects.select_for_update().get(pk=first)
        if len(calls) <= 2:  # only the first attempts meet at the barrier
            barrier.wait(timeout=10)
        Prompt.objects.select_for_update().get(pk=second)
        Prompt.objects.filter(pk=first).update(text=f"locked {first} then {second}")


def _race(function) -> tuple[list[BaseException], list[int]]:
    a, b = PromptFactory().pk, PromptFactory().pk
    barrier = threading.Barrier(2)
    calls: list[int] = []
    errors: list[BaseException] = []

    def run(first: int, second: int) -> None:
        try:
            function(first, second, barrier, calls)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=pair) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors, calls


def test_without_retry_a_deadlock_fails_one_of_two_transactions() -> None:
    errors, _ = _race(_lock_in_order)

    assert len(errors) == 1
    assert isinstance(errors[0], OperationalError)
    assert "deadlock detected" in str(errors[0])


def test_with_retry_both_transactions_complete() -> None:
    errors, calls = _race(retry_aborted_transaction()(_lock_in_order))

    assert errors == []
    assert len(calls) == 3  # two attempts met, the victim ran once more
    texts = list(Prompt.objects.values_list("text", flat=True))
    assert len(texts) == 2
    assert all(text.startswith("locked") for text in texts)
