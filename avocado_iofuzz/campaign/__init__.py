"""Running a plan on one VM: the executor fed, progress watched, hangs and
QEMU deaths turned into findings, and the write-ahead trace of what ran."""
