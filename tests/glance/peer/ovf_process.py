"""Glance's own OVA handling, run on given packages: what `glance.async_.flows.ovf_process` does
when an admin imports an OVA through Glance's (legacy) `import` task, minus the store.

Runs under the Glance venv's Python (`venv_dir() / "bin/python" -m tests.glance.peer.ovf_process
OVA...`, cwd the checkout): for each package, `OVAImageExtractor().extract(file)` (the tar's names
listed, the first `*.ovf` parsed for the disk its DiskSection names and for the
CIM_ProcessorAllocationSettingData properties that `ovf-metadata.json` lists), then the disk
copied out with `shutil.copyfileobj(disk, file, 4096)`, as `_OVF_Process.execute` does before the
copy replaces the package in the store. `ovf-metadata.json` is Glance's sample
(etc/ovf-metadata.json.sample: ProcessorArchitecture, InstructionSet, InstructionSetExtensionName).

Prints one JSON object per package: {"ova", "outcome": "extracted"|"refused", "bytes",
"properties", "error", "seconds"}; "refused" is whatever exception Glance's code raised, by type.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

#: etc/ovf-metadata.json.sample in openstack/glance.
SAMPLE_METADATA = {"cim_pasd": ["ProcessorArchitecture", "InstructionSet", "InstructionSetExtensionName"]}


def extract(path: Path, extractor_class: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"ova": path.name}
    try:
        with path.open("rb") as package:
            disk, properties = extractor_class().extract(package)
            with tempfile.TemporaryFile() as copy:
                shutil.copyfileobj(disk, copy, 4096)
                copied = copy.tell()
        result |= {"outcome": "extracted", "bytes": copied, "properties": properties}
    except Exception as error:  # what Glance's task would fail with, by type
        result |= {"outcome": "refused", "error": f"{type(error).__name__}: {error}"}
    result["seconds"] = time.perf_counter() - started
    return result


def main(paths: list[str]) -> None:
    warnings.simplefilter("ignore")  # eventlet's deprecation, imported with Glance
    from glance.async_.flows import ovf_process  # type: ignore[import-not-found]
    from oslo_config import cfg  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as config_dir:
        (Path(config_dir) / "ovf-metadata.json").write_text(json.dumps(SAMPLE_METADATA))
        cfg.CONF(["--config-dir", config_dir], project="glance", default_config_files=[])
        for path in paths:
            print(json.dumps(extract(Path(path), ovf_process.OVAImageExtractor)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
