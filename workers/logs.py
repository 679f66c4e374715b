"""Logging of the long-running commands (worker, glance listen, glance sync): Python's `logging`,
to standard error or a file, as text or as one JSON object per line, at a chosen level.

`introspect worker` hands the choice to the Celery worker it becomes through the environment
(INTROSPECT_LOG_FORMAT; Celery's own --loglevel and --logfile), and `worker_app` below is the app
with Celery's `after_setup_logger` hooked, so that Celery's lines and ours share the format.
Fields passed as `extra=` (image_id, verdict, duration, bytes_read...) are keys of the JSON line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The name of the handler `configure` installs (and replaces when called again).
HANDLER = "introspect"
#: The attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {key: value for key, value in record.__dict__.items() if key not in _STANDARD}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT)


def configure(level: str = "INFO", file: Path | None = None, kind: str = "text") -> None:
    """The root logger writes `level` and above to `file` (standard error when None) as `kind`."""
    handler: logging.Handler = logging.FileHandler(file) if file else logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    handler.set_name(HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER]:  # ours only: a test's stay
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)


def _celery_formats(logger: logging.Logger, **_: object) -> None:
    """Celery's `after_setup_logger`: its handlers get the format INTROSPECT_LOG_FORMAT names."""
    kind = os.environ.get("INTROSPECT_LOG_FORMAT", "text")
    if kind == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


def worker_app() -> Any:
    """The Celery app, with the worker's log lines in INTROSPECT_LOG_FORMAT."""
    from celery.signals import after_setup_logger, after_setup_task_logger  # type: ignore[import-untyped]

    from workers.app import app

    after_setup_logger.connect(_celery_formats, weak=False)
    after_setup_task_logger.connect(_celery_formats, weak=False)
    return app


def log_options(command: Callable[P, R]) -> Callable[P, R]:
    """--log-level, --log-file and --log-format on a long-running command."""
    command = click.option(
        "--log-format",
        type=click.Choice(FORMATS),
        default="text",
        show_default=True,
        help="json: one object a line.",
    )(command)
    command = click.option(
        "--log-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Append there (default: standard error).",
    )(command)
    return click.option(
        "--log-level",
        "--loglevel",
        "-l",
        "log_level",
        type=click.Choice(LEVELS, case_sensitive=False),
        default="INFO",
        show_default=True,
    )(command)
