"""A private avocado-vt env file per test, so tests can run in parallel.

avocado-vt keeps the VMs of a test in a pickled "env" file,
``<vt tmp dir>/<params["env"]>``. By default the vt tmp dir is a fresh
directory of each test process, so parallel tests never meet there. With a
persistent ``vt.common.tmp_dir`` (a common avocado-vt setting) every test
shares one file: two tests running at once (avocado's default
``max_parallel_tasks`` is the CPU count) would load each other's ``vm1``, and
the later test's ``preprocess_vm`` may destroy the earlier test's running VM
as a stale one. Our tests never share VMs, so each gets a file of its own,
removed when the job ends (:func:`remove_private_env`).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import MutableMapping
from typing import Any

ENV_PARAM = "env"
PRIVATE_PREFIX = "env-iofuzz-"


def assign_private_env(params: MutableMapping[str, Any]) -> None:
    """Give the test its own env file name, unless the user chose one."""
    if not str(params.get(ENV_PARAM, "") or "").strip():
        params[ENV_PARAM] = f"{PRIVATE_PREFIX}{uuid.uuid4().hex}"


def remove_private_env(params: MutableMapping[str, Any] | dict[str, Any], tmp_dir: str) -> bool:
    """Delete the env file :func:`assign_private_env` named; True if one was removed."""
    name = str(params.get(ENV_PARAM, "") or "")
    # never touch a file we did not name, nor anything outside the tmp dir
    if not name.startswith(PRIVATE_PREFIX) or os.sep in name:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(tmp_dir, name))
        return True
    return False
