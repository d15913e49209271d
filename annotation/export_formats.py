"""Writers that turn export rows into JSONL, CSV or Parquet bytes, chunk by chunk.

Each writer takes an iterator of row dicts and yields byte chunks of about FLUSH_BYTES, so a
streamed HTTP response or a file write never holds more than one chunk (Parquet: one row group).
The columns below are the documented export columns, in order.
"""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import pyarrow as pa

FLUSH_BYTES = 256 * 1024
PARQUET_ROW_GROUP = 20_000

CONTENT_TYPES = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}

# The documented columns of each export and their Parquet types, by name: pyarrow costs ~90 MB
# of memory to import, so a web worker only loads it for its first Parquet export.
_PAIR_PROVENANCE = [
    ("prompt_id", "int64"),
    ("ranking_id", "int64"),
    ("chosen_id", "int64"),
    ("rejected_id", "int64"),
    ("rank_gap", "int16"),
    ("is_tie", "bool"),
    ("annotator", "string"),
    ("batch", "string"),
]
_COLUMN_TYPES: dict[str, list[tuple[str, str]]] = {
    "rankings": [
        ("id", "string"),
        ("prompt", "string"),
        ("messages", "messages"),
        ("completions", "completions"),
        ("ranking", "groups"),
        ("metadata", "string"),  # JSON: free-form, no fixed schema
        ("prompt_id", "int64"),
        ("ranking_id", "int64"),
        ("ranking_external_id", "string"),
        ("origin", "string"),
        ("annotator", "string"),
        ("not_rankable", "bool"),
        ("flags", "string"),  # JSON: {completion index: [labels]}
        ("rationale", "string"),
        ("display_order", "indices"),
        ("duration_ms", "int64"),
        ("guidelines_version", "int64"),
        ("batch", "string"),
        ("created_at", "timestamp"),
    ],
    "comparisons": [
        ("id", "int64"),
        ("ranking_id", "int64"),
        ("prompt_id", "int64"),
        ("batch", "string"),
        ("winner_id", "int64"),
        ("winner_text", "string"),
        ("loser_id", "int64"),
        ("loser_text", "string"),
        ("rank_gap", "int16"),
        ("is_tie", "bool"),
        ("annotator", "string"),
    ],
    "preference_standard": [
        ("prompt", "string"),
        ("chosen", "string"),
        ("rejected", "string"),
        *_PAIR_PROVENANCE,
    ],
    "preference_conversational": [
        ("prompt", "messages"),
        ("chosen", "messages"),
        ("rejected", "messages"),
        *_PAIR_PROVENANCE,
    ],
}
COLUMNS: dict[str, list[str]] = {
    key: [name for name, _ in columns] for key, columns in _COLUMN_TYPES.items()
}


def parquet_schema(key: str) -> "pa.Schema":
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int16": pa.int16(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "messages": messages,
        "completions": pa.list_(pa.struct([("text", pa.string()), ("source", pa.string())])),
        "groups": pa.list_(pa.list_(pa.int16())),
        "indices": pa.list_(pa.int16()),
    }
    return pa.schema([(name, types[kind]) for name, kind in _COLUMN_TYPES[key]])


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


def parquet_chunks(rows: Iterable[dict[str, Any]], *, schema_key: str) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(schema_key)
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
