"""Avocado init plugin: runs when avocado starts, before any command."""

from __future__ import annotations

import os
import sys

from avocado.core.plugin_interfaces import Init


class IofuzzInit(Init):
    name = "iofuzz"
    description = "avocado-iofuzz initialization (settings, aexpect helper on PATH)"

    def initialize(self) -> None:
        from avocado.core.settings import settings

        from avocado_iofuzz.plugins.settings import register

        register(settings)  # the `iofuzz` section: `avocado config` lists it
        # aexpect starts its `aexpect_helper` by name; when avocado is run as
        # .venv/bin/avocado without activating the venv the helper, which
        # sits next to the interpreter, is not on PATH and every session dies.
        bindir = os.path.dirname(sys.executable)
        path = os.environ.get("PATH", "").split(os.pathsep)
        if bindir not in path:
            os.environ["PATH"] = os.pathsep.join([bindir, *path])
        _mark_vt_bootstrap_optional()


def _mark_vt_bootstrap_optional() -> None:
    """Let avocado-vt load its CLI options without `avocado vt-bootstrap`.

    avocado-vt refuses to load its CLI plugins (and prints two tracebacks per
    command) until its test-providers download folder holds a file. Our tests
    ship their own cfg and resolver and need no provider, so an explanatory
    placeholder there is all it takes; a later vt-bootstrap leaves it alone.
    """
    try:
        from virttest import data_dir  # imported late: avocado-vt may be absent or broken
    except ImportError:
        return
    downloads = os.path.join(data_dir.get_test_providers_dir(), "downloads")
    placeholder = os.path.join(downloads, "avocado-iofuzz.placeholder")
    if os.path.exists(placeholder):
        return
    try:
        os.makedirs(downloads, exist_ok=True)
        with open(placeholder, "w", encoding="utf-8") as out:
            out.write("Created by avocado-iofuzz: its tests need no avocado-vt test provider.\n")
    except OSError:
        pass  # a read-only data dir only costs avocado-vt's warning
