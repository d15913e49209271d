"""The API's JSON parser: DRF's, stricter about what a hostile client can send.

Refused with a 400 that says why, before any serializer sees the data:
- nesting deeper than MAX_DEPTH (the standard library's decoder recurses, and a body of
  100,000 `[` would otherwise end in a RecursionError and a 500);
- a key repeated in one object (`{"order": [1], "order": [2]}`: which one did the client mean?);
- a NUL character in any string or key (PostgreSQL text cannot hold one);
- bytes that are not UTF-8, NaN and Infinity (not JSON), and anything that is not JSON.
"""

import codecs
import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from annotation.strict_json import holds_nul, object_without_repeats

MAX_DEPTH = 32


class StrictJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        # The middleware refused a Content-Length over the limit; this bounds a body that
        # arrived without one, whatever the server in front lets through.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise BodyTooLarge(f"The request body is over the limit of {limit} bytes.")
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"The body is not valid {encoding}: {exc}") from exc
        return loads_strict(text)


class BodyTooLarge(APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def loads_strict(text: str) -> Any:
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(text, MAX_DEPTH):
        raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")
    try:
        data = json.loads(text, object_pairs_hook=object_without_repeats, parse_constant=_no_nan)
    except ValueError as exc:  # JSONDecodeError, and the hooks' own errors
        raise ParseError(f"JSON parse error - {exc}") from exc
    except RecursionError as exc:  # unreachable after the depth check; never a 500
        raise ParseError("JSON parse error - nested too deeply.") from exc
    if holds_nul(data):
        raise ParseError("NUL characters (\\u0000) are not allowed in strings.")
    return data


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit`: one pass, no recursion."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _no_nan(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
