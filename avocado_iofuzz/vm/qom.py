"""Which devices a running QEMU really has, asked over QMP through QOM.

A device row fuzzes the device its ``extra_params`` add. If that device is not
there (a user's ``--vt-extra-params extra_params=...`` replaced the row's), the
ranges it names are unclaimed and every op is absorbed: the run would PASS
having fuzzed nothing. Ports answering prove nothing, so QEMU is asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

# where QEMU puts every -device: without an id, and with one
PERIPHERAL_CONTAINERS = ("/machine/peripheral-anon", "/machine/peripheral")

# (command, arguments) -> the "return" value of a QMP command
QmpCall = Callable[[str, dict[str, Any]], Any]

_CHILD = re.compile(r"^child<(.+)>$")


def parse_device_list(text: str) -> list[str]:
    """The QOM type names of a row's ``iofuzz_devices`` param (space or comma separated)."""
    return [name for name in re.split(r"[\s,]+", text.strip()) if name]


def child_types(listing: Sequence[Mapping[str, Any]]) -> list[str]:
    """The types of the ``child<TYPE>`` properties in a ``qom-list`` answer."""
    types = []
    for prop in listing:
        match = _CHILD.match(str(prop.get("type", "")))
        if match:
            types.append(match.group(1))
    return types


def peripheral_types(qmp: QmpCall) -> list[str]:
    """QOM types of every device QEMU was given with -device (or device_add)."""
    types: list[str] = []
    for path in PERIPHERAL_CONTAINERS:
        types += child_types(qmp("qom-list", {"path": path}))
    return sorted(types)


def machine_type(qmp: QmpCall) -> str:
    """The machine's QOM type, e.g. ``pc-q35-7.2-machine``."""
    return str(qmp("qom-get", {"path": "/machine", "property": "type"}))


def missing_devices(required: Iterable[str], present: Iterable[str]) -> list[str]:
    """The names in ``required`` that ``present`` lacks (one present device per required name)."""
    left = list(present)
    missing = []
    for name in required:
        if name in left:
            left.remove(name)
        else:
            missing.append(name)
    return missing


def avocado_vt_qmp(monitor: Any) -> QmpCall:
    """A QmpCall on avocado-vt's QMP monitor (``vm.monitor``)."""
    return lambda command, arguments: monitor.cmd(command, arguments)
