"""sockstates: every state of AF_UNIX sockets a few syscalls reach, and whether CRIU restores it.

Boots the embedded Debian guest (python3, criu, the sockstates package), logs
in over the serial console and runs the sweep with the params of
cfg/sockstates.cfg: mode gen (list the states), run (check the model against
the kernel) or criu (dump, kill, restore and verify every state). One result
with a per-state table (sockstates.json in the output dir) and a human
summary in the log. Params: see cfg/sockstates.cfg and docs/reference/params.rst, "sockstates params";
the test: docs/user/criu.rst, "The avocado test".
"""

# The file name is the cfg's `type` (sockstates_vt), not the test's short
# name: avocado-vt imports it as a top-level module with tests/ on sys.path,
# and a module named `sockstates` would shadow the sockstates package.
from avocado_iofuzz.vt.guard import guarded_run, install_guard
from avocado_iofuzz.vt.sockstates_test import run_sockstates

# avocado-vt imports this module before its preprocess starts the IP sniffer and the VM
install_guard()


def run(test, params, env):
    """Classic avocado-vt entry point."""
    with guarded_run(test, params, env):
        run_sockstates(test, params, env)
