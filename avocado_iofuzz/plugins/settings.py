"""The ``iofuzz`` section of avocado's settings: host-wide defaults of test params.

Each setting is registered with avocado's settings API (so ``avocado config``
lists it and ``avocado.conf`` can set it) and names the cartesian param it
feeds. The resolver copies a setting's value into every test whose cfg row
leaves that param unset, so the order of precedence, weakest first, is:

    registered default < avocado.conf ``[iofuzz]`` < cfg row < ``--vt-extra-params``

The values are checked where every other param is checked
(:class:`avocado_iofuzz.settings.IofuzzParams`), so a typo in avocado.conf
ends the test with an error naming the param, like a typo anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

SECTION = "iofuzz"


@dataclass(frozen=True)
class Setting:
    key: str  # under SECTION: `iofuzz.<key>` in avocado's config
    param: str  # the cartesian param it provides
    default: Any
    help_msg: str

    @property
    def namespace(self) -> str:
        return f"{SECTION}.{self.key}"


SETTINGS: tuple[Setting, ...] = (
    # how a run behaves on this host
    Setting("accel", "iofuzz_accel", "auto", "Accelerator: auto (probe KVM, fall back to TCG), kvm or tcg"),
    Setting("hang_timeout", "hang_timeout", "20", "Seconds without executor progress before the guest counts as hung"),
    Setting("max_hangs", "max_hangs", "10", "Hangs/reboots after which a run stops going on"),
    Setting("hang_status", "hang_status", "warn", "Test status when the guest hung: pass, warn or fail"),
    Setting("report_every", "report_every", "16384", "Executor progress mark every N ops (a finding's window)"),
    Setting("progress_interval", "iofuzz_progress_interval", "5", "Seconds between progress lines in the test log"),
    Setting("plot", "iofuzz_plot", "yes", "Render coverage.png (ops per range, findings marked): yes or no"),
    # scaling out
    Setting("shards", "iofuzz_shards", "1", "Split each iofuzz test into N shards (disjoint ranges), run as N tests"),
    # the "image" guest_os row: bring your own Linux image
    Setting("image", "iofuzz_image", "", "image row: path of your disk image (qcow2, raw...)"),
    Setting("image_format", "iofuzz_image_format", "qcow2", "image row: format of the disk image"),
    Setting("initrd", "iofuzz_initrd", "", "image row: initrd to boot with iofuzz_kernel (optional)"),
    Setting("kernel_params", "iofuzz_kernel_params", "", "image row: kernel command line when a kernel is given"),
    Setting("login", "iofuzz_login", "serial", "image row: log in over 'serial' or 'ssh'"),
    Setting("username", "iofuzz_username", "root", "image row: login name"),
    Setting("password", "iofuzz_password", "", "image row: login password"),
    Setting("prompt", "iofuzz_prompt", r"^.*[\#\$]\s*$", "image row: regex matching the shell prompt line"),
    Setting("ssh_port", "iofuzz_ssh_port", "0", "image row: host port forwarded to guest port 22 (0 = a free one)"),
)


def register(settings: Any) -> None:
    """Register every setting with avocado's ``settings`` object (idempotent)."""
    registered = settings.as_dict()
    for setting in SETTINGS:
        if setting.namespace in registered:
            continue
        settings.register_option(
            section=SECTION,
            key=setting.key,
            default=setting.default,
            key_type=str,
            help_msg=f"{setting.help_msg} [param {setting.param}]",
        )


def apply_settings(config: Mapping[str, Any], params: MutableMapping[str, Any]) -> None:
    """Fill each param the cfg row left unset (or empty) from the settings."""
    for setting in SETTINGS:
        if str(params.get(setting.param, "") or "").strip():
            continue
        value = config.get(setting.namespace)
        if value is None:
            value = setting.default
        params[setting.param] = str(value)
