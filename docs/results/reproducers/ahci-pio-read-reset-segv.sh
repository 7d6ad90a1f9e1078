#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) dies by SIGSEGV when an ich9-ahci HBA is reset while a PIO READ SECTORS
# of its disk is still in flight, and the port is started again before the read completes
# (docs/results/findings.rst). Found on the storage.ahci row by the guided strategy (round 0, the
# ahci-port0-slots recipe); its stderr was full of "PRDT length for NCQ command" errors, but those
# are noise: this reproducer has no NCQ command and no PRDT at all.
#   command list at 0x7000000: slot 0 = 5-dword FIS, 1 PRD entry, command table at 0x7001000
#   command table: H2D register FIS, C bit, READ SECTORS (0x20), LBA mode, sector count 2
#   writel PxCLB, PxCMD = FRE|ST, PxCI = slot 0   the read is submitted to the null-co disk
#   writel GHC = HR                                HBA reset, before the read's completion ran
#   writel PxCMD = FRE|ST                          the port is started again
# When the read completes (a bottom half), QEMU crashes under ide_transfer_start_norecurse
# (gdb on Debian's stripped binary; no symbols for the faulting frame).
# Without the disk, without the reset, or with a sector count of 1, QEMU lives on: the second
# sector's read starts after the reset (QEMU's -trace ide_sector_read shows it) and dies there.
# Run it: sh ahci-pio-read-reset-segv.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh ...).
# It ends as soon as QEMU does, with QEMU's exit status; after 10 s it stops QEMU
# and says the crash did not happen.
QEMU=${QEMU:-qemu-system-x86_64}
"$QEMU" -S -display none -machine pc -m 256 -nodefaults -device ich9-ahci,id=hba,addr=5 \
    -blockdev driver=null-co,node-name=disk,size=67108864,read-zeroes=on -device ide-hd,bus=hba.0,drive=disk \
    -qtest stdio >/dev/null <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002824
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002804
outw 0xcfc 0x7
write 0x7000000 32 0x0500010000000000001000070000000000000000000000000000000000000000
write 0x7001000 20 0x2780200000000040000000000200000000000000
writel 0xfeb00100 0x7000000
writel 0xfeb00118 0x11
writel 0xfeb00138 0x1
writel 0xfeb00004 0x1
writel 0xfeb00118 0x11
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
