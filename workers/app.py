"""The Celery app. Configuration is a module (workers.celeryconfig) read from the settings;
`introspect worker` and `celery -A workers.app worker` start the same workers, each with its
sweep (workers/sweep.py) in the main process, started by workers/tasks.py once the worker is ready."""

from __future__ import annotations

import gc
import os

from celery import Celery  # type: ignore[import-untyped]  # celery ships no types
from celery.signals import worker_process_init  # type: ignore[import-untyped]

from workers.settings import get_settings

app = Celery("introspect", include=["workers.tasks"])
app.config_from_object("workers.celeryconfig")


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _freeze_imported_objects(**_: object) -> None:
    """Everything imported so far lives as long as the process: keep it out of the garbage
    collector's scans (each task allocates enough to trigger collections over the whole heap)."""
    gc.freeze()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _yield_to_the_main_process(**_: object) -> None:
    """Pool processes run at a lower priority (INTROSPECT_WORKER_NICE) than the main process, which
    hands every task out and acknowledges it: the one serial step of the pipeline."""
    if nice := get_settings().worker_nice:
        os.nice(nice)
