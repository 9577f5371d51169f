"""Logging for the ``wactorz`` command: one handler on stderr, for people or for log collectors.

A library logs and leaves the output to the application (an application that sets up
no logging at all still sees warnings and errors, through Python's last-resort handler);
the command line *is* the application, so `configure_logging`
sets up the one handler it writes through:

- ``text`` (the default): ``2026-11-24 23:32:00.123 INFO     wactorz.service: message``,
  local time, one line per record (plus the traceback, if any);
- ``json``: one JSON object per line with ``time`` (UTC, ISO 8601), ``level``, ``logger``
  and ``message``, ``exception`` when there is a traceback, and every ``extra=`` field of
  the record, so a collector can index them.

``level`` applies to wactorz's own loggers. Other libraries' loggers (the HTTP client, the
MQTT client, ...) stay at WARNING unless DEBUG is asked for, because at INFO they describe
every request and drown the service's own lines.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Final, TextIO, final

from wactorz.config import LogFormat, LogLevel

__all__ = ["JSONFormatter", "configure_logging"]

_TEXT_FORMAT: Final = "%(asctime)s.%(msecs)03d %(levelname)-8s %(name)s: %(message)s"
_TEXT_DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

# What every LogRecord carries; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


@final
class JSONFormatter(logging.Formatter):
    """Formats each record as one line of JSON (see the module docstring for the keys).

    Values that JSON cannot hold are written as their `str`, so a log line is never lost
    to a formatting error.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        return json.dumps(entry, ensure_ascii=False, default=str)


@final
class _Handler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs; its class marks it as ours to replace."""


def configure_logging(
    level: LogLevel | str = "INFO",
    log_format: LogFormat | str = "text",
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send log records to ``stream`` (default: stderr) as ``text`` or ``json``; return the handler.

    ``level`` is DEBUG, INFO, WARNING or ERROR, in any case. Calling it again replaces the
    handler a previous call installed, so it is safe to call once per command. Raises
    `ValueError` for an unknown level or format.
    """
    name = level.upper()
    if name not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    number = logging.getLevelNamesMapping()[name]
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JSONFormatter()
    elif log_format == "text":
        formatter = logging.Formatter(_TEXT_FORMAT, _TEXT_DATE_FORMAT)
    else:
        raise ValueError(f"unknown log format {log_format!r}: use 'text' or 'json'")
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(number if number == logging.DEBUG else max(number, logging.WARNING))
    logging.getLogger("wactorz").setLevel(number)
    return handler
