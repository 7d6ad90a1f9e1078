"""Device coverage: which of QEMU's own trace events a fuzzing run reaches (docs/user/coverage.rst)."""
