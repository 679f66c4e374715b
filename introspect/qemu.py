"""qemu-img, caged: the cross-check that our reading matches the hypervisor's.

qemu-img is only ever run as `qemu-img info -f FORMAT --force-share --output=json PATH`, under
`prlimit` (1 GiB of address space, 2 s of CPU, as Glance's QEMU_IMG_PROC_LIMITS) and a wall-clock
timeout, through the `sh` package with no TTY. `-f` is never left out: letting qemu-img probe is
what turns a raw upload into a qcow2 with a backing file on /etc/shadow. The inspector only runs
it when its own findings already allow the image, because qemu-img follows backing files and
VMDK extents that we refuse to open.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

from introspect.decode import GIB, MIB
from introspect.errors import UsageError
from introspect.model import Finding
from introspect.safety import QEMU_DISAGREES, QEMU_FAILED

ADDRESS_SPACE_LIMIT = 1 * GIB
CPU_SECONDS_LIMIT = 2
TIMEOUT_SECONDS = 10.0
#: qemu-img info's JSON for one image is a few KiB; anything beyond this is not its answer.
MAX_OUTPUT = 1 * MIB


@dataclass(frozen=True, slots=True)
class QemuInfo:
    """The two facts we compare: the driver that opened the image and its virtual size."""

    format: str
    virtual_size: int


def _sh() -> Any:
    """The `sh` package, imported on the first cross-check: the library's users who never ask
    for one (Glance's import plugin) need not install it."""
    try:
        return importlib.import_module("sh")
    except ImportError:
        raise UsageError(
            "the qemu-img cross-check needs the `sh` package: pip install 'introspect-images[cli]'"
        ) from None


def info(path: str, qemu_format: str) -> QemuInfo:
    """Run the caged `qemu-img info`; raise UsageError if qemu-img is missing, sh errors if it fails."""
    sh = _sh()
    try:
        prlimit = sh.Command("prlimit")
        sh.Command("qemu-img")
    except sh.CommandNotFound as missing:
        raise UsageError(f"{missing} not found: install qemu-utils and util-linux to cross-check") from None
    output = prlimit(
        f"--as={ADDRESS_SPACE_LIMIT}",
        f"--cpu={CPU_SECONDS_LIMIT}",
        "--",
        "qemu-img",
        "info",
        "-f",
        qemu_format,
        "--force-share",
        "--output=json",
        "--",
        path,
        _timeout=TIMEOUT_SECONDS,
        _tty_out=False,
        _env={"LC_ALL": "C", "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    text = str(output)[:MAX_OUTPUT]
    data = json.loads(text)
    return QemuInfo(format=str(data["format"]), virtual_size=int(data["virtual-size"]))


def cross_check(path: str, qemu_format: str, virtual_size: int | None) -> list[Finding]:
    """Findings for every disagreement between qemu-img and us; none when they agree."""
    sh = _sh()
    try:
        seen = info(path, qemu_format)
    except sh.TimeoutException:
        return [QEMU_FAILED.finding(f"qemu-img info did not answer within {TIMEOUT_SECONDS:g} s")]
    except sh.ErrorReturnCode as failed:
        stderr = failed.stderr.decode(errors="replace").strip().splitlines()
        why = stderr[-1] if stderr else f"exit status {failed.exit_code}"
        return [QEMU_FAILED.finding(f"qemu-img info -f {qemu_format} failed: {why}")]
    except (ValueError, KeyError) as bad:
        return [QEMU_FAILED.finding(f"qemu-img info gave output we could not read ({bad})")]
    findings = []
    if seen.format != qemu_format:
        findings.append(
            QEMU_DISAGREES.finding(
                f"qemu-img opened the image as {seen.format}, introspect read {qemu_format}"
            )
        )
    if virtual_size is not None and seen.virtual_size != virtual_size:
        findings.append(
            QEMU_DISAGREES.finding(
                f"qemu-img says the virtual size is {seen.virtual_size} bytes, "
                f"introspect read {virtual_size}: one of the two misreads the header; "
                "do not boot this image until you know which"
            )
        )
    return findings
