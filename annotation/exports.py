"""Exports: every ranking, comparison and preference pair, streamed in the shapes trainers read.

Three kinds, each in JSONL, CSV or Parquet (`export_formats`):

- `rankings`: one line per ranking, lossless, in the JSONL shape `import_batch` reads (prompt,
  messages, completions, best-first groups of completion *indices*) plus the ranking's
  provenance, so an export re-imports to the same rankings.
- `comparisons`: one line per stored pair with its provenance.
- `preference`: prompt/chosen/rejected, standard (strings) or conversational (lists of
  messages), pairs derived from each ranking by `annotation.rankings.expand_pairs` and the
  `pairs` policy.

Data flow: one SQL query per kind selects plain columns, read through a server-side cursor in
chunks, so memory stays flat however many rows there are. The hottest path, comparisons as
JSONL, has PostgreSQL itself write the JSON (`_json_object_sql`) inside `COPY ... TO STDOUT`
and only passes the bytes on, so the API keeps up with `psql \\copy` (bench/RESULTS.md).
Filters are a fixed set of typed fields turned into fixed SQL; nothing from a request reaches a
column name or an ORM lookup. Annotators appear only as pseudonyms (`annotation.pseudonyms`),
joined in SQL from a precomputed {user id: pseudonym} array, so the key never leaves Python.
Rows are ordered by id and carry no export-time values, so the same rankings export to the same
bytes: that is what makes a `DatasetSnapshot` reproducible. PostgreSQL only.
"""

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from django.db import connection, transaction

from annotation import export_formats
from annotation.pseudonyms import pseudonyms_of_all_users, user_ids_for_pseudonym
from annotation.rankings import Pair, expand_pairs


class Kind(StrEnum):
    RANKINGS = "rankings"
    COMPARISONS = "comparisons"
    PREFERENCE = "preference"


class Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


class Pairs(StrEnum):
    ALL = "all"
    ADJACENT = "adjacent"
    BEST_VS_REST = "best_vs_rest"


class Ties(StrEnum):
    DROP = "drop"
    KEEP = "keep"


class Style(StrEnum):
    STANDARD = "standard"
    CONVERSATIONAL = "conversational"


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"


class ExportError(ValueError):
    """Options that do not make sense together; `parameter` names the culprit."""

    def __init__(self, message: str, *, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class RankingFilter:
    """Which rankings to export. Every field maps to one fixed SQL condition."""

    batches: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    annotator: str | None = None  # a pseudonym
    origin: str | None = None
    k: int | None = None
    snapshot_id: int | None = None

    def is_empty(self) -> bool:
        return self == RankingFilter(snapshot_id=self.snapshot_id)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["batches"] = list(self.batches)
        for name in ("created_after", "created_before"):
            data[name] = data[name].isoformat() if data[name] else None
        return data


@dataclass(frozen=True)
class ExportOptions:
    kind: Kind
    format: Format = Format.JSONL
    filter: RankingFilter = field(default_factory=RankingFilter)
    pairs: Pairs = Pairs.ALL
    # None: keep ties in comparisons (they are data), drop them from preference pairs (a
    # chosen/rejected trainer has no way to say "equally good").
    ties: Ties | None = None
    style: Style = Style.STANDARD
    # Split by prompt: about `split_test` of the prompts go to test, chosen by a seeded hash of
    # the prompt text, so one prompt never sits on both sides, even when it was imported into
    # two batches, and a prompt keeps its side as the data set grows.
    split_test: float | None = None
    seed: int = 0
    split: Split | None = None

    def __post_init__(self) -> None:
        if self.kind != Kind.PREFERENCE and self.pairs != Pairs.ALL:
            raise ExportError("pairs applies to kind=preference only", parameter="pairs")
        if self.kind != Kind.PREFERENCE and self.style != Style.STANDARD:
            raise ExportError("style applies to kind=preference only", parameter="style")
        if self.kind == Kind.RANKINGS and self.ties is not None:
            raise ExportError("ties applies to comparisons and preference", parameter="ties")
        if self.split_test is not None and not 0 < self.split_test < 1:
            raise ExportError("split_test must be between 0 and 1", parameter="split_test")
        if (self.split is None) != (self.split_test is None):
            raise ExportError("split (train or test) and split_test go together", parameter="split")

    @property
    def keep_ties(self) -> bool:
        if self.ties is None:
            return self.kind == Kind.COMPARISONS
        return self.ties == Ties.KEEP


def export_stream(
    options: ExportOptions, *, on_rows: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The export as a stream of byte chunks (each ~256 KB); `on_rows(n)` reports progress."""
    progress = on_rows or (lambda n: None)
    if options.kind == Kind.COMPARISONS and options.format == Format.JSONL:
        query, params = _comparisons_query(options, as_json=True)
        return _copy_json_lines(query, params, progress)
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


# --- SQL -------------------------------------------------------------------------------------

_PSEUDONYMS = "unnest(%s::bigint[], %s::text[]) AS ps(user_id, pseudonym)"


def _pseudonym_params() -> list[Any]:
    mapping = pseudonyms_of_all_users()
    return [list(mapping), list(mapping.values())]


def ranking_where_sql(options: ExportOptions) -> tuple[str, list[Any]]:
    """The WHERE clause over r (ranking), p (prompt) and b (batch). Values are parameters."""
    f = options.filter
    clauses: list[str] = []
    params: list[Any] = []
    if f.snapshot_id is not None:
        clauses.append(
            "r.id IN (SELECT unnest(s.ranking_ids) FROM annotation_datasetsnapshot s "
            "WHERE s.id = %s)"
        )
        params.append(f.snapshot_id)
    if f.batches:
        clauses.append("b.name = ANY(%s::text[])")
        params.append(list(f.batches))
    if f.created_after is not None:
        clauses.append("r.created_at >= %s")
        params.append(f.created_after)
    if f.created_before is not None:
        clauses.append("r.created_at < %s")
        params.append(f.created_before)
    if f.annotator is not None:
        clauses.append("r.annotator_id = ANY(%s::bigint[])")
        params.append(user_ids_for_pseudonym(f.annotator))
    if f.origin is not None:
        clauses.append("r.origin = %s")
        params.append(f.origin)
    if f.k is not None:
        clauses.append("r.k = %s")
        params.append(f.k)
    if options.split_test is not None:
        # A seeded hash of the prompt text, as a number in [0, 2**60): the prompt goes to test
        # below split_test * 2**60. md5 because PostgreSQL has it built in; this is bucketing,
        # not security.
        bucket = "('x' || left(md5(%s::text || p.text), 15))::bit(60)::bigint"
        side = "<" if options.split == Split.TEST else ">="
        clauses.append(f"{bucket} {side} %s")
        params += [f"{options.seed}:", int(options.split_test * 2**60)]
    return (" AND ".join(clauses) or "TRUE"), params


_RANKINGS_SQL = """
SELECT r.id, r.external_id, r.origin, ps.pseudonym, r.groups, r.not_rankable,
       r.display_order, r.duration_ms, r.rationale, r.flags, r.guidelines_version, r.created_at,
       p.id, p.external_id, p.text, p.messages, p.metadata, b.name,
       (SELECT json_agg(json_build_array(c.id, c.text, c.source) ORDER BY c.position)
          FROM annotation_completion c WHERE c.prompt_id = p.id)::text
FROM annotation_ranking r
JOIN annotation_prompt p ON p.id = r.prompt_id
JOIN annotation_promptbatch b ON b.id = p.batch_id
LEFT JOIN {pseudonyms} ON ps.user_id = r.annotator_id
WHERE {where}
ORDER BY r.id
"""

# The `comparisons` export's columns, in order: (name, SQL expression, JSON type).
_COMPARISON_COLUMNS = [
    ("id", "c.id", "number"),
    ("ranking_id", "c.ranking_id", "number"),
    ("prompt_id", "c.prompt_id", "number"),
    ("batch", "b.name", "string"),
    ("winner_id", "c.winner_id", "number"),
    ("winner_text", "w.text", "string"),
    ("loser_id", "c.loser_id", "number"),
    ("loser_text", "l.text", "string"),
    ("rank_gap", "c.rank_gap", "number"),
    ("is_tie", "c.is_tie", "boolean"),
    ("annotator", "ps.pseudonym", "string"),
]

_COMPARISONS_SQL = """
SELECT {select}
FROM annotation_comparison c
JOIN annotation_ranking r ON r.id = c.ranking_id
JOIN annotation_prompt p ON p.id = c.prompt_id
JOIN annotation_promptbatch b ON b.id = p.batch_id
JOIN annotation_completion w ON w.id = c.winner_id
JOIN annotation_completion l ON l.id = c.loser_id
LEFT JOIN {pseudonyms} ON ps.user_id = c.annotator_id
WHERE {where}
ORDER BY c.id
"""


def _json_object_sql(columns: Sequence[tuple[str, str, str]]) -> str:
    """One JSON object per row, written by PostgreSQL as `concat` of pre-escaped pieces.

    Measured on PostgreSQL 15 (bench/export_throughput.py): row_to_json over the same columns
    is 2.6x slower than the plain columns; this, escaping only the strings with to_json, 1.4x.
    """
    pieces = []
    for index, (name, expression, kind) in enumerate(columns):
        # A literal: the names are this module's constants, never a request's.
        pieces.append("'" + ("{" if index == 0 else ",") + f'"{name}":' + "'")
        if kind == "string":
            pieces.append(f"coalesce(to_json({expression})::text, 'null')")
        elif kind == "boolean":
            pieces.append(f"CASE WHEN {expression} THEN 'true' ELSE 'false' END")
        else:  # never NULL: the export's numbers are ids and counts
            pieces.append(expression)
    pieces.append("'}'")
    return f"concat({', '.join(pieces)})"


def _comparisons_query(options: ExportOptions, *, as_json: bool = False) -> tuple[str, list[Any]]:
    where, params = ranking_where_sql(options)
    if not options.keep_ties:
        where += " AND NOT c.is_tie"
    if as_json:
        select = _json_object_sql(_COMPARISON_COLUMNS)
    else:
        select = ", ".join(f"{expression} AS {name}" for name, expression, _ in _COMPARISON_COLUMNS)
    query = _COMPARISONS_SQL.format(select=select, pseudonyms=_PSEUDONYMS, where=where)
    return query, [*_pseudonym_params(), *params]


def _rankings_query(options: ExportOptions) -> tuple[str, list[Any]]:
    where, params = ranking_where_sql(options)
    return _RANKINGS_SQL.format(pseudonyms=_PSEUDONYMS, where=where), [
        *_pseudonym_params(),
        *params,
    ]


FETCH_ROWS = 5000
FLUSH_BYTES = 256 * 1024


def _fetch_chunks(query: str, params: Sequence[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows in chunks from a server-side (named) cursor: the server holds the result and hands
    it over FETCH_ROWS at a time. A named cursor lives in a transaction; closing the generator
    early (a client that hangs up) rolls it back and frees the cursor."""
    connection.ensure_connection()
    with (
        transaction.atomic(),
        connection.connection.cursor(name=f"export_{secrets.token_hex(6)}") as cursor,
    ):
        cursor.itersize = FETCH_ROWS
        cursor.execute(query, params)
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield rows


def _copy_json_lines(
    query: str, params: Sequence[Any], progress: Callable[[int], None]
) -> Iterator[bytes]:
    # `query` selects one JSON document a row. CSV mode with a quote and a delimiter that JSON
    # text never contains (to_json escapes every control character) writes it verbatim; text
    # mode would double its backslashes.
    copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
    connection.ensure_connection()
    with connection.cursor() as cursor, cursor.cursor.copy(copy_sql, params) as copy:
        buffer = bytearray()
        rows = 0
        # PostgreSQL sends one message per row; gather them so that the web server writes
        # large chunks instead of a syscall (and an HTTP chunk header) per row.
        for data in copy:
            buffer += data
            rows += 1
            if len(buffer) >= FLUSH_BYTES:
                yield bytes(buffer)
                buffer.clear()
                progress(rows)
                rows = 0
        if buffer:
            yield bytes(buffer)
        progress(rows)


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
    query, params = _rankings_query(options)
    for chunk in _fetch_chunks(query, params):
        for row in chunk:
            yield _ranking_record(row)
        progress(len(chunk))


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
    query, params = _comparisons_query(options)
    columns = export_formats.COLUMNS["comparisons"]
    for chunk in _fetch_chunks(query, params):
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
            if emitted == FETCH_ROWS:
                progress(emitted)
                emitted = 0
    progress(emitted)
