"""The app `introspect worker` starts: workers.app's, with its log lines in the format
INTROSPECT_LOG_FORMAT names (workers/logs.py). `celery -A workers.app worker` starts the same
workers with Celery's own log format."""

from __future__ import annotations

from workers.logs import worker_app

app = worker_app()
