"""The SQL behind the exports and how it is read: a server-side cursor in chunks, or COPY.

Every query joins ranking r, prompt p and batch b, filtered by `ranking_where_sql`: a fixed
condition per filter field, values always as parameters. Annotator ids become pseudonyms in SQL
through a {user id: pseudonym} array computed in Python, so the key never reaches the database.
"""

import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.db import connection, transaction

from annotation.export_options import ExportOptions, Split
from annotation.pseudonyms import pseudonyms_of_all_users, user_ids_for_pseudonym

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
          FROM annotation_completion c
          WHERE c.prompt_id = p.id AND c.id IS DISTINCT FROM p.attention_check_id)::text
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


def comparisons_query(options: ExportOptions, *, as_json: bool = False) -> tuple[str, list[Any]]:
    where, params = ranking_where_sql(options)
    if not options.keep_ties:
        where += " AND NOT c.is_tie"
    if as_json:
        select = _json_object_sql(_COMPARISON_COLUMNS)
    else:
        select = ", ".join(f"{expression} AS {name}" for name, expression, _ in _COMPARISON_COLUMNS)
    query = _COMPARISONS_SQL.format(select=select, pseudonyms=_PSEUDONYMS, where=where)
    return query, [*_pseudonym_params(), *params]


def rankings_query(options: ExportOptions) -> tuple[str, list[Any]]:
    where, params = ranking_where_sql(options)
    return _RANKINGS_SQL.format(pseudonyms=_PSEUDONYMS, where=where), [
        *_pseudonym_params(),
        *params,
    ]


FETCH_ROWS = 5000
FLUSH_BYTES = 256 * 1024


def fetch_chunks(query: str, params: Sequence[Any]) -> Iterator[list[tuple[Any, ...]]]:
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


def copy_json_lines(
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
