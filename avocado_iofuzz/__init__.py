"""avocado-iofuzz: an Avocado-VT plugin that fuzzes QEMU's device emulation
from inside a guest (iofuzz) and sweeps socket states through CRIU (sockstates).

Logging: every module logs to ``avocado.test.iofuzz`` (the sockstates test
to ``avocado.test.sockstates``), which avocado puts in the running test's
log; the plugins that talk to the user's terminal log to ``avocado.app``.
"""
