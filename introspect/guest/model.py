"""What the guest pass reports (the Report's `guest`): the volumes it found, the operating
systems on them, the EFI loaders, and what each fact was read from."""

from __future__ import annotations

from pydantic import Field

from introspect.model import Frozen


class Volume(Frozen):
    """A partition, a logical volume or the whole disk, named as the guest's kernel (and
    libguestfs) would name it on its first disk: /dev/sda, /dev/sda1, /dev/VG/LV."""

    device: str
    start: int = Field(description="byte offset on the guest's disk (an LV: of its first segment)")
    size: int
    partition_type: str | None = Field(
        None, description="the GPT type's name or GUID, the MBR type byte in hex"
    )
    filesystem: str | None = Field(
        None, description="as blkid names it: ext4, xfs, btrfs, vfat, ntfs, iso9660, swap, LVM2_member..."
    )
    label: str | None = None
    uuid: str | None = None
    note: str | None = Field(None, description="why its content was not read, when it was not")


class Source(Frozen):
    """Where a fact was read: the volume's device, its filesystem and the file's path in it."""

    device: str
    filesystem: str
    path: str


class OperatingSystem(Frozen):
    """One installed operating system (a root filesystem), or the one an installer ISO installs."""

    device: str = Field(description="the root filesystem's volume")
    filesystem: str
    os_type: str = Field(description="linux or windows (Nova's os_type)")
    os_id: str | None = Field(None, description="os-release ID as the image states it; windows")
    distro: str | None = Field(None, description="Glance's os_distro word for it, when Glance has one")
    version: str | None = Field(None, description="os-release VERSION_ID; Windows major.minor")
    name: str | None = Field(None, description="PRETTY_NAME; Windows ProductName")
    build: str | None = Field(None, description="Windows CurrentBuild")
    edition: str | None = Field(None, description="Windows EditionID")
    installation_type: str | None = Field(
        None, description="Windows InstallationType: Client, Server or Server Core (tells win10 from win2k16)"
    )
    architecture: str | None = Field(None, description="from the ELF or PE header of a system binary")
    osinfo: str | None = Field(None, description="libosinfo's short id (virt-inspector's)")
    kernels: list[str] = Field(default_factory=list)
    qemu_guest_agent: bool = False
    cloud_init: bool = False
    virtio_drivers: list[str] = Field(
        default_factory=list, description="Windows: viostor, vioscsi, netkvm... installed"
    )
    installer: bool = Field(False, description="an installer's media (an ISO), not an installed system")
    sources: dict[str, Source] = Field(default_factory=dict, description="each fact -> where it was read")


class Loader(Frozen):
    """An EFI executable on an EFI System Partition."""

    device: str
    path: str
    architecture: str | None = Field(None, description="from its PE header: x86_64, i686, aarch64...")
    shim: bool = Field(False, description="shim, the first stage that makes Secure Boot possible")


class GuestDetails(Frozen):
    """The guest pass's facts, and what it cost."""

    volumes: list[Volume] = Field(default_factory=list)
    systems: list[OperatingSystem] = Field(default_factory=list)
    loaders: list[Loader] = Field(default_factory=list)
    firmware: str | None = Field(
        None,
        description="uefi, bios or hybrid, from the partition table, the ESP's loaders and the boot code",
    )
    firmware_evidence: list[str] = Field(default_factory=list)
    bytes_read: int = 0
    reads: int = 0
    max_bytes: int = Field(description="the guest budget")
    max_reads: int
