"""The pipeline end to end on each database server many workers share: the real `introspect
import --wait` and a real `introspect worker` (two processes, a claimed Redis database) with
INTROSPECT_DATABASE_URL naming a PostgreSQL schema or a MariaDB database of this test's own; then a
forced re-run of everything. What each catalog stores must be what the library reports."""

from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

import pytest

import introspect
from introspect.model import Verdict
from tests.workers.conftest import SQL_URLS
from tests.workers.services import Deployment, RedisDb, deployment_env, start_worker
from workers.catalog import Catalog, Status
from workers.catalog.sql import make_engine

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.qemu]

STATUS = {Verdict.OK: Status.ACTIVE, Verdict.REJECTED: Status.REJECTED, Verdict.ERROR: Status.ERROR}
NAMES = ("small.qcow2", "stream.vmdk", "disk.vhdx", "backed.qcow2")


@pytest.mark.parametrize("catalog_url", SQL_URLS[1:], indirect=True)
def test_workers_on_a_server_catalog_store_what_the_library_reports(
    catalog_url: str, redis_db: RedisDb, images: dict[str, Path], tmp_path: Path
) -> None:
    env = deployment_env(
        tmp_path,
        broker_url=redis_db.url,
        prefix=redis_db.prefix,
        queue=f"q-{secrets.token_hex(4)}",
        database_url=catalog_url,
    )
    deployment = Deployment(env=env, data_dir=tmp_path)
    worker = start_worker(env, tmp_path / "worker.log", "--concurrency", "2")
    catalog = Catalog(make_engine(catalog_url))
    try:
        paths = [images[name] for name in NAMES]
        result = deployment.introspect("import", "--wait", *map(str, paths), check=False)
        ids = [uuid.UUID(m) for m in re.findall(r"^([0-9a-f-]{36})  ", result.stderr, flags=re.MULTILINE)]
        assert len(ids) == len(paths)
        # import exits 1 when an image did not end active, as inspect does (the backed qcow2)
        not_active = [i for i, p in zip(ids, paths, strict=True) if not introspect.inspect(p).ok]
        assert result.returncode == (1 if not_active else 0), result.stderr
        deployment.introspect("rerun", "--all", "--wait")
        for image_id, path in zip(ids, paths, strict=True):
            report = introspect.inspect(path)
            record = catalog.get(image_id)
            assert record.status == STATUS[report.verdict], record.findings
            assert catalog.introspected(image_id) == report.properties
            assert record.findings == [finding.model_dump(mode="json") for finding in report.findings]
            assert record.deliveries == 0 and record.claim_token is None
    finally:
        catalog.dispose()
        worker.stop()
