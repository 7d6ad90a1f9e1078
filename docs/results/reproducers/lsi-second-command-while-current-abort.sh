#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) aborts with hw/scsi/lsi53c895a.c:874: lsi_do_command: Assertion
# `s->current == NULL' failed. when an LSI53C895A's SCRIPTS send a second SCSI command while the first
# one still holds the chip's current request (docs/results/findings.rst, finding-lsi-current). The
# guided strategy's lsi_scripts layout met it on the storage.lsi53c895a row; this script is written
# by hand from the 7.2 source (the run's trace could not be replayed: see the findings). QEMU 10.0.13
# aborts the same way (line 888). Clock stopped (-S); the disk (SCSI id 0) is the row's null-co one.
#   outl 0xcf8/0xcfc ...   BAR1 (the registers, memory) at 0xfeb00000, memory decoding and bus mastering
#   write 0x2000 ...       MSG OUT byte 0x80 (IDENTIFY, LUN 0)
#   write 0x2010 ...       first CDB: INQUIRY, 36 bytes. Its data is ready at once (the disk emulates
#                          it), so the request stays the chip's current one, in the DATA IN phase
#   write 0x2020 ...       second CDB: INQUIRY again
#   write 0x1000 ...       SCRIPTS, one instruction (two dwords, little-endian) per line:
#     0x1000 SELECT ATN target 0          connected, MSG OUT phase
#     0x1008 MOVE 1 bytes MSG OUT 0x2000  IDENTIFY: COMMAND phase
#     0x1010 MOVE 6 bytes COMMAND 0x2010  first INQUIRY: the request is current, DATA IN phase
#     0x1018 SET ATN                      the chip sets the phase back to MSG OUT (its data never read)
#     0x1020 MOVE 1 bytes MSG OUT 0x2000  IDENTIFY again: COMMAND phase
#     0x1028 MOVE 6 bytes COMMAND 0x2020  second INQUIRY: lsi_do_command finds a current request
#     0x1030 INT 1                        (not reached on 7.2) stop SCRIPTS
#   writel DSP = 0x1000    DMODE's manual start bit is clear after reset: this write runs the SCRIPTS
# With a TEST UNIT READY as the first CDB (no data: it completes at once and frees the current
# request) QEMU lives, and runs the second INQUIRY.
# Run it: sh lsi-second-command-while-current-abort.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh ...).
# It ends as soon as QEMU does, with QEMU's exit status (134: the abort); after 10 s it stops QEMU
# by PID and says the crash did not happen.
QEMU=${QEMU:-qemu-system-x86_64}
"$QEMU" -S -display none -machine pc -nodefaults -device lsi53c895a,id=hba,addr=4 \
    -blockdev driver=null-co,node-name=disk,size=67108864,read-zeroes=on -device scsi-hd,bus=hba.0,drive=disk \
    -qtest stdio -qtest-log /dev/null >/dev/null <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002014
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002004
outw 0xcfc 0x6
write 0x2000 1 0x80
write 0x2010 6 0x120000002400
write 0x2020 6 0x120000002400
write 0x1000 8 0x0800004000000000
write 0x1008 8 0x0100000600200000
write 0x1010 8 0x0600000210200000
write 0x1018 8 0x0800005800000000
write 0x1020 8 0x0100000600200000
write 0x1028 8 0x0600000220200000
write 0x1030 8 0x0000089801000000
writel 0xfeb0002c 0x1000
readb 0xfeb00014
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
