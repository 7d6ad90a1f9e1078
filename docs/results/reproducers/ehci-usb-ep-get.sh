#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) aborts: hw/usb/core.c:744: usb_ep_get: Assertion
# `pid == USB_TOKEN_IN || pid == USB_TOKEN_OUT' failed.  (see docs/results/findings.rst)
# An ICH9 EHCI with a USB stick on port 1; the guest's part, line by line:
#   outl 0xcf8/0xcfc ...         BAR0 (operational registers) at 0xfeb00000, memory decoding on
#   writew 0x7002004 0x8200      queue head at 0x7002000: head of the async list (H), device 0, endpoint 2
#   writel 0x7002010 0x7003000   ... its next qTD: 0x7003000
#   writew 0x7003008 0x280       qTD token: active, PID SETUP (2), 0 bytes
#   writel 0xfeb00064 0x100/0x0  PORTSC1: reset, then end of reset: the high-speed stick is enabled
#   writel 0xfeb00038 0x7002000  ASYNCLISTADDR: the queue head
#   writel 0xfeb00020 0x21       USBCMD: run + async schedule on: schedules the EHCI's bottom half, which
#                                runs after this read of the script (with -S too), walks the async list
#                                and executes the SETUP qTD on endpoint 2
# Everything the schedule needs is written before USBCMD, so no read boundary of QEMU's matters.
# Run it: sh reproducer.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh reproducer.sh).
# It ends as soon as QEMU does, with QEMU's exit status; after 10 s it stops QEMU
# and says the crash did not happen.
QEMU=${QEMU:-qemu-system-x86_64}
"$QEMU" -S -display none -machine pc -drive if=none,id=stick,driver=null-co -device ich9-usb-ehci1,addr=5 -device usb-storage,drive=stick -qtest stdio >/dev/null <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002810
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002804
outb 0xcfc 0x2
writew 0x7002004 0x8200
writel 0x7002010 0x7003000
writew 0x7003008 0x280
writel 0xfeb00064 0x100
writel 0xfeb00064 0x0
writel 0xfeb00038 0x7002000
writel 0xfeb00020 0x21
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
