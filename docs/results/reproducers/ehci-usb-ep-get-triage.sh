#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) aborts: hw/usb/core.c:744: usb_ep_get: Assertion
# `pid == USB_TOKEN_IN || pid == USB_TOKEN_OUT' failed.  (see docs/results/findings.rst)
# What `avocado iofuzz replay --minimize` made of the fuzzing run's ops as they were: 47 ops
# (from 19457; verified 3/3). Kept as the tool wrote it: USBCMD comes before ASYNCLISTADDR here,
# so it aborts only while both lines fall in one of QEMU's 1 KiB reads of the script (its zero
# writes hold the read boundaries where they are: do not edit it). ehci-usb-ep-get.sh is the
# robust one.
# Run it: sh reproducer.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh reproducer.sh).
# It ends as soon as QEMU does, with QEMU's exit status; after 10 s it stops QEMU
# and says the crash did not happen.
QEMU=${QEMU:-qemu-system-x86_64}
"$QEMU" -S -display none -machine pc -drive if=none,id=stick,driver=null-co -device ich9-usb-ehci1,addr=5 -device usb-storage,drive=stick -qtest stdio >/dev/null <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002810
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002804
outb 0xcfc 0x2
writeb 0x7001fff 0x0
writeb 0x7002000 0x2
writeb 0x7002001 0x2c
writeb 0x7002002 0x0
writeb 0x7002003 0x7
writeb 0x7002004 0x0
writeb 0x7002005 0x80
writeb 0x7002c04 0x0
writeb 0x7002c05 0x2
writeb 0x7002c06 0x0
writeb 0x7002c07 0x20
writeb 0x7002c08 0x10
writeb 0x7002c0e 0x0
writeb 0x7002c0f 0x0
writeb 0x7002c10 0x40
writeb 0x7002c11 0x38
writeb 0x7002c12 0x0
writeb 0x7002c13 0x7
writeb 0x7002c14 0x20
writeb 0x7002c15 0x10
writeb 0x7002c16 0x0
writeb 0x7003842 0x0
writeb 0x7003843 0x0
writeb 0x7003844 0x20
writeb 0x7003845 0x10
writeb 0x7003846 0x0
writeb 0x7003847 0x0
writeb 0x7003848 0x80
writeb 0x7003849 0x82
writeb 0x700384a 0x0
writew 0xfeb00044 0x1000
writel 0xfeb00058 0x10000000
writel 0xfeb00064 0x10000000
writeb 0xfeb00070 0x20
writel 0xfeb0004c 0x40000000
writel 0xfeb0005c 0x10000000
writel 0xfeb00058 0x10000000
writel 0xfeb00040 0x1000000
writel 0xfeb00064 0x10000100
writeb 0xfeb0002c 0x10
writel 0xfeb00020 0x10000021
writel 0xfeb00064 0x0
writel 0xfeb00038 0x7002000
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
