"""Reads for the training pages."""

from collections import defaultdict
from typing import Any

from django.db.models import Q

from training.models import ModelVersion, PolicySample

REFERENCE = "reference"


def policy_samples_side_by_side(
    *, versions: list[int] | None = None, latest: int = 4, max_prompts: int = 30
) -> dict[str, Any]:
    """Sampled completions grouped by prompt text, one column per policy version (and one for
    the reference policy's samples taken in the same sampling runs).

    `versions` are policy version numbers; by default the `latest` versions that wrote samples.
    Prompts sampled by the most of those versions come first, so that a fixed set of probe
    prompts sampled after each promotion lines up in one row.
    """
    chosen = ModelVersion.objects.filter(kind="policy", samples__isnull=False).distinct()
    if versions:
        chosen = chosen.filter(version__in=versions)
    chosen_versions = sorted(chosen.values_list("version", flat=True).order_by("-version")[:latest])
    samples = (
        PolicySample.objects.filter(
            Q(model_version__kind="policy", model_version__version__in=chosen_versions)
            | Q(
                is_reference=True,
                run__parent__version__in=chosen_versions,
                run__parent__kind="policy",
            )
        )
        .select_related("completion__prompt", "model_version")
        .order_by("completion__prompt_id", "completion__position")
    )
    columns = [f"policy v{v}" for v in chosen_versions]
    cells: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples[:20000]:
        version = sample.model_version
        column = (
            REFERENCE if sample.is_reference or version is None else f"policy v{version.version}"
        )
        cells[sample.completion.prompt.text][column].append(sample.completion.text)
    if any(REFERENCE in row for row in cells.values()):
        columns.append(REFERENCE)
    order = sorted(cells, key=lambda text: (-len(cells[text]), text))[:max_prompts]
    rows = [
        {"prompt": text, "cells": [cells[text].get(column, []) for column in columns]}
        for text in order
    ]
    return {"columns": columns, "rows": rows, "prompt_count": len(cells)}
