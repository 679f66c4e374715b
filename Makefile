# introspect: `make demo` shows the whole story on embedded defaults; `make test` runs everything.
# `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3.11
# Debian packages the fixtures, the cross-check and the tests need: tool -> package.
TOOLS := qemu-img:qemu-utils qemu-io:qemu-utils debugfs:e2fsprogs genisoimage:genisoimage isoinfo:genisoimage xorriso:xorriso \
	sgdisk:gdisk sfdisk:fdisk cryptsetup:cryptsetup-bin mkfs.vfat:dosfstools mkfs.ext4:e2fsprogs \
	zstd:zstd redis-server:redis-server rabbitmqctl:rabbitmq-server /usr/lib/ISOLINUX/isolinux.bin:isolinux \
	/usr/lib/x86_64-linux-gnu/libmagic.so.1:libmagic1 \
	/usr/lib/python3/dist-packages/VMDKstream.py:python3-vmdkstream bximage:bximage \
	create_compressed_fs:cloop-utils dmg2img:dmg2img xz:xz-utils bzip2:bzip2 file:file \
	/usr/lib/syslinux/mbr/mbr.bin:syslinux-common /usr/sbin/mariadbd:mariadb-server \
	mcopy:mtools mkntfs:ntfs-3g setfattr:attr \
	vhdiinfo:libvhdi-utils /usr/share/doc/python3-libvhdi:python3-libvhdi \
	mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs mmdebstrap:mmdebstrap jq:jq \
	readelf:binutils llvm-readobj:llvm hivexget:libhivex-bin hivexregedit:libwin-hivex-perl \
	haproxy:haproxy \
	/usr/share/osinfo/VERSION:osinfo-db lvm:lvm2
# The same, installed without their recommends: libguestfs (the guest fixtures' and bench-guest's
# reference inspection, the LVM fixtures' builder) and the kernel its appliance boots.
TOOLS_NO_RECOMMENDS := guestfish:libguestfs-tools /vmlinuz:linux-image-amd64
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: tools
tools: ## install the system tools (qemu-img, genisoimage, sgdisk, libguestfs...) that are missing
	@missing=""; for pair in $(TOOLS); do tool=$${pair%%:*}; pkg=$${pair##*:}; \
		if ! command -v $$tool >/dev/null 2>&1 && [ ! -e $$tool ]; then missing="$$missing $$pkg"; fi; done; \
	bare=""; for pair in $(TOOLS_NO_RECOMMENDS); do tool=$${pair%%:*}; pkg=$${pair##*:}; \
		if ! command -v $$tool >/dev/null 2>&1 && [ ! -e $$tool ]; then bare="$$bare $$pkg"; fi; done; \
	if [ -n "$$missing$$bare" ]; then apt-get update -qq; fi; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	if [ -n "$$bare" ]; then \
		echo "installing (without recommends):$$bare"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$bare >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	@# the distribution was called `introspect` before it took a free name on PyPI
	@$(PIP) uninstall -q -y introspect 2>/dev/null || true
	$(PIP) install -q -e '.[pipeline,glance,dev]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## create .venv and install introspect with its CLI at .venv/bin/introspect

.PHONY: glance-venv
glance-venv: venv ## build the cached Glance 33.0.0 venv the Glance tests run against (~/.cache/introspect)
	$(PY) -m tests.glance.peer venv

.PHONY: keystone-venv
keystone-venv: venv ## build the cached Keystone 30.0.0 venv and its bootstrapped state, for the keystone+TLS Glance tests
	$(PY) -m tests.glance.keystone venv

.PHONY: fixtures
fixtures: tools ## build fixtures/build/ with real tools (only what changed)
	fixtures/build.sh

.PHONY: lint
lint: venv ## ruff (rules and format) over everything, mypy --strict over introspect/ and workers/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: test
test: venv tools fixtures lint glance-venv keystone-venv ## the whole suite: lint, types, formats, pipeline, Glance
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: demo
demo: venv tools ## the main job on embedded defaults: no broker, SQLite, local store
	$(PY) -m workers.demo

.PHONY: bench
bench: venv tools fixtures glance-venv ## images/s, bytes read, cold start and µs per image: introspect vs qemu-img info vs oslo.utils; OVAs/s in place vs tar + qemu-img and Glance's ovf_process
	$(PIP) install -q 'oslo.utils>=7' cryptography
	$(PY) -m tests.bench.bench_inspect
	$(PY) -m tests.bench.bench_ova

.PHONY: bench-guest
bench-guest: venv tools ## guest inspection: introspect vs libguestfs (ms, reads, KiB, agreement); BENCH_ALL=1 times libguestfs on every image
	fixtures/build.sh guest guest-libguestfs
	$(PY) -m tests.bench.bench_guest_pass
	$(PY) -m tests.bench.bench_guest

.PHONY: bench-pipeline
bench-pipeline: venv tools ## images/s of the Celery pipeline against a no-op task
	$(PY) -m tests.bench.bench_pipeline

.PHONY: bench-glance
bench-glance: venv tools glance-venv ## bytes per image and images/s of a re-run against a real Glance
	$(PY) -m tests.bench.bench_glance

FUZZ_SECONDS ?= 600
.PHONY: fuzz
fuzz: venv tools fixtures ## coverage-guided fuzzing of inspect() (atheris, else our mutation engine); FUZZ_SECONDS=600
	$(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS)

.PHONY: clean
clean: ## remove the venv, built fixtures and caches
	rm -rf $(VENV) fixtures/build .fuzz .pytest_cache .mypy_cache .ruff_cache .hypothesis
