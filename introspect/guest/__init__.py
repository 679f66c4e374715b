"""The guest layer: the operating system inside the image, read through the format's guest view.

    format's guest view (introspect.formats.*: `Format.guest`)
      -> Disk          one block cache over the view                   introspect/guest/disk.py
      -> volumes       MBR (extended/logical), GPT, LVM2 linear LVs    introspect/guest/volumes.py, lvm.py
      -> filesystems   ext2/3/4, XFS, Btrfs, FAT, NTFS, ISO 9660       introspect/guest/fs/
      -> facts         os-release, ELF and PE headers, registry hives, EFI loaders, installer media
                                                                       introspect/guest/linux.py, windows.py, esp.py, media.py
      -> GuestDetails and the guest's properties                       introspect/guest/inspection.py

Everything is read through the guest pass's own metered Reader and budget (default 4 MiB and 512
reads), separate from the header pass's. Nothing outside the image is ever opened; a guest fact
alone never rejects an image (every `guest.*` rule is info or warn unless a policy says otherwise).
"""
