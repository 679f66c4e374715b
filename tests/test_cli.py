"""The `introspect` command as a user runs it: a real process, exit codes, JSON lines, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from introspect.cli import main
from introspect.safety import RULES
from tests.conftest import fixture_group
from tests.tools import qemu_info
from tests.workers.httpserver import serve
from tests.workers.services import process_env

INTROSPECT = str(Path(sys.executable).with_name("introspect"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command, running this checkout's code (the venv's may be another checkout's)."""
    return subprocess.run([INTROSPECT, *args], capture_output=True, text=True, timeout=120, env=process_env())


def qcow2(tmp_path, name="disk.qcow2", size="1G", *options):
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), size], check=True)
    return path


def test_json_lines_one_per_image_and_exit_0(tmp_path):
    a, b = qcow2(tmp_path, "a.qcow2", "1G"), qcow2(tmp_path, "b.qcow2", "2G")
    result = run("inspect", "--json", str(a), str(b))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["source"], r["virtual_size"]) for r in lines] == [(str(a), 1 << 30), (str(b), 2 << 30)]
    assert result.stderr == ""


def test_rows_for_scripts_pick_the_reports_fields(tmp_path):
    a, b = (
        qcow2(tmp_path, "a.qcow2", "1G"),
        qcow2(tmp_path, "b.qcow2", "2G", "-b", "/etc/passwd", "-F", "raw"),
    )

    def inspect(*args: str) -> str:
        result = CliRunner().invoke(main, ["inspect", "--no-guest", *args, str(a), str(b)])
        assert result.exit_code == 1, result.output  # b is rejected
        return result.stdout

    assert inspect("-f", "value", "-c", "virtual_size", "-c", "verdict").splitlines() == [
        f"{1 << 30} ok",
        f"{2 << 30} rejected",
    ]
    rows = list(csv.reader(io.StringIO(inspect("-f", "csv"))))
    assert rows == [
        ["source", "format", "container_format", "virtual_size", "verdict"],
        [str(a), "qcow2", "bare", str(1 << 30), "ok"],
        [str(b), "qcow2", "bare", str(2 << 30), "rejected"],
    ]
    picked = [json.loads(line) for line in inspect("-f", "json", "-c", "findings").splitlines()]
    assert picked[0] == {"findings": []} and picked[1]["findings"][0]["code"] == "qcow2.backing_file"
    assert [json.loads(line) for line in inspect("--json").splitlines()] == [
        json.loads(line) for line in inspect("-f", "json").splitlines()
    ]  # the whole Report


def test_a_directory_is_walked(tmp_path):
    qcow2(tmp_path, "a.qcow2")
    (tmp_path / "sub").mkdir()
    qcow2(tmp_path / "sub", "b.qcow2")
    result = run("inspect", "--json", str(tmp_path))
    assert [Path(json.loads(line)["source"]).name for line in result.stdout.splitlines()] == [
        "a.qcow2",
        "b.qcow2",
    ]


def test_rejected_image_exits_1_and_the_table_names_the_rule(tmp_path):
    base = qcow2(tmp_path, "base.qcow2")
    child = qcow2(tmp_path, "child.qcow2", "1G", "-b", str(base), "-F", "qcow2")
    result = run("inspect", str(base), str(child))
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith(str(child)))
    assert "rejected" in row and "qcow2.backing_file" in row


def test_piped_rows_are_one_line_each_with_the_longest_vmware_words(tmp_path):
    """An OVF with the LSI SAS controller and BIOS firmware beside a qemu-img VMDK: the longest
    "vmware / firmware" cell; into a pipe each image is one line that grep can find whole."""
    path = tmp_path / "stream.vmdk"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic",
         str(path), "1G"],
        check=True,
    )  # fmt: skip
    result = run("inspect", str(path), str(fixture_group("ova") / "vmware-lsisas.ova"))
    assert result.returncode == 0, result.stderr
    header, first, second = result.stdout.splitlines()
    assert header.startswith("image ")
    assert "streamOptimized, lsiLogic " in first
    assert "streamOptimized, lsiLogicsas, bios " in second and second.startswith(str(fixture_group("ova")))


def test_piped_rows_stay_one_line_whatever_the_path_and_line_up(tmp_path):
    """A path longer than any terminal: into a pipe its row is still one line, the columns line up
    under the header, and no line ends in spaces."""
    deep = tmp_path / ("d" * 200) / ("e" * 150)
    deep.mkdir(parents=True)
    long, short = qcow2(deep, "long.qcow2", "1G"), qcow2(tmp_path, "short.qcow2", "2G")
    result = run("inspect", str(long), str(short))
    assert result.returncode == 0, result.stderr
    header, first, second = result.stdout.splitlines()
    assert first.startswith(f"{long}  ") and second.startswith(f"{short}  ")
    column = header.index("format")
    assert column == len(str(long)) + 2
    assert first[column:].split()[:5] == ["qcow2", "1.0", "GiB", "ok", "none"]
    assert second[column:].split()[:5] == ["qcow2", "2.0", "GiB", "ok", "none"]
    assert all(line == line.rstrip() for line in result.stdout.splitlines())


@pytest.mark.parametrize("width", [80, 200])
def test_rows_in_a_terminal_are_rich_tables_that_fit_it(tmp_path, width):
    """In a terminal (a pseudo-terminal here) rows are rich tables: the header in bold, the verdict
    in its colour. In 80 columns, too, every line fits the terminal, the short cells and headers
    are whole words, and the long ones wrap inside their columns."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    deep = tmp_path / ("long-directory-name-" * 3)
    deep.mkdir()
    image = qcow2(deep)
    base = qcow2(tmp_path, "base.qcow2")
    child = qcow2(tmp_path, "child.qcow2", "1G", "-b", str(base), "-F", "qcow2")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, width, 0, 0))
    env = {k: v for k, v in process_env().items() if k not in ("NO_COLOR", "COLUMNS", "TERM")}
    with subprocess.Popen([INTROSPECT, "inspect", str(image), str(child)], stdout=terminal,
                          stderr=subprocess.PIPE, env={**env, "TERM": "xterm-256color"}) as process:  # fmt: skip
        os.close(terminal)
        output = b""
        while chunk := _read_pty(controller):
            output += chunk
        assert process.wait(timeout=60) == 1, process.stderr.read() if process.stderr else ""
    os.close(controller)
    text = output.decode()
    assert "\x1b[1m" in text  # the header, bold
    assert "\x1b[32mok" in text and "\x1b[31mrejected" in text  # the verdicts, green and red
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in text.replace("\r", "").split("\n")]
    assert all(len(line) <= width for line in lines)
    words = [line.split() for line in lines]
    assert any({"format", "verdict", "findings"} <= set(w) for w in words)
    assert any(w[1:4] == ["qcow2", "1.0", "GiB"] and w[4] == "ok" for w in words if len(w) > 4)
    assert any(w[1:5] == ["qcow2", "1.0", "GiB", "rejected"] for w in words if len(w) > 4)


def _read_pty(fd: int) -> bytes:
    """What the program wrote to its terminal, b"" once it closed it (Linux says EIO)."""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def test_verbose_prints_the_message(tmp_path):
    empty = tmp_path / "empty.img"
    empty.touch()
    result = run("inspect", "-v", str(empty))
    assert f"{empty}: reject image.empty: the file is empty: nothing was uploaded" in result.stdout
    assert result.returncode == 1


def test_missing_path_is_one_line_and_exit_2(tmp_path):
    good = qcow2(tmp_path)
    result = run("inspect", "--json", str(tmp_path / "nope.qcow2"), str(good))
    assert result.returncode == 2
    assert result.stderr == f"Error: {tmp_path / 'nope.qcow2'}: no such file\n"
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "--expect", "qcow3", "x"], "unknown format 'qcow3'"),
        (["inspect", "--severity", "qcow2.dirty=fatal", "x"], "expected CODE=reject|warn|info"),
        (["inspect"], "Missing argument 'PATHS...'"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_expect_and_severity_options(tmp_path):
    path = qcow2(tmp_path)
    assert run("inspect", "--expect", "raw", str(path)).returncode == 1
    demoted = run(
        "inspect", "--json", "--expect", "raw", "--severity", "image.format_mismatch=warn", str(path)
    )
    assert demoted.returncode == 0
    assert json.loads(demoted.stdout)["findings"][0]["severity"] == "warn"


def test_policy_file(tmp_path):
    base = qcow2(tmp_path, "base.qcow2")
    child = qcow2(tmp_path, "child.qcow2", "1G", "-b", str(base), "-F", "qcow2")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"severity": {"qcow2.backing_file": "info"}}))
    assert run("inspect", "--policy", str(policy), str(child)).returncode == 0
    policy.write_text("{not json")
    result = run("inspect", "--policy", str(policy), str(child))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # one file for every reader: the codes of the service's pipeline are known here too
    policy.write_text(json.dumps({"severity": {"pipeline.*": "warn", "qcow2.backing_file": "info"}}))
    assert CliRunner().invoke(main, ["inspect", "--policy", str(policy), str(child)]).exit_code == 0


@pytest.mark.qemu
def test_cross_check_from_the_command_line():
    image = fixture_group("vhd") / next(p.name for p in sorted(fixture_group("vhd").glob("*.vhd")))
    result = run("inspect", "--json", "--cross-check", str(image))
    report = json.loads(result.stdout)
    assert report["virtual_size"] == qemu_info(image)["virtual-size"]
    assert not [f for f in report["findings"] if f["code"].startswith("qemu.")]


def test_schema_is_the_reports_json_schema():
    result = run("schema")
    schema = json.loads(result.stdout)
    assert schema["title"] == "Report"
    assert {"format", "verdict", "findings", "properties", "details", "bytes_read", "reads"} <= schema[
        "properties"
    ].keys()


#: A pydantic plugin, as a distribution declares one (entry point group `pydantic`): loading it
#: leaves a mark.
MARKER_PLUGIN = """
import os, pathlib
pathlib.Path(os.environ["PLUGIN_MARK"]).write_text("loaded")


class Plugin:
    def new_schema_validator(self, schema, schema_type, path, kind, config, settings):
        return None, None, None


plugin = Plugin()
"""


@pytest.mark.parametrize(("setting", "loaded"), [(None, False), ("", True), ("other", True)])
def test_the_command_loads_no_pydantic_plugin_unless_told(tmp_path, setting, loaded):
    """A cold `introspect inspect --json` (its Report's serializer is built) does not scan every
    installed distribution for pydantic plugins; PYDANTIC_DISABLE_PLUGINS set by the user is kept
    ("" or a list of other names: this one loads)."""
    site = tmp_path / "site"
    (site / "marker_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "marker_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: marker-plugin\nVersion: 1.0\n"
    )
    (site / "marker_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[pydantic]\nmarker = marker_plugin:plugin\n"
    )
    (site / "marker_plugin.py").write_text(MARKER_PLUGIN)
    mark = tmp_path / "mark"
    env = process_env(PLUGIN_MARK=str(mark))
    env["PYTHONPATH"] += os.pathsep + str(site)
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    result = subprocess.run(
        [INTROSPECT, "inspect", "--json", str(qcow2(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert mark.exists() is loaded


def imported(tmp_path, *args: str) -> set[str]:
    """The modules an `introspect ARGS...` process had imported when it ended."""
    listing = tmp_path / "modules.txt"
    code = (
        "import sys\n"
        "from introspect.command import main\n"
        "sys.argv = ['introspect', *sys.argv[1:]]\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        f"open({str(listing)!r}, 'w').write(' '.join(sys.modules))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, timeout=120, env=process_env(), check=True
    )
    return set(listing.read_text().split())


def test_a_command_imports_what_it_uses_and_no_more(tmp_path):
    """Start-up is most of a single inspection: `--help` lists every command (the pipeline's too)
    from their declarations, without the formats, pydantic, rich or the pipeline's packages; JSON
    lines and rows into a pipe need no rich; a qcow2 needs no other format's libraries."""
    image = qcow2(tmp_path)
    helped = imported(tmp_path, "--help")
    heavy = {
        "pydantic",
        "rich",
        "introspect.formats",
        "introspect.inspector",
        "workers.cli",
        "celery",
        "sqlalchemy",
    }
    assert not helped & heavy
    assert "workers.commands" in helped  # the plugins' declarations were read
    as_json = imported(tmp_path, "inspect", "--json", str(image))
    assert "introspect.inspector" in as_json
    # the libraries of other formats' parsers (an OVF's XML, an installer's INI, VHDX's and
    # Btrfs's CRC-32C) and of raw files (libmagic) are loaded by the inspections that use them
    assert not as_json & {"rich", "magic", "defusedxml", "configparser", "google_crc32c", "workers.commands"}
    table = imported(tmp_path, "inspect", str(image))
    assert "rich" not in table  # rows into a pipe: plain lines
    # no model is validated on the way (output models are built unvalidated): no validator is built,
    # so pydantic's plugin loader and the importlib.metadata it imports are not loaded either
    assert not table & {"pydantic.plugin._loader", "importlib.metadata"}
    assert "rich" in imported(tmp_path, "inspect", "-c", "format", str(image))  # a table of -c columns


def test_rules_lists_every_code():
    result = run("rules")
    for code in ("image.polyglot", "qcow2.backing_file", "vmdk.extent_path", "gpt.header_crc"):
        assert code in result.stdout


def test_rules_lists_the_rules_of_modules_imported_later():
    """Rules are declared as their modules are imported, and the guest pass is imported only when
    an inspection needs it: a fresh `introspect rules` (and every policy reader) still knows every
    code that any module of the library declares."""
    every = (
        "import importlib, pkgutil, introspect\n"
        "from introspect.safety import RULES\n"
        "for module in pkgutil.walk_packages(introspect.__path__, 'introspect.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(' '.join(sorted(RULES)))\n"
    )
    declared = subprocess.run(
        [sys.executable, "-c", every], capture_output=True, text=True, check=True, env=process_env()
    ).stdout.split()
    assert "guest.volume_cut" in declared
    assert run("rules", "-f", "value", "-c", "code").stdout.split() == declared


def test_rules_for_scripts_in_every_format():
    def rules(*args: str) -> str:
        result = CliRunner().invoke(main, ["rules", *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    listed = [json.loads(line) for line in rules("-f", "json").splitlines()]
    assert [rule["code"] for rule in listed] == sorted(RULES)  # the pipeline's (pipeline.*) among them
    backing = RULES["qcow2.backing_file"]
    assert {
        "code": backing.code,
        "severity": "reject",
        "summary": backing.summary,
        "names_files": True,
    } in listed
    assert rules("--json") == rules("-f", "json")
    rows = list(csv.reader(io.StringIO(rules("-f", "csv", "-c", "code", "-c", "names_files"))))
    assert rows[0] == ["code", "names_files"] and ["qcow2.backing_file", "True"] in rows
    assert rules("-f", "value", "-c", "code").split() == sorted(RULES)
    table = rules()  # not a terminal: every summary whole, on one line
    assert all(rule.summary in table for rule in RULES.values()) and "…" not in table


def test_thousands_of_paths_in_one_process(tmp_path):
    image = qcow2(tmp_path)
    args = [str(image)] * 3000
    result = run("inspect", "--json", *args)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 3000


@pytest.mark.timeout(30)
def test_special_files_are_refused_one_line_each_and_nothing_hangs(tmp_path):
    """A FIFO blocks whoever opens it; in a list, or in a walked directory, it gets one line and
    the good files their rows."""
    good = qcow2(tmp_path, "good.qcow2")
    os.mkfifo(tmp_path / "pipe")
    result = run("inspect", "--json", str(tmp_path / "pipe"), str(good), str(tmp_path))
    assert result.returncode == 2
    assert [json.loads(line)["source"] for line in result.stdout.splitlines()] == [str(good), str(good)]
    refusal = f"Error: {tmp_path / 'pipe'}: is a FIFO (named pipe), not an image file"
    assert result.stderr.splitlines() == [refusal, refusal]


def test_an_empty_directory_is_said_to_be_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("inspect", str(tmp_path / "empty"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"Error: {tmp_path / 'empty'}: the directory holds no file to inspect\n"


@pytest.mark.timeout(60)
def test_each_report_is_printed_as_soon_as_it_is_done(tmp_path):
    """The first image's line arrives while the second, on a trickling server, is still read."""
    first = qcow2(tmp_path, "first.qcow2")
    qcow2(tmp_path, "slow.qcow2")
    with serve(tmp_path) as served:
        served.trickle = 0.05
        process = subprocess.Popen(
            [INTROSPECT, "inspect", "--json", str(first), served.url("slow.qcow2")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = process.stdout.readline()
            assert json.loads(line)["source"] == str(first)
            assert process.poll() is None, "the first line came only when everything was done"
        finally:
            process.kill()
            process.communicate()


def test_names_are_printed_literally_never_as_markup(tmp_path):
    evil = qcow2(tmp_path, "evil[bold]x[red].qcow2")
    result = run("inspect", str(evil))
    assert result.returncode == 0, result.stderr
    assert str(evil) in result.stdout


def test_control_characters_and_markup_from_an_image_are_shown_escaped(tmp_path):
    """A backing file name (recorded by qemu-img, never opened) with a clear-screen sequence, a
    right-to-left override and unbalanced markup: printed as escapes, and the run goes on."""
    backing = "\x1b[2J[/]evil\u202egnp.exe"
    child = tmp_path / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", str(child), "1G"],
        check=True,
    )
    result = run("inspect", "-v", str(child))
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "'\\x1b[2J[/]evil\\u202egnp.exe'" in result.stdout  # as repr() quotes it
