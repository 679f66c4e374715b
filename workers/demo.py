"""`make demo`: the pipeline on the embedded defaults (SQLite catalog, local store, tasks run
inline: no broker, no services), driven through the real `introspect` command.

Shows: import -> properties -> admin override -> re-run -> override kept -> unset -> the
introspected value is back -> history -> the audit of declared vs found (`rerun --dry-run`).
Images: made here with sgdisk, mkfs.ext4 and qemu-img, a Linux disk among them (or, without them,
taken from a built fixtures/ directory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTROSPECT = str(Path(sys.executable).with_name("introspect"))
#: The Linux disk the demo makes (see `linux_disk`), and its size.
LINUX_DISK = "linux.qcow2"
LINUX_DISK_SIZE = 64 * 1024 * 1024
#: Where its one partition starts (sgdisk's default alignment), and its filesystem's size.
PARTITION_START = 1024 * 1024
FILESYSTEM_SIZE = 60 * 1024 * 1024
#: os-release(5): where this machine's is.
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
#: What qemu-img makes beside it: name -> `qemu-img create` arguments.
RECIPES: dict[str, list[str]] = {
    "appliance.vmdk": [
        "-f",
        "vmdk",
        "-o",
        "adapter_type=lsilogic,subformat=streamOptimized",
        "{path}",
        "129M",
    ],
    "legacy.vhd": ["-f", "vpc", "{path}", "7M"],
    "layered.qcow2": ["-f", "qcow2", "-b", LINUX_DISK, "-F", "qcow2", "{path}"],
}
#: Keys worth overriding in the demo, in order of preference (the first one the image has), and
#: the value an admin sets, unless it is the introspected one (then the key's next choice).
OVERRIDABLE: dict[str, tuple[str, str]] = {
    "hw_disk_bus": ("sata", "virtio"),
    "vmware_adaptertype": ("paraVirtual", "lsiLogic"),
    "hw_scsi_model": ("virtio-scsi", "lsilogic"),
    "vmware_disktype": ("preallocated", "sparse"),
    "hw_firmware_type": ("uefi", "bios"),
}


def admin_value(key: str, introspected: str | None) -> str:
    """What the demo's admin sets: a value Glance's metadefs accept (`images set` checks it) and
    that differs from what was found, so the override shows."""
    first, second = OVERRIDABLE.get(key, ("debian", "ubuntu"))
    return second if introspected == first else first


def linux_disk(path: Path) -> None:
    """A small GPT disk whose ext4 partition holds this machine's own os-release and shell (what
    the guest pass reads to name a Linux root), made as users make disks, with sgdisk and
    `mkfs.ext4 -d` (no mount, no root needed), and converted to qcow2 by qemu-img."""
    with tempfile.TemporaryDirectory(prefix="introspect-demo-disk-") as scratch:
        root = Path(scratch) / "root"
        (root / "etc").mkdir(parents=True)
        (root / "bin").mkdir()
        release = next(path for path in map(Path, OS_RELEASE) if path.exists())
        shutil.copyfile(release.resolve(), root / "etc" / "os-release")
        shutil.copyfile(Path("/bin/sh").resolve(), root / "bin" / "sh")
        filesystem, disk = Path(scratch) / "root.ext4", Path(scratch) / "disk.raw"
        for file, size in ((filesystem, FILESYSTEM_SIZE), (disk, LINUX_DISK_SIZE)):
            with file.open("wb") as made:
                made.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-L", "root", "-d", str(root), str(filesystem)], check=True)
        # (sgdisk -q writes nothing to a disk that has no table yet)
        subprocess.run(
            ["sgdisk", "-n", f"1:{PARTITION_START // 512}:0", "-t", "1:8300", str(disk)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with disk.open("r+b") as raw, filesystem.open("rb") as data:
            raw.seek(PARTITION_START)
            shutil.copyfileobj(data, raw)
        subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(disk), str(path)], check=True
        )


def images(directory: Path) -> list[Path]:
    """A Linux disk and a few ordinary images made here; without qemu-img, a few from fixtures/build."""
    if all(shutil.which(tool) is not None for tool in ("qemu-img", "sgdisk", "mkfs.ext4")):
        linux_disk(directory / LINUX_DISK)
        for name, recipe in RECIPES.items():
            args = [arg.format(path=directory / name) for arg in recipe]
            subprocess.run(["qemu-img", "create", "-q", *args], check=True, cwd=directory)
        return [directory / LINUX_DISK, *(directory / name for name in RECIPES)]
    built = sorted((ROOT / "fixtures" / "build").glob("*/*.qemu-img.json"))
    if not built:
        raise SystemExit("the demo needs qemu-img (Debian package qemu-utils) or a built fixtures/ directory")
    return [record.with_name(record.name.removesuffix(".qemu-img.json")) for record in built[:4]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", type=Path, help="Work in this directory and keep it (default: a temporary one)."
    )
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="introspect-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTROSPECT_")}
    env |= {"INTROSPECT_DATA_DIR": str(directory / "data"), "INTROSPECT_EAGER": "1", "COLUMNS": "160"}

    def introspect(*arguments: str, show: bool = True, exit_code: int = 0) -> str:
        if show:
            print(f"\n$ introspect {' '.join(arguments)}", flush=True)
        result = subprocess.run(
            [INTROSPECT, *arguments], env=env, capture_output=True, text=True, check=False
        )
        if show:
            sys.stdout.write(result.stdout)
            sys.stdout.write(result.stderr)
        if result.returncode != exit_code:
            raise SystemExit(
                f"demo failed: introspect {' '.join(arguments)} exited {result.returncode} (expected {exit_code})"
            )
        return result.stdout

    try:
        paths = images(directory)
        names = {path.name for path in paths}
        # layered.qcow2 names a backing file: rejected, so `import --wait` exits 1, as it says
        introspect("import", "--wait", *map(str, paths), exit_code=1 if "layered.qcow2" in names else 0)
        introspect("images", "list")
        records = [
            json.loads(line) for line in introspect("images", "list", "--json", show=False).splitlines()
        ]
        linux = next((record for record in records if record["name"] == LINUX_DISK), None)
        if linux is not None:
            print(
                f"\n# {LINUX_DISK}: what the guest pass read in its partition (os-release, /bin/sh's ELF header)"
            )
            introspect("images", "show", linux["id"])
        chosen = records[0]
        for record in records:
            shown = json.loads(introspect("images", "show", record["id"], "--json", show=False))
            if any(p["key"] in OVERRIDABLE for p in shown["properties"]):
                chosen = record
                break
        image_id = chosen["id"]
        props = {
            p["key"]: p
            for p in json.loads(introspect("images", "show", image_id, "--json", show=False))["properties"]
        }
        key = next((k for k in OVERRIDABLE if k in props), "os_distro")
        introspected = props[key]["value"] if key in props else None
        value = admin_value(key, introspected)
        print(f"\n# {chosen['name']}: an admin overrides {key} (introspected: {introspected})")
        also = () if key == "os_distro" else ("os_distro=debian",)
        introspect("images", "set", image_id, f"{key}={value}", *also)
        print("\n# re-run every image: the admin's values win, the introspected ones are refreshed")
        introspect("rerun", "--all")
        after = {
            p["key"]: p
            for p in json.loads(introspect("images", "show", image_id, "--json", show=False))["properties"]
        }
        assert after[key]["value"] == value and after[key]["source"] == "admin", after[key]
        introspect("images", "show", image_id)
        print(
            f"\n# override kept after the re-run: {key} = {after[key]['value']} (source {after[key]['source']})"
        )
        introspect("images", "unset", image_id, key)
        back = {
            p["key"]: p
            for p in json.loads(introspect("images", "show", image_id, "--json", show=False))["properties"]
        }
        if introspected is not None:
            assert back[key]["value"] == introspected and back[key]["source"] == "introspected", back[key]
            print(f"\n# unset: the introspected value is back: {key} = {back[key]['value']}")
        introspect("images", "history", image_id)
        introspect("rerun", "--all", "--dry-run")
        kept = (
            f"; catalog and store kept in {directory / 'data'}"
            if args.keep
            else " (--keep DIR keeps its catalog and store)"
        )
        print(f"\ndemo done{kept}")
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
