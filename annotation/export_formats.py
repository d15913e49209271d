"""Writers that turn export rows into JSONL, CSV or Parquet bytes, chunk by chunk.

Each writer takes an iterator of row dicts and yields byte chunks of about FLUSH_BYTES, so a
streamed HTTP response or a file write never holds more than one chunk (Parquet: one row group).
The columns below are the documented export columns, in order.
"""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

FLUSH_BYTES = 256 * 1024
PARQUET_ROW_GROUP = 20_000

CONTENT_TYPES = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_PAIR_PROVENANCE = [
    ("prompt_id", pa.int64()),
    ("ranking_id", pa.int64()),
    ("chosen_id", pa.int64()),
    ("rejected_id", pa.int64()),
    ("rank_gap", pa.int16()),
    ("is_tie", pa.bool_()),
    ("annotator", pa.string()),
    ("batch", pa.string()),
]

SCHEMAS: dict[str, pa.Schema] = {
    "rankings": pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("messages", _MESSAGES),
            ("completions", pa.list_(pa.struct([("text", pa.string()), ("source", pa.string())]))),
            ("ranking", pa.list_(pa.list_(pa.int16()))),
            ("metadata", pa.string()),  # JSON: free-form, no fixed schema
            ("prompt_id", pa.int64()),
            ("ranking_id", pa.int64()),
            ("ranking_external_id", pa.string()),
            ("origin", pa.string()),
            ("annotator", pa.string()),
            ("not_rankable", pa.bool_()),
            ("flags", pa.string()),  # JSON: {completion index: [labels]}
            ("rationale", pa.string()),
            ("display_order", pa.list_(pa.int16())),
            ("duration_ms", pa.int64()),
            ("guidelines_version", pa.int64()),
            ("batch", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    "comparisons": pa.schema(
        [
            ("id", pa.int64()),
            ("ranking_id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("batch", pa.string()),
            ("winner_id", pa.int64()),
            ("winner_text", pa.string()),
            ("loser_id", pa.int64()),
            ("loser_text", pa.string()),
            ("rank_gap", pa.int16()),
            ("is_tie", pa.bool_()),
            ("annotator", pa.string()),
        ]
    ),
    "preference_standard": pa.schema(
        [
            ("prompt", pa.string()),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            *_PAIR_PROVENANCE,
        ]
    ),
    "preference_conversational": pa.schema(
        [("prompt", _MESSAGES), ("chosen", _MESSAGES), ("rejected", _MESSAGES), *_PAIR_PROVENANCE]
    ),
}
COLUMNS: dict[str, list[str]] = {name: schema.names for name, schema in SCHEMAS.items()}
# Parquet has no free-form JSON type: these columns are JSON text there (and in CSV).
_JSON_TEXT_COLUMNS = {"metadata", "flags"}

# OWASP's CSV injection list: a spreadsheet evaluates a cell that starts with one of these.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """Make a spreadsheet read a text cell as text: prefix a would-be formula with '."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def jsonl_chunks(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = bytearray()
    for row in rows:
        buffer += orjson.dumps(row)
        buffer += b"\n"
        if len(buffer) >= FLUSH_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def csv_chunks(rows: Iterable[dict[str, Any]], *, columns: Sequence[str]) -> Iterator[bytes]:
    """CSV with a header. Lists and objects are JSON text in their cell; every text cell, JSON
    included, is neutralised against formula injection."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in columns])
        if text.tell() >= FLUSH_BYTES:
            yield text.getvalue().encode()
            text.seek(0)
            text.truncate()
    yield text.getvalue().encode()


def _csv_cell(value: object) -> object:
    if isinstance(value, str):
        return neutralise_cell(value)
    if isinstance(value, list | dict):
        return neutralise_cell(orjson.dumps(value).decode())
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class _Drain:
    """A write-only file that pyarrow writes into and the generator empties after each row
    group, so the Parquet file never sits in memory whole."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def parquet_chunks(rows: Iterable[dict[str, Any]], *, schema: pa.Schema) -> Iterator[bytes]:
    sink = _Drain()
    json_columns = _JSON_TEXT_COLUMNS & set(schema.names)
    # Parquet metadata holds no write time: the same rows give the same bytes, for one pyarrow
    # version (the file's `created_by` names it).
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        group: list[dict[str, Any]] = []
        for row in rows:
            for name in json_columns:
                row = {**row, name: orjson.dumps(row[name]).decode()}
            group.append(row)
            if len(group) >= PARQUET_ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group = []
                yield sink.take()
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))
    finally:
        writer.close()
    yield sink.take()
