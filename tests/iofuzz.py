"""VT test: fuzz QEMU's I/O port emulation from inside the guest (placeholder run for plumbing)."""


def run(test, params, env):
    raise NotImplementedError
