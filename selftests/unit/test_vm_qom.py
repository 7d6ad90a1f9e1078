"""Reading QEMU's QOM answers, and the param that adds QEMU arguments to a row."""

from __future__ import annotations

from avocado_iofuzz.vm.qom import child_types, missing_devices, parse_device_list, peripheral_types
from avocado_iofuzz.vt.iofuzz_test import append_extra_qemu_args

# the shape of QEMU 7.2's qom-list answer for /machine/peripheral-anon
PERIPHERAL_ANON = [
    {"name": "type", "type": "string"},
    {"name": "device[0]", "type": "child<intel-hda>"},
    {"name": "device[1]", "type": "child<hda-duplex>"},
]


def test_child_types_are_the_devices_not_the_properties():
    assert child_types(PERIPHERAL_ANON) == ["intel-hda", "hda-duplex"]


def test_peripheral_types_covers_devices_with_and_without_an_id():
    answers = {
        "/machine/peripheral-anon": PERIPHERAL_ANON,
        "/machine/peripheral": [{"name": "bmc", "type": "child<ipmi-bmc-sim>"}],
    }
    assert peripheral_types(lambda command, args: answers[args["path"]]) == ["hda-duplex", "intel-hda", "ipmi-bmc-sim"]


def test_missing_devices_counts_each_required_device_once():
    assert missing_devices(["e1000"], ["pci-testdev"]) == ["e1000"]
    assert missing_devices(["e1000", "e1000"], ["e1000"]) == ["e1000"]
    assert missing_devices(parse_device_list("intel-hda hda-duplex"), ["hda-duplex", "intel-hda", "VGA"]) == []
    assert parse_device_list(" gus, adlib ") == ["gus", "adlib"] and parse_device_list("") == []


def test_extra_qemu_args_come_after_the_rows_own():
    params = {"extra_params": " -device ne2k_isa", "iofuzz_extra_qemu_args": "-device pci-testdev"}
    append_extra_qemu_args(params)
    assert params["extra_params"] == "-device ne2k_isa -device pci-testdev"
    untouched = {"extra_params": "-device edu", "iofuzz_extra_qemu_args": ""}
    append_extra_qemu_args(untouched)
    assert untouched["extra_params"] == "-device edu"
