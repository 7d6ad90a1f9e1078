#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) aborts: hw/usb/core.c:520 (10.0.13: core.c:530): usb_cancel_packet: Assertion
# `usb_packet_is_inflight(p)' failed.  (see docs/results/findings.rst, finding-ehci-cancel-nested)
# An ICH9 EHCI with the usb.ich9_ehci row's null-co USB stick on port 1, clock stopped (-S). The guest's part:
#   outl 0xcf8/0xcfc ...         BAR0 (operational registers) at 0xfeb00000, memory decoding and bus master on
#   0x7000000 QH A (head, H)     device 0, bulk OUT endpoint 2: a CBW, TEST UNIT READY (it takes the
#                                power-on UNIT ATTENTION, so that the next command runs)
#   0x7000040 QH B               bulk IN endpoint 1: that command's 13-byte CSW
#   0x7000080 QH C               bulk OUT endpoint 2: a CBW, READ(10) of block 0 (512 bytes in)
#   0x70000c0 QH D               bulk IN endpoint 1: 512 bytes for the data; the read is in flight, so
#                                usb-storage keeps this packet (async) until the block layer answers
#   0x7000100 QH E               an empty queue head that links to itself
#   PORTSC1 reset, ASYNCLISTADDR = QH A, USBCMD = run + async schedule: the controller's bottom half
#   walks A-B-C-D once, after the kilobyte of the script that holds this write (the second) is read
#   readl 0xfeb00020 (x40)       padding: what follows is read as the next kilobyte
#   ASYNCLISTADDR = QH E         while the schedule runs (QEMU prints its warning)
#   USBCMD = run + async + doorbell   schedules the controller's bottom half again
#   PORTSC1 reset, end of reset  usb_port_reset -> detach -> the EHCI frees D's queue -> cancels its
#                                packet -> usb-storage cancels the SCSI read -> blk_aio_cancel polls the
#                                main loop, which runs the pending EHCI bottom half *inside* the cancel:
#                                its walk sees only QH E, the doorbell frees every unseen queue, D's
#                                among them, whose packet is already marked cancelled: the assertion.
# The timing is QEMU's own, not a race with the host: the qtest server reads its input 1024 bytes at a
# time and QEMU runs its bottom halves between two reads; the walk (which starts the read) runs before
# the third kilobyte is read and the block layer's completion one read later, so the three trigger
# writes, all in the third kilobyte, meet the read still in flight. The padding keeps them there.
# Run it: sh reproducer.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh reproducer.sh).
# It ends as soon as QEMU does, with QEMU's exit status; after 10 s it stops QEMU
# and says the crash did not happen.
QEMU=${QEMU:-qemu-system-x86_64}
"$QEMU" -S -display none -machine pc -nodefaults -device ich9-usb-ehci1,id=usbhc,addr=5 -drive if=none,id=usbstick,driver=null-co,size=64M,read-zeroes=on -device usb-storage,bus=usbhc.0,drive=usbstick -qtest stdio >/dev/null <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002810
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002804
outb 0xcfc 0x6
writel 0x7000000 0x7000042
writel 0x7000004 0x0200e200
writel 0x7000008 0x40000000
writel 0x7000010 0x7001000
writel 0x7000014 0x1
writel 0x7001000 0x1
writel 0x7001004 0x1
writel 0x7001008 0x001f0c80
writel 0x700100c 0x7002000
writel 0x7002000 0x43425355
writel 0x7002004 0x1
writel 0x700200c 0x00060000
writel 0x7000040 0x7000082
writel 0x7000044 0x02006100
writel 0x7000048 0x40000000
writel 0x7000050 0x7001040
writel 0x7000054 0x1
writel 0x7001040 0x1
writel 0x7001044 0x1
writel 0x7001048 0x000d0d80
writel 0x700104c 0x7003800
writel 0x7000080 0x70000c2
writel 0x7000084 0x02006200
writel 0x7000088 0x40000000
writel 0x7000090 0x7001080
writel 0x7000094 0x1
writel 0x7001080 0x1
writel 0x7001084 0x1
writel 0x7001088 0x001f0c80
writel 0x700108c 0x7002100
writel 0x7002100 0x43425355
writel 0x7002104 0x2
writel 0x7002108 0x200
writel 0x700210c 0x280a0080
writel 0x7002114 0x01000000
writel 0x7002118 0x0
writel 0x70000c0 0x7000002
writel 0x70000c4 0x02006100
writel 0x70000c8 0x40000000
writel 0x70000d0 0x70010c0
writel 0x70000d4 0x1
writel 0x70010c0 0x1
writel 0x70010c4 0x1
writel 0x70010c8 0x02000d80
writel 0x70010cc 0x7003000
writel 0x7000100 0x7000102
writel 0x7000104 0x0200e000
writel 0x7000108 0x40000000
writel 0x7000110 0x1
writel 0x7000114 0x1
writel 0xfeb00060 0x1
writel 0xfeb00064 0x1100
writel 0xfeb00064 0x1000
writel 0xfeb00038 0x7000000
writel 0xfeb00020 0x21
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
readl 0xfeb00020
writel 0xfeb00038 0x7000100
writel 0xfeb00020 0x61
writel 0xfeb00064 0x1100
writel 0xfeb00064 0x1000
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
