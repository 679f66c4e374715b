"""`introspect import vm.ova`: the package is stored as it is, and the task inspects inside it (the
boot disk's format and size, the OVF's properties), in-process with the embedded deployment."""

from __future__ import annotations

import introspect
from tests.conftest import fixture_group
from tests.workers.test_cli import catalog_of, cli, data_dir, ids_of

__all__ = ["data_dir"]  # the fixture, shared with test_cli


def test_an_imported_ova_is_inspected_inside(data_dir):
    ova = fixture_group("ova") / "vbox-sata.ova"
    result = cli("import", "--wait", str(ova))
    (image_id,) = ids_of(result)
    report = introspect.inspect(ova)
    assert (report.format, report.container_format) == ("vmdk", "ova")
    catalog = catalog_of(data_dir)
    assert catalog.effective(image_id) == report.properties
    assert catalog.effective(image_id)["hw_disk_bus"] == "sata"
    record = catalog.get(image_id)
    assert record.size == ova.stat().st_size
    assert (record.disk_format, record.virtual_size) == ("vmdk", report.virtual_size)
