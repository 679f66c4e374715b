"""Settings of the service side, from the environment (`INTROSPECT_*`), never read by the library.

Defaults give a working single-machine setup with nothing to configure: a SQLite catalog and a
local image store under the user's data directory, and Redis on localhost as the broker (needed
only when tasks go through Celery; `--inline`/INTROSPECT_EAGER=1 runs them in-process).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import platformdirs
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.errors import PipelineError

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def read_settings(kind: type[SettingsT]) -> SettingsT:
    """`kind` read from the environment; a value that is not one is one line naming the variable
    (`INTROSPECT_EAGER: Input should be a valid boolean`), never a pydantic traceback."""
    try:
        return kind()
    except ValidationError as error:
        prefix = kind.model_config.get("env_prefix", "")
        raise PipelineError(
            "; ".join(
                f"{prefix}{'_'.join(map(str, problem['loc'])).upper()}: {problem['msg']}"
                for problem in error.errors()
            )
        ) from None


def _default_data_dir() -> Path:
    return platformdirs.user_data_path("introspect", appauthor=False)


class Settings(BaseSettings):
    """Everything a worker, the CLI or the demo needs to find the catalog, the store and the broker."""

    model_config = SettingsConfigDict(env_prefix="INTROSPECT_", frozen=True, extra="ignore")

    #: Where images and their properties live, one of workers.backends.BACKENDS: this project's
    #: SQL catalog (`sql`), or an OpenStack Glance (`glance`, configured by INTROSPECT_GLANCE_*,
    #: see workers/glance/settings.py).
    catalog: str = "sql"
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every key Celery/kombu create in Redis, so that deployments (and test runs) can
    #: share one Redis database and clean up exactly their own keys.
    broker_key_prefix: str = ""
    queue: str = "introspect"
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    store_dir: Path | None = None
    eager: bool = False
    #: Deliveries of one image's inspection that may end without the task finishing (the worker
    #: process died) before the image gets an `error` verdict instead of another try.
    delivery_limit: int = Field(3, ge=1)
    #: Seconds before Redis hands an unacknowledged task to another worker; see workers/app.py.
    visibility_timeout: int = Field(600, ge=10)
    #: Time limit of one inspection: past it the task gets SoftTimeLimitExceeded (recorded as the
    #: verdict `pipeline.time_limit`), and `task_kill_grace` seconds later the worker kills the child.
    task_time_limit: int = Field(120, ge=1)
    task_kill_grace: int = Field(30, ge=1)
    #: Longest wait between two retries of a transient fault (exponential backoff with jitter).
    retry_backoff_max: int = Field(60, ge=1)
    max_retries: int = Field(8, ge=0)
    #: Niceness added to each worker pool process (0 to 19; 0 leaves them as the main process).
    #: The main process fetches, hands out and acknowledges every task one at a time: when it waits
    #: for a CPU behind the inspections it feeds, the pool idles. In six back-to-back pairs of
    #: tests/bench/bench_pipeline.py runs on 2 CPUs, the pipeline's median share of the no-op ceiling
    #: was 70% at 10 against 64% at 0 on SQLite, and 65% against 57% on PostgreSQL.
    worker_nice: int = Field(10, ge=0, le=19)
    #: Ids fetched per page when a re-run walks the catalog (keyset pagination).
    rerun_batch: int = Field(500, ge=1)
    #: Seconds a blocked `--wait` waits for progress before it publishes the missing tasks again
    #: (a broker restart loses queued messages; tasks are idempotent, so a duplicate is harmless).
    stall_timeout: float = Field(30.0, gt=0)
    #: Seconds a blocked `--wait` goes on with no worker answering (after one did, or after the
    #: broker was unreachable) before it says nobody will finish: a restarted broker's Celery
    #: workers reconnect with a backoff (2 s, 4 s, 6 s… up to 30 s between tries), silent meanwhile.
    worker_grace: float = Field(60.0, gt=0)
    #: Directories (separated by `:`) that `import --location file://...` may name, as Glance
    #: confines its filesystem store to its data directories: any other local file (say
    #: file:///etc/shadow) is refused, so that no command makes workers read it or `download`
    #: serve it. Empty (the default): only uploads, which the store holds, are local.
    location_roots: str = ""
    #: The policy every inspection runs under (the JSON of `introspect inspect --policy`, see
    #: `introspect rules`): the worker's tasks, `--inline` imports and re-runs, glance
    #: listen/sync/inspect. Unset: the default severities.
    policy: Path | None = None

    #: The sweep (workers/sweep.py): every `sweep_period` seconds (0: never) each worker queues again
    #: the images whose inspection stopped moving: `saving` with their bytes complete for
    #: `sweep_pending_after` seconds (their message was lost), `importing` for `sweep_importing_after`
    #: seconds (the task that held them is gone). Unset, both deadlines are derived from the time
    #: limits: the hard limit plus the longest retry wait plus 30 s.
    sweep_period: float = Field(30.0, ge=0)
    sweep_pending_after: float | None = Field(None, gt=0)
    sweep_importing_after: float | None = Field(None, gt=0)
    #: Images queued again by one sweep of one worker, at most.
    sweep_batch: int = Field(500, ge=1)

    @property
    def hard_time_limit(self) -> int:
        """Seconds after which the worker kills an inspection's process."""
        return self.task_time_limit + self.task_kill_grace

    @property
    def importing_deadline(self) -> float:
        """Seconds an `importing` image may go without moving before a sweep queues it again:
        past the hard limit, no live delivery can still hold it."""
        if self.sweep_importing_after is not None:
            return self.sweep_importing_after
        return float(self.hard_time_limit + self.retry_backoff_max + 30)

    @property
    def pending_deadline(self) -> float:
        """Seconds a `saving` image with its bytes complete may wait for its inspection to start
        before a sweep queues it again."""
        if self.sweep_pending_after is not None:
            return self.sweep_pending_after
        return float(self.hard_time_limit + self.retry_backoff_max + 30)

    @property
    def catalog_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'catalog.sqlite'}"

    @property
    def image_dir(self) -> Path:
        return self.store_dir or self.data_dir / "images"

    @property
    def file_roots(self) -> list[Path]:
        """The directories of `location_roots`, resolved (symbolic links followed)."""
        return [Path(root).resolve() for root in self.location_roots.split(":") if root.strip()]


def mask(url: str) -> str:
    """A URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return read_settings(Settings)
