"""cloud-init's own Debian package unpacked over a root (fixtures/make/facts.sh): the guest pass
says it is installed, and where it read that."""

from __future__ import annotations

import shlex

import introspect
from tests.conftest import fixture_group


def test_a_root_with_cloud_init_says_so():
    image = fixture_group("facts") / "cloud-root.ext4"
    release = dict(
        line.split("=", 1)
        for line in shlex.split((image.parent / f"{image.name}.os-release.txt").read_text(), comments=True)
        if "=" in line
    )
    unpacked = (image.parent / f"{image.name}.cloud-init.txt").read_text().split()
    report = introspect.inspect(image)
    [system] = report.guest.systems
    assert (system.device, system.filesystem) == ("/dev/sda", "ext4")
    assert (system.os_id, system.version) == (release["ID"], release["VERSION_ID"])
    assert system.cloud_init and "/" + system.sources["cloud_init"].path.lstrip("/") in {
        "/" + p for p in unpacked
    }
    assert report.properties["introspect_cloud_init"] == "yes"
    assert "hw_qemu_guest_agent" not in report.properties  # not in this root
