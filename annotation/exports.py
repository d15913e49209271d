"""Exports: every ranking, comparison and preference pair, streamed in the shapes trainers read.

Three kinds, each in JSONL, CSV or Parquet (`export_formats`):

- `rankings`: one line per ranking, lossless, in the JSONL shape `import_batch` reads (prompt,
  messages, completions, best-first groups of completion *indices*) plus the ranking's
  provenance, so an export re-imports to the same rankings.
- `comparisons`: one line per stored pair with its provenance.
- `preference`: prompt/chosen/rejected, standard (strings) or conversational (lists of
  messages), pairs derived from each ranking by `annotation.rankings.expand_pairs` and the
  `pairs` policy.

Data flow: one SQL query per kind (`export_queries`) selects plain columns, read through a
server-side cursor in chunks, so memory stays flat however many rows there are. The hottest
path, comparisons as JSONL, has PostgreSQL itself write the JSON inside `COPY ... TO STDOUT`
and only passes the bytes on, so the API keeps up with `psql \\copy` (bench/RESULTS.md).
Filters are a fixed set of typed fields turned into fixed SQL; nothing from a request reaches a
column name or an ORM lookup. Annotators appear only as pseudonyms (`annotation.pseudonyms`).
Rows are ordered by id and carry no export-time values, so the same rankings export to the same
bytes: that is what makes a `DatasetSnapshot` reproducible. PostgreSQL for the API and the
command; on another database (the embedded SQLite) only the rankings rows are read, through
`export_portable`, for snapshots and the training runs that read them.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection

from annotation import export_formats, export_portable, export_queries
from annotation.export_options import (
    ExportError,
    ExportOptions,
    Format,
    Kind,
    Pairs,
    RankingFilter,
    Split,
    Style,
    Ties,
)
from annotation.export_queries import ranking_where_sql
from annotation.rankings import Pair, expand_pairs

__all__ = [
    "ExportError",
    "ExportOptions",
    "Format",
    "Kind",
    "Pairs",
    "RankingFilter",
    "Split",
    "Style",
    "Ties",
    "export_content_type",
    "export_stream",
    "exports_available",
    "ranking_lines",
    "ranking_where_sql",
    "select_pairs",
]


def exports_available() -> bool:
    """Exports use PostgreSQL's COPY, named cursors and arrays; SQLite (the embedded
    development default) has none of them. Snapshots freeze on SQLite too (`export_portable`),
    for training runs, but the API and the command serve them with the exports."""
    return connection.vendor == "postgresql"


def export_stream(
    options: ExportOptions, *, on_rows: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The export as a stream of byte chunks (each ~256 KB); `on_rows(n)` reports progress."""
    progress = on_rows or (lambda n: None)
    if options.kind == Kind.COMPARISONS and options.format == Format.JSONL:
        query, params = export_queries.comparisons_query(options, as_json=True)
        return export_queries.copy_json_lines(query, params, progress)
    rows = _rows(options, progress)
    columns = export_formats.COLUMNS[_columns_key(options)]
    if options.format == Format.JSONL:
        return export_formats.jsonl_chunks(rows)
    if options.format == Format.CSV:
        return export_formats.csv_chunks(rows, columns=columns)
    return export_formats.parquet_chunks(rows, schema_key=_columns_key(options))


def export_content_type(format: Format) -> str:
    return export_formats.CONTENT_TYPES[format]


def ranking_lines(options: ExportOptions) -> Iterator[dict[str, Any]]:
    """The `rankings` rows as dicts, for Python consumers (a training run reading a snapshot)."""
    if options.kind != Kind.RANKINGS:
        raise ExportError("ranking_lines reads kind=rankings", parameter="kind")
    return _ranking_rows(options, lambda n: None)


def _columns_key(options: ExportOptions) -> str:
    if options.kind == Kind.PREFERENCE:
        return f"preference_{options.style}"
    return options.kind.value


def _rows(options: ExportOptions, progress: Callable[[int], None]) -> Iterator[dict[str, Any]]:
    if options.kind == Kind.RANKINGS:
        return _ranking_rows(options, progress)
    if options.kind == Kind.PREFERENCE:
        return _preference_rows(options, progress)
    return _comparison_rows(options, progress)


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RankingRow:
    """A ranking with its prompt and completions, as the rankings query returns it."""

    line: dict[str, Any]
    groups: list[list[int]]  # completion ids
    texts: dict[int, str]  # completion id -> text


def _ranking_records(
    options: ExportOptions, progress: Callable[[int], None]
) -> Iterator[_RankingRow]:
    for chunk in _ranking_chunks(options):
        for row in chunk:
            yield _ranking_record(row)
        progress(len(chunk))


def _ranking_chunks(options: ExportOptions) -> Iterator[Sequence[tuple[Any, ...]]]:
    if connection.vendor != "postgresql":
        return export_portable.ranking_rows(options)
    query, params = export_queries.rankings_query(options)
    return export_queries.fetch_chunks(query, params)


def _ranking_record(row: tuple[Any, ...]) -> _RankingRow:
    (
        ranking_id,
        ranking_external_id,
        origin,
        pseudonym,
        groups_json,
        not_rankable,
        display_order_json,
        duration_ms,
        rationale,
        flags_json,
        guidelines_version,
        created_at,
        prompt_id,
        prompt_external_id,
        text,
        messages_json,
        metadata_json,
        batch,
        completions_json,
    ) = row
    completions = orjson.loads(completions_json or "[]")
    index = {completion_id: i for i, (completion_id, _, _) in enumerate(completions)}
    groups = orjson.loads(groups_json)
    flags = orjson.loads(flags_json)
    line = {
        "id": prompt_external_id or f"prompt-{prompt_id}",
        "prompt": text,
        "messages": orjson.loads(messages_json),
        "completions": [{"text": c_text, "source": source} for _, c_text, source in completions],
        "ranking": [[index[item] for item in group] for group in groups],
        "metadata": orjson.loads(metadata_json),
        "prompt_id": prompt_id,
        "ranking_id": ranking_id,
        "ranking_external_id": ranking_external_id,
        "origin": origin,
        "annotator": pseudonym,
        "not_rankable": not_rankable,
        # Keyed by completion index like the ranking, sorted so the bytes are canonical.
        "flags": {
            str(i): labels
            for i, labels in sorted((index[int(key)], labels) for key, labels in flags.items())
        },
        "rationale": rationale,
        "display_order": [index[item] for item in orjson.loads(display_order_json)],
        "duration_ms": duration_ms,
        "guidelines_version": guidelines_version,
        "batch": batch,
        "created_at": created_at,
    }
    texts = {completion_id: c_text for completion_id, c_text, _ in completions}
    return _RankingRow(line=line, groups=groups, texts=texts)


def _ranking_rows(
    options: ExportOptions, progress: Callable[[int], None]
) -> Iterator[dict[str, Any]]:
    for record in _ranking_records(options, progress):
        yield record.line


def _comparison_rows(
    options: ExportOptions, progress: Callable[[int], None]
) -> Iterator[dict[str, Any]]:
    query, params = export_queries.comparisons_query(options)
    columns = export_formats.COLUMNS["comparisons"]
    for chunk in export_queries.fetch_chunks(query, params):
        for row in chunk:
            yield dict(zip(columns, row, strict=True))
        progress(len(chunk))


def select_pairs(groups: list[list[int]], *, pairs: Pairs, keep_ties: bool) -> list[Pair]:
    """The pairs of a ranking that a preference export keeps.

    all: every pair; adjacent: pairs one group apart; best_vs_rest: the best group against
    every other. Ties (pairs inside one group) stay only with keep_ties, and only inside the
    groups the policy looks at (any group for all and adjacent, the best for best_vs_rest).
    """
    best = set(groups[0]) if groups else set()
    kept = []
    for pair in expand_pairs(groups):
        if pair.is_tie:
            keep = keep_ties and (pairs != Pairs.BEST_VS_REST or pair.winner in best)
        elif pairs == Pairs.ADJACENT:
            keep = pair.rank_gap == 1
        elif pairs == Pairs.BEST_VS_REST:
            keep = pair.winner in best
        else:
            keep = True
        if keep:
            kept.append(pair)
    return kept


def _preference_rows(
    options: ExportOptions, progress: Callable[[int], None]
) -> Iterator[dict[str, Any]]:
    conversational = options.style == Style.CONVERSATIONAL
    emitted = 0  # progress counts pairs, not the rankings they come from
    for record in _ranking_records(options, lambda n: None):
        line = record.line
        if line["not_rankable"]:
            continue
        for pair in select_pairs(record.groups, pairs=options.pairs, keep_ties=options.keep_ties):
            chosen = record.texts[pair.winner]
            rejected = record.texts[pair.loser]
            yield {
                "prompt": line["messages"] if conversational else line["prompt"],
                "chosen": [{"role": "assistant", "content": chosen}] if conversational else chosen,
                "rejected": [{"role": "assistant", "content": rejected}]
                if conversational
                else rejected,
                "prompt_id": line["prompt_id"],
                "ranking_id": line["ranking_id"],
                "chosen_id": pair.winner,
                "rejected_id": pair.loser,
                "rank_gap": pair.rank_gap,
                "is_tie": pair.is_tie,
                "annotator": line["annotator"],
                "batch": line["batch"],
            }
            emitted += 1
            if emitted == export_queries.FETCH_ROWS:
                progress(emitted)
                emitted = 0
    progress(emitted)
