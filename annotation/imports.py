"""Reading prompt batches from JSONL files: one prompt a line.

Accepted shapes (keys beyond these are kept in the prompt's metadata):

    {"prompt": str | "messages": [{"role", "content"}, ...],
     "completions": [str | {"text", "source"}], "id"?: str, "metadata"?: {},
     "ranking"?: [best-first indices] | [[indices], ...]}
    {"prompt": str, "chosen": str, "rejected": str, "id"?: str}      # a pair: K = 2, chosen first

CSV files (`.csv`) hold one completion a row, grouped by a prompt id column:

    prompt_id,prompt,completion,source,rank        # source and rank are optional columns

`rank` is 1 for the best; equal ranks tie; a prompt's rows either all have a rank or none do.

A line of a `rankings` export (annotation.exports) is the first shape plus the ranking's
lossless fields: "not_rankable", "flags" ({completion index: [labels]}), "rationale",
"display_order" (indices), "duration_ms", "guidelines_version" and "ranking_external_id"; its
provenance ("origin", "annotator", "batch", "created_at", "prompt_id", "ranking_id") is read
but not stored. Several lines with one id and the same prompt and completions are several
rankings of that prompt (an export has a line per ranking); each keeps its own external id,
the exported one or else the annotator's pseudonym.

Parsing is separate from writing: every line is checked first and every problem is reported
with its file and line number, so a file with one bad line writes nothing.
"""

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotation.rankings import InvalidRanking, normalize_groups, validate_partition
from annotation.services import CompletionRecord, PromptRecord, RankingRecord
from annotation.strict_json import RepeatedKey, holds_nul, object_without_repeats

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 4 * 1024 * 1024
_RANKING_KEYS = {
    "ranking_external_id",
    "not_rankable",
    "flags",
    "rationale",
    "display_order",
    "duration_ms",
    "guidelines_version",
}
# An export's provenance: where the ranking came from, not part of the ranking.
_PROVENANCE_KEYS = {"origin", "annotator", "batch", "created_at", "prompt_id", "ranking_id"}
_KNOWN_KEYS = {
    "id",
    "prompt",
    "messages",
    "completions",
    "metadata",
    "ranking",
    "chosen",
    "rejected",
    *_RANKING_KEYS,
    *_PROVENANCE_KEYS,
}
# HH-RLHF transcripts: "\n\nHuman: ...\n\nAssistant: ...\n\nHuman: ...\n\nAssistant:"
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


@dataclass(frozen=True)
class LineError:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


class ImportErrors(Exception):
    def __init__(self, errors: list[LineError]) -> None:
        super().__init__(f"{len(errors)} bad line(s)")
        self.errors = errors


class _BadLine(ValueError):
    pass


def read_records(
    paths: Iterable[Path], *, k_range: tuple[int, int] | None = None, progress: Any = None
) -> list[PromptRecord]:
    """Parse every line of `paths` (JSONL, or CSV for a `.csv` file). Raises ImportErrors
    listing all bad lines, or returns the records. With `k_range`, a prompt with fewer or more
    completions is a bad line. `progress`, if given, is called with each line's byte count."""
    records: list[PromptRecord] = []
    errors: list[LineError] = []
    first_seen: dict[str, tuple[str, int]] = {}
    by_id: dict[str, PromptRecord] = {}
    for path in paths:
        parsed = (
            _csv_records(path, progress)
            if path.suffix.lower() == ".csv"
            else _jsonl_records(path, progress)
        )
        for number, outcome in parsed:
            if isinstance(outcome, str):
                errors.append(LineError(path.name, number, outcome))
                continue
            record = outcome
            if k_range is not None and (problem := _k_problem(len(record.completions), k_range)):
                errors.append(LineError(path.name, number, problem))
                continue
            if record.external_id in first_seen:
                first = by_id[record.external_id]
                if _another_ranking_of(first, record):
                    first.rankings.extend(record.rankings)
                    continue
                where = "{}:{}".format(*first_seen[record.external_id])
                errors.append(
                    LineError(
                        path.name, number, f"duplicate id {record.external_id!r} (first on {where})"
                    )
                )
                continue
            first_seen[record.external_id] = (path.name, number)
            by_id[record.external_id] = record
            records.append(record)
    if errors:
        raise ImportErrors(errors)
    return records


def _jsonl_records(path: Path, progress: Any) -> Iterator[tuple[int, PromptRecord | str]]:
    """(line number, record or the reason the line is bad) for each non-blank line."""
    for number, raw in _lines(path):
        if progress is not None:
            progress(len(raw))
        if not raw.strip():
            continue
        try:
            yield number, parse_line(raw)
        except _BadLine as exc:
            yield number, str(exc)


def _csv_records(path: Path, progress: Any) -> Iterator[tuple[int, PromptRecord | str]]:
    """Rows grouped by `prompt_id`; a prompt's problems are reported on its first row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        yield 1, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
        return
    if progress is not None:
        progress(path.stat().st_size)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"prompt_id", "prompt", "completion"} - set(reader.fieldnames or [])
    if missing:
        yield 1, f"the header needs the columns {', '.join(sorted(missing))}"
        return
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for row in reader:
        groups.setdefault(row["prompt_id"] or "", []).append((reader.line_num, row))
    for prompt_id, rows in groups.items():
        first_line = rows[0][0]
        try:
            yield first_line, _csv_prompt(prompt_id, rows)
        except _BadLine as exc:
            yield first_line, str(exc)


def _csv_prompt(prompt_id: str, rows: list[tuple[int, dict[str, str]]]) -> PromptRecord:
    if not prompt_id:
        raise _BadLine("prompt_id is empty")
    prompts = {row["prompt"] for _, row in rows}
    if len(prompts) != 1:
        raise _BadLine(f"prompt {prompt_id!r} has different prompt texts on its rows")
    line: dict[str, Any] = {
        "id": prompt_id,
        "prompt": prompts.pop(),
        "completions": [
            {"text": row["completion"], "source": row.get("source") or ""} for _, row in rows
        ],
    }
    ranks = [(row.get("rank") or "").strip() for _, row in rows]
    if any(ranks):
        if not all(rank.isdigit() and int(rank) >= 1 for rank in ranks):
            raise _BadLine(
                f"prompt {prompt_id!r}: every row needs a rank of 1 or more, or none may have one"
            )
        by_rank: dict[int, list[int]] = {}
        for index, rank in enumerate(ranks):
            by_rank.setdefault(int(rank), []).append(index)
        line["ranking"] = [by_rank[rank] for rank in sorted(by_rank)]
    return parse_line(json.dumps(line).encode())


def parse_line(raw: bytes) -> PromptRecord:
    if len(raw) > MAX_LINE_BYTES:
        raise _BadLine(f"line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB")
    try:
        data = json.loads(raw, object_pairs_hook=object_without_repeats)
    except RepeatedKey as exc:
        raise _BadLine(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise _BadLine(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _BadLine(f"not valid JSON ({exc})") from exc
    if holds_nul(data):
        # PostgreSQL text cannot hold one; refused here, with the line, not at the insert.
        raise _BadLine("a string holds a NUL character (\\u0000)")
    if not isinstance(data, dict):
        raise _BadLine(f"expected a JSON object, got {type(data).__name__}")
    if "chosen" in data or "rejected" in data:
        data = _pair_as_ranking(data)

    messages, text = _prompt(data)
    completions = _completions(data.get("completions"))
    rankings = _rankings(data, len(completions))
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _BadLine('"metadata" must be an object')
    extra = {key: value for key, value in data.items() if key not in _KNOWN_KEYS}
    external_id = data.get("id")
    if external_id is None:
        external_id = _content_id(messages, completions)
    elif (
        not isinstance(external_id, str | int)
        or isinstance(external_id, bool)
        or str(external_id) == ""
    ):
        raise _BadLine('"id" must be a non-empty string')
    external_id = str(external_id)
    if len(external_id) > 200:
        raise _BadLine('"id" is longer than 200 characters')
    return PromptRecord(
        text=text,
        messages=messages,
        completions=completions,
        external_id=external_id,
        metadata={**extra, **metadata},
        rankings=rankings,
    )


def messages_from_transcript(transcript: str) -> list[dict[str, str]]:
    """Split an HH-RLHF "Human: ... Assistant: ..." transcript into chat messages; the
    trailing empty "Assistant:" (where the completion goes) is dropped."""
    parts = _HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        return [{"role": "user", "content": transcript.strip()}]
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        messages.append({"role": role, "content": content.strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def render_messages(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered lines; one longer than MAX_LINE_BYTES comes cut at MAX_LINE_BYTES + 1 bytes
    (enough for parse_line to refuse it), its rest skipped, so a file without newlines is
    never read into memory whole."""
    with path.open("rb") as handle:
        number = 0
        while line := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
            yield number, line


def _pair_as_ranking(data: dict[str, Any]) -> dict[str, Any]:
    if "completions" in data:
        raise _BadLine('give either "completions" or "chosen"/"rejected", not both')
    for key in ("chosen", "rejected"):
        if not isinstance(data.get(key), str):
            raise _BadLine(f'a pair needs "{key}" as a string')
    prompt = data.get("prompt")
    rest = {key: value for key, value in data.items() if key not in ("chosen", "rejected")}
    if isinstance(prompt, str) and "messages" not in data:
        rest["messages"] = messages_from_transcript(prompt)
        del rest["prompt"]
    return {**rest, "completions": [data["chosen"], data["rejected"]], "ranking": [0, 1]}


def _prompt(data: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    prompt, raw_messages = data.get("prompt"), data.get("messages")
    if raw_messages is None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise _BadLine('needs "prompt" (a non-empty string) or "messages"')
        return [{"role": "user", "content": prompt}], prompt
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _BadLine('"messages" must be a non-empty list of {"role", "content"}')
    messages = []
    for index, message in enumerate(raw_messages):
        if not isinstance(message, dict):
            raise _BadLine(f"message {index} must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _BadLine(f"message {index} has role {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise _BadLine(f'message {index} needs "content" as a string')
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise _BadLine("the last message must be the user's (the completions answer it)")
    if prompt is not None and not isinstance(prompt, str):
        raise _BadLine('"prompt" must be a string')
    return messages, prompt or render_messages(messages)


def _completions(raw: object) -> list[CompletionRecord]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise _BadLine('"completions" must be a list of at least 2 completions')
    completions = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise _BadLine(
                f'completion {index} must be a string or {{"text": str, "source"?: str}}'
            )
        source = item.get("source", "")
        if not isinstance(source, str):
            raise _BadLine(f'completion {index} has a "source" that is not a string')
        if not item["text"].strip():
            raise _BadLine(f"completion {index} is empty")
        completions.append(CompletionRecord(text=item["text"], source=source[:200]))
    return completions


def _ranking(raw: object, k: int) -> list[list[int]] | None:
    if raw is None:
        return None
    try:
        groups = normalize_groups(raw)
        validate_partition(groups, range(k))
    except InvalidRanking as exc:
        raise _BadLine(f'"ranking" (completion indices 0..{k - 1}): {exc}') from exc
    return groups


def _rankings(data: dict[str, Any], k: int) -> list[RankingRecord]:
    """The line's ranking, if it has one, with the lossless fields of an export line."""
    not_rankable = data.get("not_rankable", False)
    if not isinstance(not_rankable, bool):
        raise _BadLine('"not_rankable" must be true or false')
    if not_rankable and data.get("ranking") in (None, []):
        groups: list[list[int]] | None = []
    else:
        groups = _ranking(data.get("ranking"), k)
    if groups is None:
        if given := sorted(_RANKING_KEYS & data.keys()):
            raise _BadLine(f'"{given[0]}" describes a ranking, but the line has no "ranking"')
        return []
    external_id = data.get("ranking_external_id") or data.get("annotator") or ""
    if not isinstance(external_id, str) or len(external_id) > 200:
        raise _BadLine('"ranking_external_id" must be a string of at most 200 characters')
    rationale = data.get("rationale", "")
    if not isinstance(rationale, str):
        raise _BadLine('"rationale" must be a string')
    return [
        RankingRecord(
            groups=groups,
            external_id=external_id,
            not_rankable=not_rankable,
            flags=_flags(data.get("flags", {}), k),
            rationale=rationale,
            display_order=_display_order(data.get("display_order", []), k),
            duration_ms=_optional_count("duration_ms", data.get("duration_ms"), minimum=0),
            guidelines_version=_optional_count(
                "guidelines_version", data.get("guidelines_version"), minimum=1
            ),
        )
    ]


def _flags(raw: object, k: int) -> dict[int, list[str]]:
    if not isinstance(raw, dict):
        raise _BadLine('"flags" must be an object {completion index: [labels]}')
    flags = {}
    for key, labels in raw.items():
        if not str(key).isdigit() or not 0 <= int(key) < k:
            raise _BadLine(f'"flags" names {key!r}, not a completion index 0..{k - 1}')
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise _BadLine(f'"flags" for completion {key} must be a list of strings')
        flags[int(key)] = sorted(set(labels))
    return flags


def _display_order(raw: object, k: int) -> list[int]:
    if raw == []:
        return []
    if not isinstance(raw, list) or sorted(raw) != list(range(k)):
        raise _BadLine(f'"display_order" must list each completion index 0..{k - 1} once')
    return raw


def _optional_count(name: str, raw: object, *, minimum: int) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < minimum:
        raise _BadLine(f'"{name}" must be an integer of at least {minimum}')
    return raw


def _another_ranking_of(first: PromptRecord, record: PromptRecord) -> bool:
    """Whether `record` is one more ranking of `first`'s prompt (the next line of an export),
    rather than a clashing duplicate: same prompt and completions, rankings told apart by
    their external ids."""
    if (first.text, first.messages, first.completions, first.metadata) != (
        record.text,
        record.messages,
        record.completions,
        record.metadata,
    ):
        return False
    if not first.rankings or not record.rankings:
        return False
    taken = {ranking.external_id for ranking in first.rankings}
    return all(
        ranking.external_id and ranking.external_id not in taken for ranking in record.rankings
    )


def _k_problem(k: int, k_range: tuple[int, int]) -> str | None:
    k_min, k_max = k_range
    if k_min <= k <= k_max:
        return None
    return f"{k} completions, outside the batch's range {k_min}..{k_max} (see --k-min/--k-max)"


def _content_id(messages: list[dict[str, str]], completions: list[CompletionRecord]) -> str:
    """A stable id for a line without one, so that importing the same file twice is harmless."""
    payload = json.dumps([messages, [c.text for c in completions]], sort_keys=True)
    return "sha1:" + hashlib.sha1(payload.encode()).hexdigest()[:16]
