#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) dies by SIGSEGV in scsi_req_get_buf (called from usb_msd_transfer_data, from
# the block layer's completion bottom half) when a usb-storage device takes a Bulk-Only Mass Storage
# Reset while a SCSI READ is in flight and then runs a second command (docs/results/findings.rst,
# finding-usb-msd-reset-segv). Found with the ehci-msd recipe on the usb.ich9_ehci row (fill seed
# 0x5EED0031). QEMU 10.0.13 dies the same way. Clock stopped (-S); device 0, never addressed.
# One walk of the EHCI async schedule does it all (QH = queue head, qTD = transfer descriptor):
#   QH A 0x7000000 (head)  bulk OUT ep 2: CBW tag 1, TEST UNIT READY (takes the power-on UNIT ATTENTION)
#   QH B 0x7000040         bulk IN ep 1: its 13-byte CSW
#   QH C 0x7000080         bulk OUT ep 2: CBW tag 2, READ(10) block 0, 512 bytes in. Request 2 goes to
#                          the block layer; its completion is a bottom half, so it stays in flight
#   QH D 0x70000c0         control ep 0: SETUP 21 ff 00 00 00 00 00 00 (class, interface: Mass Storage
#                          Reset), status stage IN. usb-storage only sets its state back to "CBW next";
#                          request 2 is neither cancelled nor forgotten by the SCSI layer
#   QH E 0x7000100         bulk OUT ep 2: CBW tag 3, READ(10) block 0 again. Request 3 becomes usb-storage's
#                          current request (request 2 is still running, now unknown to usb-storage)
#   QH F 0x7000140         bulk IN ep 1: 512 bytes (usb-storage keeps it, waiting for request 3's data),
#                          then 13 bytes for the CSW, queued behind it by QEMU's USB core
#   PORTSC1 reset and end of reset, ASYNCLISTADDR = QH A, USBCMD = run + async schedule
# After the walk the two completion bottom halves run, the later one (request 3) first: its data fills
# the 512-byte packet and the request completes; completing that packet hands the queued 13-byte one
# to usb-storage while request 3 is still its current request, so usb-storage keeps it ("still in
# flight") and only then forgets request 3. Request 2's data arrives next: usb-storage has a packet
# and no current request, and copies from scsi_req_get_buf(NULL).
# Without the reset, without the queued 13-byte qTD, or with request 2 a TEST UNIT READY (nothing in
# flight), QEMU lives on.
# Run it: sh usb-msd-reset-segv.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh ...).
# It ends as soon as QEMU does, with QEMU's exit status; after 10 s it stops QEMU
# and says the crash did not happen.
QEMU=${QEMU:-qemu-system-x86_64}
"$QEMU" -S -display none -machine pc -nodefaults -device ich9-usb-ehci1,id=usbhc,addr=5 \
    -drive if=none,id=usbstick,driver=null-co,size=64M,read-zeroes=on -device usb-storage,bus=usbhc.0,drive=usbstick \
    -qtest stdio >/dev/null <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002810
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002804
outb 0xcfc 0x6
write 0x7000000 24 0x4200000700e2000200000040000000000010000701000000
write 0x7001000 16 0x0100000001000000800c1f0000200007
write 0x7002000 31 0x55534243010000000000000000000600000000000000000000000000000000
write 0x7000040 24 0x820000070061000200000040000000002010000701000000
write 0x7001020 16 0x0100000001000000800d0d0000380007
write 0x7000080 24 0xc20000070062000200000040000000004010000701000000
write 0x7001040 16 0x0100000001000000800c1f0000210007
write 0x7002100 31 0x55534243020000000002000080000a28000000000000000100000000000000
write 0x70000c0 24 0x020100070060400000000040000000006010000701000000
write 0x7001060 16 0x8010000701000000800e080000220007
write 0x7002200 8 0x21ff000000000000
write 0x7001080 16 0x0100000001000000800d008000000000
write 0x7000100 24 0x42010007006200020000004000000000a010000701000000
write 0x70010a0 16 0x0100000001000000800c1f0000230007
write 0x7002300 31 0x55534243030000000002000080000a28000000000000000100000000000000
write 0x7000140 24 0x02000007006100020000004000000000c010000701000000
write 0x70010c0 16 0xe010000701000000800d000200300007
write 0x70010e0 16 0x0100000001000000800d0d0000380007
writel 0xfeb00060 0x1
writel 0xfeb00064 0x1100
writel 0xfeb00064 0x1000
writel 0xfeb00038 0x7000000
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
