"""The service side's commands as `introspect` lists them, without importing them: the entry points
of the `introspect.commands` group (pyproject.toml) name the two functions below, which declare
each command's place and the first paragraph of its help. `introspect --help` reads nothing more;
`introspect images list` imports workers.cli (Celery, SQLAlchemy...) when it runs.

tests/workers/test_commands.py checks every declaration against the command it names: the same
help (so the listing is the one the command would give), and `needs` the packages of the extra.
"""

from __future__ import annotations

from introspect.cli import LazyCommand, PluginGroup

#: The `pipeline` extra's packages (pyproject.toml), by import name.
PIPELINE_NEEDS = (
    "celery",
    "redis",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pymysql",
    "platformdirs",
    "pydantic_settings",
)
#: The `glance` extra's own packages, by import name (it includes the pipeline's).
GLANCE_NEEDS = (
    *PIPELINE_NEEDS,
    "openstack",
    "keystoneauth1",
    "requests",
    "urllib3",
    "oslo_messaging",
    "oslo_config",
    "yaml",
    "tenacity",
)

PIPELINE = {
    "import": LazyCommand(
        "workers.cli:import_command",
        "Create images, upload their bytes to the store (or register a location), queue inspections.\n"
        "Exit status 1 when an inspection shown (--wait, --inline) did not end `active`.",
        PIPELINE_NEEDS,
    ),
    "images": LazyCommand(
        "workers.cli:images_group", "List, show and override images in the catalog.", PIPELINE_NEEDS
    ),
    "rerun": LazyCommand(
        "workers.cli:rerun_command",
        "Inspect images again (after a parser upgrade, a policy change, a failure). With --dry-run,\n"
        "a row for each image it would re-run (action `rerun`), then one for each image whose declared\n"
        "disk_format or virtual size disagrees with its last inspection (action `mismatch`, with its\n"
        "problems); with --wait or --inline, the images of the job by status. --policy: with --inline.",
        PIPELINE_NEEDS,
    ),
    "delete": LazyCommand(
        "workers.cli:delete_command",
        "Delete an image: its record, properties, and its file if the store holds it. Its history\n"
        "stays in a tombstone: `introspect images history --deleted ID`.",
        PIPELINE_NEEDS,
    ),
    "download": LazyCommand(
        "workers.cli:download_command",
        "Copy an image's bytes out of the store (or from its location).",
        PIPELINE_NEEDS,
    ),
    "db": LazyCommand("workers.cli:db_group", "The catalog database.", PIPELINE_NEEDS),
    "worker": LazyCommand(
        "workers.cli:worker_command",
        "Start a Celery worker (it replaces this process); extra arguments go to `celery worker`.\n"
        "Its tasks inspect under --policy (else INTROSPECT_POLICY).",
        PIPELINE_NEEDS,
    ),
    "status": LazyCommand(
        "workers.cli:status_command",
        "Broker reachability, live workers, queue depth, and images by status (exit 1 when the\n"
        "broker or the catalog cannot be reached). -c picks broker, workers, queue or catalog.",
        PIPELINE_NEEDS,
    ),
}
GLANCE = {
    "glance": LazyCommand(
        "workers.glance.cli:glance_group",
        "Work with an OpenStack Glance: inspect its images and write the properties back.",
        GLANCE_NEEDS,
    ),
}


def pipeline(group: PluginGroup) -> None:
    """The pipeline's commands (workers/cli.py): import, images, rerun, delete, download, db, worker, status."""
    for name, command in PIPELINE.items():
        group.add_lazy_command(name, command)


def glance(group: PluginGroup) -> None:
    """`introspect glance` (workers/glance/cli.py)."""
    for name, command in GLANCE.items():
        group.add_lazy_command(name, command)
