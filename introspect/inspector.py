"""`inspect()`: one image in, one Report out, whatever the bytes are.

Order of work: read the head and tail once; when a container claims the head (a compression
wrapper; see `introspect.containers`), open it and inspect its boot member the same way, one
level deeper; else detect, check the declared format (`satisfies()`), parse the detected format
through the metered reader, run its safety checks and the rules every image gets, apply the
policy, and merge the layers' properties. An image that cannot be parsed yields an `error`
verdict; only a caller's mistake (a path that does not exist) or a failing source (OSError or
SourceError: a disk or network fault, which says nothing of the image) raises.

Reports, like every output model, are built without validation (see `introspect.model.Frozen`):
every value is already what its field holds, as mypy checks where each is passed. Validating them
again would check nothing new, and would build the Report's validator, every format's details
with it, on the first inspection of a process (tens of ms of `introspect inspect one.qcow2`).
tests/test_registry.py checks, over every fixture, that validation gives back the same Report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from introspect import containers
from introspect import properties as props
from introspect.containers import DEPTH, MAX_CONTAINER_DEPTH, MEMBER, Container
from introspect.detect import detect
from introspect.errors import BytesNotKept, ImageError, SourceError, UsageError
from introspect.formats import BY_NAME, REGISTERED, canonical_name, satisfies
from introspect.formats import SATISFIES as SATISFIES  # re-exported for workers/catalog/records.py
from introspect.formats.base import Format, Head, Inspection
from introspect.guest.model import GuestDetails
from introspect.model import Finding, Severity, Verdict
from introspect.report import Report
from introspect.safety import (
    CONTAINER_MISMATCH,
    DEFAULT_POLICY,
    EMPTY,
    FORMAT_MISMATCH,
    GUEST_INTERNAL_ERROR,
    GUEST_PARTIAL,
    GUEST_UNREADABLE,
    INTERNAL_ERROR,
    POLYGLOT,
    QEMU_SKIPPED,
    RULES,
    TRUNCATED,
    VIRTUAL_SIZE_LIMIT,
    VIRTUAL_SIZE_ZERO,
    Policy,
)
from introspect.sources import (
    GUEST_BUDGET,
    Budget,
    ByteSource,
    FileSource,
    HttpSource,
    OpenFileSource,
    Reader,
    is_url,
)

if TYPE_CHECKING:
    from introspect.guest.inspection import GuestInspection

Source = str | os.PathLike[str] | IO[bytes] | ByteSource

#: The cross-check's "path" for a source that is not a local file (a URL, an open file, bytes).
NOT_LOCAL = "<not a local file>"

#: Formats whose virtual size is the file's size: unknown in a member whose end is unknown.
SIZED_BY_FILE = frozenset(entry.name for entry in REGISTERED if entry.sized_by_file)


def inspect(
    source: Source,
    *,
    expect: str | None = None,
    policy: Policy | None = None,
    budget: Budget | None = None,
    cross_check: bool = False,
    name: str | None = None,
    expect_container: str | None = None,
    guest: bool = True,
    guest_budget: Budget | None = None,
) -> Report:
    """Inspect one image: a path, an http(s):// URL (read with Range requests), an open binary
    file, or a ByteSource.

    `expect` is the disk_format the image was declared with; a different content is a finding.
    `cross_check` also runs `qemu-img info` on a local path and reports any disagreement.
    `expect_container` is the container_format it was declared with (Glance's words: bare, ova,
    ovf, compressed); content that is another is the finding `image.container_mismatch`.
    `guest` reads the guest's own volumes and filesystems through the format's guest view (the
    Report's `guest`, and os_type, os_distro... in its properties), within `guest_budget` (its own,
    `GUEST_BUDGET` by default), separate from the header pass's `budget`.
    """
    if expect is not None and canonical_name(expect) not in BY_NAME:
        raise UsageError(f"unknown format {expect!r}; known: {', '.join(sorted(BY_NAME))}")
    byte_source = _source_of(source)
    try:
        reader = Reader(byte_source, budget)
        path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
        if path is not None and is_url(path):
            path = None  # qemu-img gets local files only
        report = _inspect(
            reader,
            name=name or byte_source.name,
            expect=canonical_name(expect) if expect else None,
            policy=policy or DEFAULT_POLICY,
            cross_check_path=(path or NOT_LOCAL) if cross_check else None,
            guest_budget=(guest_budget or GUEST_BUDGET) if guest else None,
        )
    finally:
        if byte_source is not source:
            byte_source.close()  # ours to close; a caller's ByteSource or open file is theirs
    return (
        report
        if expect_container is None
        else _check_container(report, expect_container, policy or DEFAULT_POLICY)
    )


#: Glance's container_format words -> the container_format values of content that satisfies them
#: (Glance's `compressed` is any compression wrapper; an OVF package may be declared `ovf`). Words
#: Glance keeps for other clouds' kernels and ramdisks (aki, ari, ami) and `docker` are not checked.
CONTAINER_SATISFIED_BY = {
    "bare": frozenset({"bare"}),
    "ova": frozenset({"ova"}),
    "ovf": frozenset({"ovf", "ova"}),
    "compressed": frozenset({"gzip", "xz", "zstd", "bz2"}),
}

#: The content's container_format -> Glance's word for it (a plain tar has none).
GLANCE_CONTAINER_WORD = {
    "bare": "bare",
    "ova": "ova",
    "ovf": "ovf",
    **dict.fromkeys(("gzip", "xz", "zstd", "bz2"), "compressed"),
}


def _check_container(report: Report, declared: str, policy: Policy) -> Report:
    """The declared container_format against the content's: a mismatch is a finding, never a rewrite."""
    allowed = CONTAINER_SATISFIED_BY.get(declared.strip().lower())
    if (
        allowed is None
        or report.container_format in allowed
        or (report.format is None and report.container is None)
    ):
        return report
    word = GLANCE_CONTAINER_WORD.get(report.container_format)
    found = report.container_format + (f" holding {report.format}" if report.format else "")
    finding = CONTAINER_MISMATCH.finding(
        f"declared as container_format={declared} but the content is {found}: "
        + (f"set container_format={word}" if word else "upload the disk image itself")
        + ", or upload what was declared"
    )
    findings = [*report.findings, *policy.apply([finding])]
    return report.model_copy(
        update={
            "findings": findings,
            "verdict": policy.verdict(findings, parsed=report.verdict != Verdict.ERROR),
        }
    )


def _source_of(source: Source) -> ByteSource:
    """The ByteSource to read `source` through (a plain function, not a context manager: a
    generator's set-up and tear-down cost more than a small image's parse)."""
    if isinstance(source, ByteSource):
        return source
    if isinstance(source, str) and is_url(source):
        return HttpSource(source)
    if isinstance(source, str | os.PathLike):
        return FileSource(source)
    return OpenFileSource(source)


def _inspect(
    reader: Reader,
    *,
    name: str,
    expect: str | None,
    policy: Policy,
    cross_check_path: str | None,
    guest_budget: Budget | None,
    depth: int = 0,
) -> Report:
    if reader.size == 0:
        # Its own outcome: nothing to parse, and nothing wrong with a parser either; the finding
        # (image.empty) decides the verdict as any other does (rejected, unless a policy says not).
        empty = policy.apply(
            [
                EMPTY.finding(
                    "the file is empty: nothing was uploaded; upload the image again and check its size"
                )
            ]
        )
        return Report(
            source=name,
            format=None,
            size=0,
            virtual_size=None,
            verdict=policy.verdict(empty, parsed=True),
            findings=empty,
            properties={},
            details=None,
            bytes_read=0,
            reads=0,
        )
    head = Head(reader.head(), reader.tail(), reader.size)
    for container in containers.sniff_all(head.data):
        opened = _inspect_container(
            reader, container, name=name, expect=expect, policy=policy, guest_budget=guest_budget, depth=depth
        )
        if opened is not None:
            return opened
    detection = detect(head)
    fmt = detection.format
    findings: list[Finding] = []
    if expect is not None and not satisfies(expect, fmt.name):
        findings.append(FORMAT_MISMATCH.finding(_mismatch_message(expect, fmt)))
    inspection = _parse(fmt, reader, policy, findings)
    polyglot = detection.polyglot_names(inspection.details if inspection else None)
    if polyglot:
        findings.insert(
            0,
            POLYGLOT.finding(
                f"the file carries the signatures of several formats ({', '.join(polyglot)}); a polyglot can "
                "be read one way by the checker and another by the hypervisor: rebuild the image with one tool"
            ),
        )
    if inspection is not None:
        findings.extend(_size_findings(inspection.virtual_size, policy))
    named_files = [f.code for f in findings if f.code in RULES and RULES[f.code].names_files]
    findings = policy.apply(findings)
    guest = None
    # The guest pass reads images the header pass accepted: a rejected image's findings already
    # say what to fix (a backing file, a cut file, an unknown feature), and its guest would go
    # unused, as the image does; report-only and demoted rules let it run.
    if (
        inspection is not None
        and guest_budget is not None
        and policy.verdict(findings, parsed=True) == Verdict.OK
    ):
        guest = _inspect_guest(fmt, inspection, reader, guest_budget)
        # One finding per cause: what the header pass said of the partition table is not repeated.
        said = {finding.code for finding in findings}
        findings.extend(policy.apply(f for f in guest.findings if f.code not in said) if guest else ())
    if inspection is not None and cross_check_path is not None:
        findings.extend(policy.apply(_cross_check(cross_check_path, fmt, inspection, named_files)))
    parsed = inspection is not None
    return Report(
        source=name,
        format=fmt.name,
        size=reader.size,
        virtual_size=inspection.virtual_size if inspection else None,
        verdict=policy.verdict(findings, parsed=parsed),
        findings=findings,
        properties=props.merge(
            ("format", props.format_layer(fmt, inspection.details)),
            ("guest", _guest_properties(guest.details, policy) if guest else {}),
        ).values
        if inspection
        else {},
        details=inspection.details if inspection else None,
        bytes_read=reader.bytes_read,
        reads=reader.reads,
        guest=guest.details if guest else None,
    )


def _inspect_guest(
    fmt: Format[Any], inspection: Inspection[Any], reader: Reader, budget: Budget
) -> GuestInspection | None:
    """The guest pass, through its own metered Reader over the same source (its own budget and
    counts): None when the format has no guest view. A guest fact alone never makes the image's
    verdict an error: whatever the pass meets is a `guest.*` finding."""
    if fmt.guest is None:
        return None
    # Imported when first needed: the filesystems' modules cost a command that inspects nothing
    # (`introspect images list`) a third of its start-up.
    from introspect.guest.inspection import GuestInspection, inspect_guest

    guest_reader = Reader(reader.source.unmetered(), budget)
    nothing = GuestDetails(max_bytes=budget.max_bytes, max_reads=budget.max_reads)
    try:
        view = fmt.guest(guest_reader, inspection.details)
        if view is None:
            return None
        guest = inspect_guest(view, guest_reader)
    except (OSError, SourceError):
        raise  # the source failed, not the image: the caller decides (retry)
    except BytesNotKept as error:
        return GuestInspection(nothing, [GUEST_PARTIAL.finding(str(error))])
    except ImageError as error:  # the opener's: why this image's guest cannot be read
        rule = error.rule if error.rule.code.startswith("guest.") else GUEST_UNREADABLE
        return GuestInspection(nothing, [rule.finding(str(error))])
    except Exception as error:
        return GuestInspection(
            nothing,
            [
                GUEST_INTERNAL_ERROR.finding(
                    f"introspect failed reading this {fmt.name} image's guest ({type(error).__name__}: {error}); "
                    "the header facts stand; please report it with the file"
                )
            ],
        )
    if not fmt.holds_disk_at_zero(inspection.details):
        guest.findings = [_inside(finding, fmt) for finding in guest.findings]
    return guest


def _guest_properties(details: GuestDetails, policy: Policy) -> dict[str, str]:
    from introspect.guest.inspection import properties

    return properties(details, policy)


def _inspect_container(
    reader: Reader,
    container: Container,
    *,
    name: str,
    expect: str | None,
    policy: Policy,
    guest_budget: Budget | None,
    depth: int,
) -> Report | None:
    """An image inside a container: inspect its boot member (one level deeper), report the
    container as container_format. A member whose end is unknown (a compressed stream decompressed
    only as far as a head) leaves unknown what needs that end (a raw disk's size, a fixed VHD's
    footer), and the container's `partial` finding says so. None: the container declined the file
    (a tar that is not an OVA), which is then inspected as an image."""

    def unopened(findings: list[Finding], details: Any = None) -> Report:
        return Report(
            source=name,
            format=None,
            container_format=container.name,
            size=reader.size,
            virtual_size=None,
            verdict=Verdict.ERROR,
            findings=policy.apply(findings),
            properties={},
            details=None,
            bytes_read=reader.bytes_read,
            reads=reader.reads,
            container=details,
        )

    if depth >= MAX_CONTAINER_DEPTH:
        return unopened(
            [
                DEPTH.finding(
                    f"a {container.name} container inside {depth} others: introspect opens containers at "
                    f"most {MAX_CONTAINER_DEPTH} deep; unwrap the image and upload the image itself"
                )
            ]
        )
    try:
        unpacked = container.open(reader, policy)
    except ImageError as error:
        return unopened([error.rule.finding(str(error))])
    except (OSError, SourceError):
        raise  # the source failed, not the image: the caller decides (retry)
    except Exception as error:
        return unopened(
            [
                INTERNAL_ERROR.finding(
                    f"introspect failed on this {container.name} container ({type(error).__name__}: "
                    f"{error}); please report it with the file"
                )
            ]
        )
    if unpacked is None:
        return None
    member = unpacked.boot_member
    if member is None:
        return unopened(list(unpacked.findings), unpacked.details)
    findings = list(unpacked.findings)
    if member.complete:
        inner = member.source
    else:  # only a compression wrapper has members it cannot reach the end of
        from introspect.containers.compressed import EndUnknown

        inner = EndUnknown(member.source)
    report = _inspect(
        Reader(inner),
        name=name,
        expect=expect,
        policy=policy,
        cross_check_path=None,
        guest_budget=guest_budget,
        depth=depth + 1,
    )
    members: list[Report] = []
    if container.multi:
        # Every disk of an archive, each in place through the archive's reader (one budget).
        for other in unpacked.members:
            if other is member:
                members.append(report.model_copy(update={"source": other.name}))
                continue
            members.append(
                _inspect(
                    Reader(other.source),
                    name=other.name,
                    expect=None,
                    policy=policy,
                    cross_check_path=None,
                    guest_budget=guest_budget,
                    depth=depth + 1,
                )
            )
            if members[-1].verdict != Verdict.OK:
                codes = ", ".join(f.code for f in members[-1].findings if f.severity == Severity.REJECT)
                findings.append(
                    MEMBER.finding(
                        f"the disk {other.name!r} of this {container.name} is {members[-1].verdict} ({codes or 'no code'}): "
                        "the VM needs every disk; see its Report in `members`"
                    )
                )
        if container.check is not None:
            findings.extend(container.check(unpacked, members))
    virtual_size = report.virtual_size
    if not member.complete:
        # The image goes on past what could be read: parsers believed in an end they cannot
        # see, so that tables declared past the head are not "truncated"; a read that needed
        # them is reported as what it is, a partial inspection.
        # A raw disk's size is the file's, unknown here, unless a container inside stated it (a
        # tar header's size: a gzip-compressed tar holding disk.raw).
        sized_by_file = report.format in SIZED_BY_FILE and report.container_format == "bare"
        virtual_size = None if sized_by_file else report.virtual_size
        needed_more = [f for f in report.findings if f.code == TRUNCATED.code]
        unknowable = {TRUNCATED.code} | ({VIRTUAL_SIZE_LIMIT.code} if sized_by_file else set())
        report = report.model_copy(
            update={"findings": [f for f in report.findings if f.code not in unknowable]}
        )
        findings.append(container.partial(member, needed_more[0].message if needed_more else None))

    # A question the boot disk's header left open and the container answers is no longer asked
    # (qemu-img's default ide adapter, when the OVF states the controller): the member's own
    # Report, in `members`, still says it.
    def settled(finding: Finding) -> bool:
        about = RULES[finding.code].about if finding.code in RULES else frozenset()
        return bool(about) and about <= unpacked.replaces

    all_findings = [*(f for f in report.findings if not settled(f)), *policy.apply(findings)]
    properties = report.properties
    if report.format is not None:
        properties = props.merge(
            ("format", {k: v for k, v in report.properties.items() if k not in unpacked.replaces}),
            ("container", {**unpacked.properties, "introspect_container_format": container.name}),
            # What the guest's own files say outranks what an exporter declared of them.
            ("guest", _guest_properties(report.guest, policy) if report.guest else {}),
        ).values
    return report.model_copy(
        update={
            "container_format": container.name,
            "size": reader.size,
            "virtual_size": virtual_size,
            "findings": all_findings,
            "verdict": policy.verdict(all_findings, parsed=report.verdict != Verdict.ERROR),
            "properties": properties,
            "bytes_read": reader.bytes_read,
            "reads": reader.reads,
            # A container in a container (an OVA or a tar in gzip): the inner one's facts, kept.
            "container": unpacked.details if unpacked.details is not None else report.container,
            "members": members or report.members,
        }
    )


def _inside(finding: Finding, fmt: Format[Any]) -> Finding:
    """Partition table advice (`sgdisk -e`...) read through a format's mapping is for the disk
    inside the image, never the image file, which a partitioning tool would corrupt."""
    if not finding.code.startswith(("gpt.", "mbr.")):
        return finding
    raw = f"`qemu-img convert -O raw` makes of this {fmt.name} image" if fmt.qemu_name else "the image's disk"
    return finding.model_copy(
        update={
            "message": f"{finding.message} (on the disk inside the image: inside the guest, or on the raw disk "
            f"{raw}; never on the {fmt.name} file itself)"
        }
    )


def _parse(
    fmt: Format[Any], reader: Reader, policy: Policy, findings: list[Finding]
) -> Inspection[Any] | None:
    """Parse and check; a bad image becomes findings and None, never an exception."""
    try:
        inspection = fmt.inspect(reader, policy)
        findings.extend(inspection.findings)
        for check in fmt.checks or ():
            findings.extend(check(inspection.details, policy))
    except ImageError as error:
        findings.append(error.rule.finding(str(error)))
        return None
    except (OSError, SourceError):
        raise  # the source failed (disk, network), not the image: the caller decides (retry)
    except Exception as error:
        findings.append(
            INTERNAL_ERROR.finding(
                f"introspect failed on this {fmt.name} image ({type(error).__name__}: {error}); "
                "please report it with the file"
            )
        )
        return None
    return inspection


def _cross_check(
    path: str, fmt: Format[Any], inspection: Inspection[Any], named_files: list[str]
) -> list[Finding]:
    """qemu-img's opinion, asked only when the image names no file outside itself: qemu-img would
    open the very backing files, data files and extents we refuse. `named_files` are the codes of
    the rules that fired and say so (`Rule.names_files`), whatever severity a policy gave them."""
    if fmt.qemu_name is None:
        return [QEMU_SKIPPED.finding(f"not cross-checked: qemu-img cannot read {fmt.name} images")]
    if path is NOT_LOCAL:
        return [QEMU_SKIPPED.finding("not cross-checked: qemu-img is given local files only")]
    if named_files:
        return [
            QEMU_SKIPPED.finding(
                f"not cross-checked: the image names files outside itself ({', '.join(named_files)}), "
                "which qemu-img would open"
            )
        ]
    from introspect import qemu  # (here: only --cross-check runs qemu-img)

    return qemu.cross_check(path, fmt.qemu_name, inspection.virtual_size)


#: Glance's disk_format words (glance-api.conf [image_format] disk_formats, by default; ploop since
#: Glance commit ab7152e). An operator may configure more; the advice speaks of these defaults.
GLANCE_DISK_FORMATS = frozenset(
    {"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"}
)
#: The -O names `qemu-img convert` writes (qemu 7.2 `qemu-img --help`, "Supported formats", less the
#: protocol-like and read-only ones); ISO, DMG, cloop and bochs are read, never written, by qemu.
QEMU_WRITES = frozenset({"raw", "qcow2", "qcow", "qed", "vmdk", "vpc", "vhdx", "vdi", "parallels", "luks"})


def _mismatch_message(expect: str, found: Format[Any]) -> str:
    """What to do when the declared disk_format is not the content's: declare what it is (when
    Glance has a word for it), or convert to what was declared, with the name qemu-img writes it by
    (`vpc`, not `vhd`); an ISO is mastered, never converted to."""
    declared = BY_NAME[expect].load()
    message = f"declared as {expect} but the content is {found.name}"
    if found.name == "luks" and expect == "raw":
        return (
            f"{message}: the image is LUKS-encrypted, which Glance's default disk_formats do not name and no hypervisor "
            "boots from without its key; if it is an encrypted volume image, keep disk_format=raw and give it "
            "the key Cinder needs (cinder_encryption_key_id), else open it with `cryptsetup open` and upload "
            "`qemu-img convert -O qcow2` of the opened device"
        )
    convert = (
        f"convert with `qemu-img convert -O {declared.qemu_name}`"
        if declared.qemu_name in QEMU_WRITES and declared.name != "iso"
        else None
    )
    if found.name not in GLANCE_DISK_FORMATS:
        fix = f"Glance's default disk_formats have no {found.name}"
        return f"{message}: {fix}; {convert}" if convert else f"{message}: {fix}"
    fix = f"set disk_format={found.name}"
    if declared.name == "iso":
        return f"{message}: {fix} (an ISO is made by a mastering tool such as xorriso, never converted to)"
    return f"{message}: {fix}, or {convert}" if convert else f"{message}: {fix}"


def _size_findings(virtual_size: int | None, policy: Policy) -> Iterator[Finding]:
    if virtual_size == 0:
        yield VIRTUAL_SIZE_ZERO.finding(
            "the image declares a virtual size of 0 bytes: nothing can boot from it"
        )
    elif virtual_size is not None and virtual_size > policy.max_virtual_size:
        yield VIRTUAL_SIZE_LIMIT.finding(
            f"the virtual size {virtual_size} bytes is beyond the policy's limit of "
            f"{policy.max_virtual_size} bytes"
        )
