"""Structured logs: one JSON object per line, for a log collector to index (`LOG_FORMAT=json`,
the production default). Fields: time (UTC, ISO 8601), level, logger, message, the process and
thread, the exception when there is one, and any `extra={...}` a call passed (a request's
status code and path for django.request)."""

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; whatever else a record carries came from `extra`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = _plain(value)
        return json.dumps(entry, ensure_ascii=False)


def _plain(value: Any) -> Any:
    """A JSON-friendly form of an `extra` value (a request object becomes its method and path)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "method") and hasattr(value, "path"):
        return f"{value.method} {value.path}"
    return str(value)


def logging_config(*, format: str, level: str) -> dict[str, Any]:
    """The LOGGING setting: everything to stderr, as plain lines or JSON."""
    formatters = {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    }
    if format not in formatters:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"LOG_FORMAT={format!r} is neither 'plain' nor 'json'.")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {format: formatters[format]},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": format}},
        "root": {"handlers": ["console"], "level": level},
    }
