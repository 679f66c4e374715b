"""Celery configuration (`app.config_from_object("workers.celeryconfig")`), from the settings.

Delivery is at-least-once and tasks are idempotent: acknowledged late, one message reserved per
process, a message whose worker process died goes back to the queue; the per-image delivery
counter in the catalog stops a poison image from looping (see workers/pipeline.py).
"""

from __future__ import annotations

import os
from typing import Any

from workers.settings import get_settings

_settings = get_settings()

broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
# With Redis, a message reserved by a worker stays in the `unacked` hash until it is acked, and
# only comes back to the queue after `visibility_timeout` seconds. When a worker *child* dies,
# reject_on_worker_lost requeues its task at once; the timeout matters when the whole worker
# (or its machine) is gone: its tasks come back after this long, instead of Redis' one-hour
# default. It must stay longer than any message legitimately stays unacked: the hard time limit
# of a task, and the longest retry countdown (a worker holds a countdown message unacked until
# its ETA; a timeout shorter than the countdown would hand it to a second worker meanwhile).
broker_transport_options: dict[str, Any] = {
    "visibility_timeout": _settings.visibility_timeout,
    "global_keyprefix": _settings.broker_key_prefix,
}
if _settings.visibility_timeout <= _settings.hard_time_limit + _settings.retry_backoff_max:
    raise ValueError(
        "INTROSPECT_VISIBILITY_TIMEOUT must exceed the task time limit plus the longest retry backoff, "
        "or Redis hands running tasks to a second worker"
    )
# The sweep (workers/sweep.py) must not take an image from an inspection that may still be running.
if _settings.importing_deadline <= _settings.hard_time_limit:
    raise ValueError(
        "INTROSPECT_SWEEP_IMPORTING_AFTER must exceed the hard time limit (INTROSPECT_TASK_TIME_LIMIT "
        "plus INTROSPECT_TASK_KILL_GRACE), or the sweep queues again images that are still being inspected"
    )

task_default_queue = _settings.queue
task_serializer = "json"
accept_content = ["json"]
task_ignore_result = True  # results are in the catalog, not in a result backend
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
#: Processes per CPU (when `--concurrency` is not given). An inspection's CPU is a fraction of its
#: time: the rest waits for the catalog (round trips, commits, SQLite's write lock) and for the
#: worker's main process to acknowledge it and hand over the next message (one at a time: prefetch
#: 1). In tests/bench/bench_pipeline.py on 2 CPUs, one process per CPU left the CPUs idle a third
#: of the time; two, about half as much; three took the pipeline from 74% to 78% of the no-op
#: ceiling on SQLite and from 69% to 74% on PostgreSQL (medians of three back-to-back pairs of
#: runs), while the ceiling itself did not move. Each process holds up to two connections to a
#: PostgreSQL catalog: on a machine with many CPUs, mind its max_connections (or set --concurrency).
PROCESSES_PER_CPU = 3
worker_concurrency = PROCESSES_PER_CPU * (os.cpu_count() or 1)
# A broker that goes away takes its unacked messages with it (or gives them to another worker
# after the visibility timeout): stop the tasks that were running; their retry is harmless.
worker_cancel_long_running_tasks_on_connection_loss = True
# An inspection past its time (a parser that loops, a location that hangs) gets
# SoftTimeLimitExceeded, which becomes an `error` verdict (the library's `introspect.internal_error`
# inside a parser, `pipeline.time_limit` around it); the hard limit is the backstop that kills the
# process, whose image the sweep then queues again (workers/sweep.py), its delivery counted.
task_soft_time_limit = _settings.task_time_limit
task_time_limit = _settings.hard_time_limit
# Publishing rides out a short broker restart instead of failing the import.
task_publish_retry_policy = {"max_retries": 20, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
worker_send_task_events = False
worker_hijack_root_logger = False
