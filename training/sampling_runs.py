"""A sampling run closes the loop: the promoted policy writes K completions for each prompt (of a
batch, or of a prompt file), optionally beside samples of the reference policy, into a new DRAFT
batch. An admin reviews and publishes it; annotators rank it; the next reward run trains on it.

Every completion names what wrote it twice: as plain text in `Completion.source` ("policy v3",
"reference tiny"), which exports and annotation already carry without knowing of training, and
as a `PolicySample` row that links it to the registry (`training.models`).
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from annotation.imports import messages_from_transcript, render_messages
from annotation.models import K_MAX_LIMIT, K_MIN_LIMIT, Completion, Prompt, PromptBatch
from annotation.services import CompletionRecord, PromptRecord, batch_create, batch_import_records
from training import services
from training.models import ModelVersion, PolicySample, TrainingRun
from training.policy_runs import UnknownBatch, promoted

ROLES = ("system", "user", "assistant")
# Prompts sampled between two progress reports (and heartbeats).
PROMPTS_PER_REPORT = 32


class NoPromotedPolicy(Exception):
    pass


class BatchNameTaken(Exception):
    pass


class PromptFileErrors(Exception):
    """Bad lines of a prompt file, each as FILE:LINE: reason."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class SamplingOptions:
    k: int = 4  # completions per prompt from the promoted policy
    reference: int = 0  # more completions per prompt from the reference (base) policy
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0


def read_prompt_file(path: Path) -> list[dict[str, Any]]:
    """Prompts from JSONL, one a line: {"prompt": str} (an HH "Human: ... Assistant:" transcript
    becomes chat messages) or {"messages": [{"role", "content"}, ...]}, with an optional "id".
    Raises PromptFileErrors listing every bad line, or returns prompts as the batch stores them.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileErrors([f"{path}: cannot read: {exc}"]) from None
    prompts: list[dict[str, Any]] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            prompt = _prompt_line(line, number)
        except ValueError as exc:
            errors.append(f"{path.name}:{number}: {exc}")
            continue
        if prompt["external_id"] in seen:
            first = seen[prompt["external_id"]]
            errors.append(f"{path.name}:{number}: duplicate of line {first}")
            continue
        seen[prompt["external_id"]] = number
        prompts.append(prompt)
    if errors:
        raise PromptFileErrors(errors)
    if not prompts:
        raise PromptFileErrors([f"{path}: no prompts"])
    return prompts


def _prompt_line(line: str, number: int) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    prompt, messages = data.get("prompt"), data.get("messages")
    if messages is None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError('needs "prompt" (a non-empty string) or "messages"')
        messages = (
            messages_from_transcript(prompt)
            if "Human:" in prompt
            else [{"role": "user", "content": prompt}]
        )
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise ValueError(f'"messages" must be a non-empty list of {{"role": {ROLES}, "content"}}')
    if messages[-1]["role"] != "user":
        raise ValueError("the last message must be the user's (the completions answer it)")
    text = render_messages(messages)
    external_id = data.get("id")
    if external_id is None:
        external_id = hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:16]
    if not isinstance(external_id, str | int) or isinstance(external_id, bool) or external_id == "":
        raise ValueError('"id" must be a non-empty string')
    return {"text": text, "messages": messages, "external_id": str(external_id)[:200]}


def _batch_prompts(batch: PromptBatch) -> list[dict[str, Any]]:
    return [
        {
            "text": prompt.text,
            "messages": prompt.messages or [{"role": "user", "content": prompt.text}],
            "external_id": prompt.external_id or f"prompt-{prompt.pk}",
            "source_prompt": prompt.pk,
        }
        for prompt in Prompt.objects.filter(batch=batch).order_by("id")
    ]


@transaction.atomic
def sampling_run_create(
    *,
    name: str,
    from_batch: str | None = None,
    prompts: list[dict[str, Any]] | None = None,
    options: SamplingOptions | None = None,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue a sampling run that writes the draft batch `name`.

    The prompts are `prompts` (from `read_prompt_file`) or else those of `from_batch`; the new
    batch takes its guidelines, overlap and priority from `from_batch` when one is named. Raises
    NoPromotedPolicy, UnknownBatch, BatchNameTaken, ValueError (K out of range, no prompts) and
    services.RunAlreadyActive.
    """
    options = options or SamplingOptions()
    total = options.k + options.reference
    if options.k < 1 or options.reference < 0 or not K_MIN_LIMIT <= total <= K_MAX_LIMIT:
        raise ValueError(
            f"--k {options.k} plus --reference {options.reference} must be between "
            f"{K_MIN_LIMIT} and {K_MAX_LIMIT} completions per prompt (k at least 1)"
        )
    if not 0 < options.top_p <= 1 or options.temperature <= 0:
        raise ValueError("temperature must be above 0 and top-p in (0, 1]")
    if PromptBatch.objects.filter(name=name).exists():
        raise BatchNameTaken(f"a batch named {name!r} already exists")
    source = None
    if from_batch is not None:
        source = PromptBatch.objects.filter(name=from_batch).first()
        if source is None:
            raise UnknownBatch(f"no such batch: {from_batch}")
    if prompts is None:
        if source is None:
            raise ValueError("give the prompts: a batch to take them from, or a prompt file")
        prompts = _batch_prompts(source)
    if not prompts:
        raise ValueError(f"batch {from_batch!r} has no prompts")
    policy = promoted("policy")
    if policy is None:
        raise NoPromotedPolicy("no policy is promoted: train one first (manage.py train_policy)")
    config = {
        "name": name,
        "from_batch": from_batch,
        "batch": {
            "overlap": source.overlap if source else 3,
            "priority": source.priority if source else 0,
            "guidelines": source.guidelines if source else "",
        },
        "sampling": asdict(options),
        "base_policy": _base_policy(policy),
        "prompts": prompts,
    }
    return services.run_create(
        kind=TrainingRun.Kind.SAMPLING, config=config, parent=policy, created_by=created_by
    )


def _base_policy(policy: ModelVersion) -> dict[str, Any]:
    """The reference policy: the base the chain of policies that led to `policy` started from."""
    run_config = policy.run.config if policy.run else {}
    ppo = run_config.get("ppo", settings.POLICY_PPO_DEFAULTS)
    return {
        "spec": run_config.get("base_policy", ppo.get("policy", "tiny")),
        "seed": ppo.get("seed", 0),
    }


def sampling_run_execute(run: TrainingRun) -> dict[str, Any]:
    """Sample, then write the draft batch and its PolicySample rows in one transaction."""
    from training.ppo import load_lm, load_policy, resolve_device
    from training.sampling import sample_completions

    policy = run.parent
    if policy is None:
        raise ValueError(f"run {run.pk} names no policy to sample from")
    if services.artifact_sha256(Path(policy.artifact_path)) != policy.sha256:
        raise services.ArtifactIncomplete(f"{policy} no longer matches its recorded sha256")
    options = SamplingOptions(**run.config["sampling"])
    prompts = run.config["prompts"]
    inputs = [prompt["messages"] for prompt in prompts]
    stages = 2 if options.reference else 1
    services.run_report(
        run=run,
        progress=0.0,
        log=f"{len(prompts)} prompts x {options.k} from policy v{policy.version}"
        + (f" + {options.reference} from the reference" if options.reference else ""),
    )

    def sample(model: Any, tokenizer: Any, k: int, stage: int) -> list[list[str]]:
        """K completions for every prompt, a chunk of prompts at a time, reporting progress
        after each chunk. Each chunk has its own seed, so a run repeats."""
        out: list[list[str]] = []
        for index, start in enumerate(range(0, len(inputs), PROMPTS_PER_REPORT)):
            out += sample_completions(
                model,
                tokenizer,
                inputs[start : start + PROMPTS_PER_REPORT],
                k=k,
                temperature=options.temperature,
                top_p=options.top_p,
                max_new_tokens=options.max_new_tokens,
                seed=options.seed + index,
            )
            _report_or_stop(run, (stage + len(out) / len(inputs)) / stages)
        return out

    device = resolve_device("auto")  # the GPU when the worker has one
    lm, tokenizer, _ = load_policy(policy.artifact_path)
    written = sample(lm.to(device), tokenizer, options.k, stage=0)
    del lm
    columns: list[list[tuple[str, str, bool]]] = [
        [(text, f"policy v{policy.version}", False) for text in texts] for texts in written
    ]
    base = run.config["base_policy"]
    if options.reference:
        ref_lm, ref_tokenizer = load_lm(base["spec"], seed=base["seed"])
        # More than needed, so that samples repeating the policy's can be left out.
        extra = sample(ref_lm.to(device), ref_tokenizer, options.reference + options.k, stage=1)
        for row, candidates in zip(columns, extra, strict=True):
            taken = {text for text, _, _ in row}
            fresh = [text for text in dict.fromkeys(candidates) if text not in taken]
            fresh += candidates  # a model that writes one answer only: keep its repeats
            row.extend(
                (text, f"reference {base['spec']}", True) for text in fresh[: options.reference]
            )

    batch = _write_draft_batch(run, policy, prompts, columns, base["spec"])
    return {
        "batch": batch.name,
        "batch_id": batch.pk,
        "prompts": len(prompts),
        "completions": sum(len(row) for row in columns),
        "policy_version": policy.version,
        "distinct_share": _distinct_share(columns),
    }


def _report_or_stop(run: TrainingRun, progress: float) -> None:
    if not services.run_report(run=run, progress=progress):
        raise RuntimeError(f"run {run.pk} is no longer running; stopping")


@transaction.atomic
def _write_draft_batch(
    run: TrainingRun,
    policy: ModelVersion,
    prompts: list[dict[str, Any]],
    columns: list[list[tuple[str, str, bool]]],
    base_spec: str,
) -> PromptBatch:
    k = len(columns[0])
    settings_ = run.config["batch"]
    batch = batch_create(
        name=run.config["name"],
        k_min=k,
        k_max=k,
        overlap=settings_["overlap"],
        priority=settings_["priority"],
        guidelines=settings_["guidelines"],
        status=PromptBatch.Status.DRAFT,
        created_by=run.created_by,
    )
    records = [
        PromptRecord(
            text=prompt["text"],
            messages=prompt["messages"],
            external_id=prompt["external_id"],
            metadata={"sampling_run": run.pk, "source_prompt": prompt.get("source_prompt")},
            completions=[CompletionRecord(text=text, source=source) for text, source, _ in row],
        )
        for prompt, row in zip(prompts, columns, strict=True)
    ]
    batch_import_records(batch=batch, records=records)
    completions = Completion.objects.filter(prompt__batch=batch).order_by("prompt_id", "position")
    flat = [cell for row in columns for cell in row]
    PolicySample.objects.bulk_create(
        [
            PolicySample(
                completion=completion,
                run=run,
                model_version=None if is_reference else policy,
                policy=base_spec if is_reference else policy.artifact_path,
                is_reference=is_reference,
            )
            for completion, (_, _, is_reference) in zip(completions, flat, strict=True)
        ]
    )
    return batch


def _distinct_share(columns: list[list[tuple[str, str, bool]]]) -> float:
    """Share of completions that differ from every other of their prompt (1.0: no duplicates)."""
    distinct = sum(len({text for text, _, _ in row}) for row in columns)
    return distinct / max(sum(len(row) for row in columns), 1)
