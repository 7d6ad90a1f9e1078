#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) with libspice-server 0.15.1 aborts (SIGABRT): Spice: ../server/red-worker.cpp:367:
# handle_dev_destroy_surface_wait: condition `msg->surface_id == 0' failed  (docs/results/findings.rst)
# A qxl-vga on q35 (the same ops abort it on pc: -machine pc -nodefaults -device qxl-vga); the
# q35 findings run's triage (seed 13) made these 6 ops of 5 218 and verified them 3/3:
#   outl 0xcf8/0xcfc ...   BAR3 (qxl's I/O ports) at 0xd040, I/O decoding on
#   outb 0xd052 0x0        port 18, QXL_IO_CREATE_PRIMARY_ASYNC, with nothing set up: SPICE only
#                          warns (height 0), but the qxl leaves VGA mode for native mode
#   outb 0xd04e 0x40       port 14, QXL_IO_DESTROY_SURFACE_WAIT of surface 64: QEMU hands it on
#                          (trace qxl_spice_destroy_surface_wait sid=64), SPICE's condition fails
# (QEMU's own -trace qxl_io_write names both ports and the mode.) Without the first write, or with
# surface 0, QEMU lives on.
# Run it: sh qxl-destroy-surface-wait.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh ...).
# It ends as soon as QEMU does, with QEMU's exit status; after 10 s it stops QEMU
# and says the crash did not happen.
QEMU=${QEMU:-qemu-system-x86_64}
"$QEMU" -S -display none -machine q35 -device pcie-root-port -nodefaults -device qxl-vga -qtest stdio >/dev/null <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x8000101c
outw 0xcfc 0xd040
outl 0xcf8 0x80001004
outb 0xcfc 0x1
outb 0xd052 0x0
outb 0xd04e 0x40
IOFUZZ_QTEST_END
pid=$!
ticks=0
while kill -0 "$pid" 2>/dev/null && [ "$ticks" -lt 100 ]; do sleep 0.1; ticks=$((ticks + 1)); done
if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"; wait "$pid" 2>/dev/null
    echo "reproducer: QEMU still running 10 s after the script: the crash did NOT happen" >&2
    exit 0
fi
wait "$pid"; status=$?
echo "reproducer: QEMU ended with status $status" >&2
exit "$status"
