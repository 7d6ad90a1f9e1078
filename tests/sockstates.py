"""sockstates: every state of AF_UNIX sockets a few syscalls reach, and whether CRIU restores it.

Boots the embedded Debian guest (python3, criu, the sockstates package), logs
in over the serial console and runs the sweep with the params of
cfg/sockstates.cfg: mode gen (list the states), run (check the model against
the kernel) or criu (dump, kill, restore and verify every state). One result
with a per-state table (sockstates.json in the output dir) and a human
summary in the log. Params: see cfg/sockstates.cfg and docs/reference/params.rst, "sockstates params";
the test: docs/user/criu.rst, "The avocado test".
"""

import sys

# avocado-vt imports this file under its test type, "sockstates", which is
# also the name of the package the test drives: give the name back to the
# package before anything imports it.
if getattr(sys.modules.get(__name__), "__file__", None) == __file__:
    del sys.modules[__name__]

from avocado_iofuzz.vt.guard import guarded_run, install_guard
from avocado_iofuzz.vt.sockstates_test import run_sockstates

# avocado-vt imports this module before its preprocess starts the IP sniffer and the VM
install_guard()


def run(test, params, env):
    """Classic avocado-vt entry point."""
    with guarded_run(test, params, env):
        run_sockstates(test, params, env)
