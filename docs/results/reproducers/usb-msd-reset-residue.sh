#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) aborts: hw/usb/dev-storage.c:446 (10.0.13: line 445): usb_msd_handle_data:
# Assertion `le32_to_cpu(s->csw.residue) == 0' failed, when a usb-storage device takes a Bulk-Only Mass
# Storage Reset after a command ended with data left over (a non-zero residue) and before its CSW was
# read, and then gets the next CBW (docs/results/findings.rst, finding-usb-msd-reset-residue). Seen 13
# times in exploratory runs of the ehci-msd recipe on the usb.ich9_ehci row; every one of them had a Mass
# Storage Reset setup packet in its scratch memory. Clock stopped (-S); device 0, never addressed.
# One walk of the EHCI async schedule does it all (QH = queue head, qTD = transfer descriptor):
#   QH A 0x7000000 (head)  bulk OUT ep 2: CBW tag 1, TEST UNIT READY, but 512 bytes in announced. The
#                          first command after power-on ends at once (UNIT ATTENTION), none of the 512
#                          bytes moved: usb-storage keeps residue 512 for the CSW and waits for data IN
#   QH B 0x7000040         control ep 0: SETUP 21 ff 00 00 00 00 00 00 (class, interface: Mass Storage
#                          Reset), status stage IN. usb-storage only sets its state back to "CBW next";
#                          the unsent CSW, residue 512, stays
#   QH C 0x7000080         bulk OUT ep 2: CBW tag 2, TEST UNIT READY, no data: usb-storage asserts that
#                          no residue is left from before
#   PORTSC1 reset and end of reset, ASYNCLISTADDR = QH A, USBCMD = run + async schedule
# Without the reset (the second CBW is refused) or with no data announced by the first CBW (residue 0),
# QEMU lives on.
# Run it: sh usb-msd-reset-residue.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh ...).
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
write 0x7002000 31 0x55534243010000000002000080000600000000000000000000000000000000
write 0x7000040 24 0x820000070060400000000040000000002010000701000000
write 0x7001020 16 0x4010000701000000800e080000210007
write 0x7002100 8 0x21ff000000000000
write 0x7001040 16 0x0100000001000000800d008000000000
write 0x7000080 24 0x020000070062000200000040000000006010000701000000
write 0x7001060 16 0x0100000001000000800c1f0000220007
write 0x7002200 31 0x55534243020000000000000000000600000000000000000000000000000000
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
