"""Which keys are introspect's: the marker and the comparison, case by case (pure code)."""

from __future__ import annotations

import json

import pytest

from workers.glance import ownership
from workers.glance.ownership import MARKER, Marker, desired, digest, plan, priority, writable


def image_with(ours: dict[str, str], **others: str) -> dict[str, str]:
    """An image where introspect wrote `ours` (marker included) and someone else set `others`."""
    marker = Marker(keys={key: digest(value) for key, value in ours.items()}, data="c", inspector="1")
    return {**ours, **others, MARKER: marker.dumps()}


def test_first_write_adds_everything() -> None:
    result = plan({}, {"a": "1", "b": "2"}, data="c", inspector="1")
    assert result.add == {"a": "1", "b": "2"} and not result.replace and not result.kept
    assert result.marker.keys == {"a": digest("1"), "b": digest("2")}


def test_our_unchanged_value_is_left_and_nothing_is_written() -> None:
    result = plan(image_with({"a": "1"}), {"a": "1"}, data="c", inspector="1")
    assert result.empty


def test_our_value_is_replaced_when_the_inspection_changes_it() -> None:
    result = plan(image_with({"a": "1"}), {"a": "2"}, data="c", inspector="1")
    assert result.replace == {"a": "2"}


def test_someone_elses_value_is_kept_and_leaves_the_marker() -> None:
    image = image_with({"a": "1", "b": "2"})
    image["a"] = "admin"
    result = plan(image, {"a": "1", "b": "2"}, data="c", inspector="1")
    assert result.kept == {"a": "admin"} and not result.replace
    assert set(result.marker.keys) == {"b"}
    # ...and stays theirs on the next run, even if they set our very value
    image[MARKER] = result.marker_for(now="t")
    image["a"] = "1"
    assert plan(image, {"a": "1", "b": "2"}, data="c", inspector="1").kept == {"a": "1"}


def test_a_removed_value_comes_back() -> None:
    image = image_with({"a": "1"})
    del image["a"]
    assert plan(image, {"a": "1"}, data="c", inspector="1").add == {"a": "1"}


def test_keys_no_longer_produced_are_removed_only_if_still_ours() -> None:
    image = image_with({"a": "1", "b": "2"})
    image["b"] = "admin"
    result = plan(image, {}, data="c", inspector="1")
    assert result.remove == ["a"] and result.kept == {"b": "admin"}


def test_without_a_readable_marker_every_present_key_is_someone_elses() -> None:
    for marker in (None, "not json", json.dumps({"v": 99, "keys": {}}), json.dumps([1])):
        image = {"a": "1"} if marker is None else {"a": "1", MARKER: marker}
        result = plan(image, {"a": "2", "b": "3"}, data="c", inspector="1")
        assert result.kept == {"a": "1"} and result.add == {"b": "3"}


def test_new_data_or_inspector_rewrites_the_marker_only() -> None:
    image = image_with({"a": "1"})
    assert plan(image, {"a": "1"}, data="other", inspector="1").marker_changed
    assert plan(image, {"a": "1"}, data="c", inspector="2").marker_changed
    ops = plan(image, {"a": "1"}, data="c", inspector="2").ops(adds=[], now="t")
    assert [op["path"] for op in ops] == [f"/{MARKER}"]


def test_marker_is_compact_and_round_trips() -> None:
    marker = Marker(keys={"b": "2", "a": "1"}, data="c", inspector="1", at="t")
    text = marker.dumps()
    assert " " not in text and text.index('"a"') < text.index('"b"')
    assert Marker.read({MARKER: text}) == marker


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("disk_format", "qcow2", "an image attribute"),
        ("virtual_size", "1", "an image attribute"),
        ("os_glance_import_task", "x", "reserved"),
        (MARKER, "{}", "reserved"),
        ("n", 1, "not a string"),
        ("a/b", "x", "not a usable property name"),
        ("k" * 256, "x", "not a usable property name"),
        ("big", "x" * 65536, "value longer than 65535"),
    ],
)
def test_never_written(key: str, value: object, reason: str) -> None:
    ok, refused = writable({key: value, "fine": "yes"})
    assert ok == {"fine": "yes"}
    assert reason in refused[key]


def test_quota_priority_puts_nova_names_first() -> None:
    keys = ["introspect_cluster_size", "introspect_verdict", "vmware_adaptertype", MARKER, "hw_disk_bus"]
    assert sorted(keys, key=priority) == [
        MARKER, "hw_disk_bus", "vmware_adaptertype", "introspect_verdict", "introspect_cluster_size",
    ]  # fmt: skip


def test_partial_ops_record_only_what_goes_in() -> None:
    result = plan({}, {"a": "1", "b": "2"}, data="c", inspector="1")
    ops = result.ops(adds=["a"], now="t")
    assert [op["path"] for op in ops] == ["/a", f"/{MARKER}"]
    assert set(Marker.read({MARKER: ops[-1]["value"]}).keys) == {"a"}  # type: ignore[union-attr]


def test_the_findings_cap_keeps_whole_codes():
    """Past the cap a code is left out, never cut: a half code names no rule."""
    codes = [f"qcow2.rule_{n:03d}" for n in range(200)]
    kept = desired({}, verdict="rejected", found_format="qcow2", found_virtual_size=1, codes=codes)[
        "introspect_findings"
    ]
    assert len(kept) <= ownership.MAX_FINDINGS_VALUE
    assert kept.split(",") == codes[: len(kept.split(","))]
    assert len(kept) + len(",qcow2.rule_000") > ownership.MAX_FINDINGS_VALUE
