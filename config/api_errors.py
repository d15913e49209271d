"""Every error under /api/ is JSON with a readable `detail`, whoever raises it: DRF, Django's
URL resolver (a non-integer id is a 404 before any view runs), the request-size limit, or a
database that went away. Pages keep Django's own error pages.

- `api_exception_handler` is DRF's EXCEPTION_HANDLER: DRF's own handling, plus a `detail`
  sentence on validation errors whose body is only per-field lists.
- `page_not_found`, `bad_request`, `permission_denied`, `server_error` are the URLconf's
  handler404/400/403/500: JSON under /api/, Django's page elsewhere.
- `HardeningMiddleware` refuses an API body over DATA_UPLOAD_MAX_MEMORY_SIZE (413) before
  anything reads it, a NUL character in the query string (400: PostgreSQL text cannot hold
  one; a cookie holding one is dropped, an Authorization header holding one is a 401), and
  turns a lost database connection into 503 with Retry-After, dropping the broken connection
  so that the retry gets a fresh one.
"""

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
# Seconds a client should wait before retrying after the database was unreachable.
RETRY_AFTER_SECONDS = 2


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def json_error(status: int, detail: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"detail": detail, **extra}, status=status)


def readable(errors: Any, field: str = "") -> str:
    """DRF's nested error structure as one sentence: 'flags.12.0: "x" is not a valid choice'."""
    if isinstance(errors, dict):
        return "; ".join(
            readable(value, key if field == "" or key == "non_field_errors" else f"{field}.{key}")
            for key, value in errors.items()
        )
    if isinstance(errors, list):
        return "; ".join(readable(value, field) for value in errors)
    prefix = "" if field in ("", "non_field_errors") else f"{field}: "
    return f"{prefix}{errors}"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": _too_big_message()}, status=413)
    response = exception_handler(exc, context)
    if response is None:
        return None  # not an API exception: the middleware or handler500 answers
    data = response.data
    if isinstance(data, list):
        response.data = {"detail": readable(data), "errors": data}
    elif isinstance(data, dict) and not isinstance(data.get("detail"), str):
        response.data = {**data, "detail": readable(data)}
    return response


class HardeningMiddleware:
    """See the module docstring. Placed first, so its checks run before any other middleware
    reads the request, and it sees database errors from the views."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (refused := self._refuse(request)) is not None:
            return refused
        return self.get_response(request)

    def _refuse(self, request: HttpRequest) -> HttpResponse | None:
        if is_api(request):  # pages keep Django's own limit, which leaves out file uploads
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            length = request.META.get("CONTENT_LENGTH") or "0"
            try:
                too_big = limit is not None and int(length) > limit
            except ValueError:
                return _error(request, 400, f"Content-Length {length[:40]!r} is not a number.")
            if too_big:
                return _error(request, 413, _too_big_message())
        if any(
            "\x00" in key or any("\x00" in value for value in values)
            for key, values in request.GET.lists()
        ):
            return _error(request, 400, "NUL characters are not allowed in query parameters.")
        authorization = request.META.get("HTTP_AUTHORIZATION", "")
        if is_api(request) and not authorization.isprintable():
            # A NUL in a token would reach the token lookup and fail in PostgreSQL.
            response = json_error(401, "Invalid token header: it holds control characters.")
            response["WWW-Authenticate"] = "Token"
            return response
        # A cookie can carry a NUL (`sessionid="abc\000"` unquotes to one); the session
        # lookup would then fail in PostgreSQL. Such a cookie is no one's: forget it.
        for name in [name for name, value in request.COOKIES.items() if "\x00" in value]:
            del request.COOKIES[name]
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RequestDataTooBig):
            return _error(request, 413, _too_big_message())
        if _database_lost(exception):
            return _database_unavailable(request, exception)
        return None


def _database_lost(exception: BaseException) -> bool:
    """A connection that broke (terminated backend, restarted server), not a bad query."""
    return isinstance(exception, InterfaceError | OperationalError)


def _database_unavailable(request: HttpRequest, exception: BaseException) -> HttpResponse:
    logger.warning("database unavailable during %s %s: %s", request.method, request.path, exception)
    for connection in connections.all(initialized_only=True):
        # A connection PostgreSQL terminated stays broken; drop it so the next request
        # (the client's retry) opens a new one instead of failing again.
        if not connection.in_atomic_block and (
            connection.connection is None or not connection.is_usable()
        ):
            connection.close()
    response = _error(
        request,
        503,
        "The database is unavailable for a moment; nothing was saved. Retry the request.",
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _too_big_message() -> str:
    return f"The request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."


def _error(request: HttpRequest, status: int, detail: str) -> HttpResponse:
    if is_api(request):
        return json_error(status, detail)
    return HttpResponse(detail, status=status, content_type="text/plain; charset=utf-8")


# The URLconf's handlers (config/urls.py).


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return json_error(404, f"No endpoint or object at {request.path[:200]}.")
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        return _error(request, 413, _too_big_message())
    if is_api(request):
        return json_error(400, "Bad request.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return json_error(403, str(exception) or "You may not do this.")
    return defaults.permission_denied(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Called inside Django's `except` block, so the exception is at hand.
    exception = sys.exc_info()[1]
    if exception is not None and _database_lost(exception):
        return _database_unavailable(request, exception)
    if is_api(request):
        return json_error(500, "Internal server error; it has been logged.")
    return defaults.server_error(request)
