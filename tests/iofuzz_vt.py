"""iofuzz: fuzz QEMU's I/O port emulation from inside the guest.

Logs into the guest over the serial console, reads /proc/ioports, and per
range (minus skip_devices / skip_ports): reads every port, writes 0 to every
port, then writes fuzz_count x range-size random values to random ports of
the range, through the in-guest executor. Seeded (fuzz_seed), traced ahead of
execution (trace.iofuzz), hangs detected and survived, a QEMU death fails the
test with its exit status or signal, stderr tail and op window.
Params: see cfg/iofuzz.cfg and docs/reference/params.rst.
"""

# Named after the cfg's `type` (iofuzz_vt), not the short name: avocado-vt
# imports it as a top-level module with tests/ on sys.path, where a test
# module must not take a package's name.
from avocado_iofuzz.vt.guard import guarded_run, install_guard
from avocado_iofuzz.vt.iofuzz_test import run_iofuzz
from avocado_iofuzz.vt.startup import wait_for_events_not_time

# avocado-vt imports this module before its preprocess starts the IP sniffer and the VM
wait_for_events_not_time()
install_guard()


def run(test, params, env):
    """Classic avocado-vt entry point."""
    with guarded_run(test, params, env):
        run_iofuzz(test, params, env)
