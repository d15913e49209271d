"""What RankLoop refuses in any JSON it reads, API body or import line alike: a key repeated
in one object (which one did the sender mean?) and a NUL character (PostgreSQL text cannot
hold one). Plain Python, shared by config/api_input.py and annotation/imports.py."""

from typing import Any


class RepeatedKey(ValueError):
    pass


def object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads(..., object_pairs_hook=object_without_repeats)` raises RepeatedKey."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise RepeatedKey(f"the key {key!r} appears twice in one object")
        data[key] = value
    return data


def holds_nul(data: Any) -> bool:
    """Whether any string or key in decoded JSON holds a NUL character (no recursion)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
