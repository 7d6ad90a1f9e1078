#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) stops answering for good when a frame arrives for an e1000e in
# packet-split mode whose receive tail (RDT) is odd and whose descriptors all have buffer address 0
# (docs/results/findings.rst): e1000e_write_packet_to_guest loops in the main loop, the ring head
# stepping two slots per 32-byte descriptor past the odd tail, each null descriptor taking none of
# the frame. Also QEMU 10.0.13. Found on the nic.e1000e row (-netdev user,restrict=on) by the
# guided strategy, which moved the packet-split recipe's ring to an address with no RAM behind it
# (DMA reads there return zeros, so every descriptor is null).
#   outl 0xcf8/0xcfc ...          BAR0 at 0xfeb00000, memory decoding and bus mastering on
#   write 0x101000 ...            an ARP request, who has 10.0.2.2, tell 10.0.2.15 (60 bytes)
#   write 0x100000 ...            a legacy transmit descriptor for it: EOP | IFCS | RS
#   writel RFCTL = EXSTEN         extended descriptors ...
#   writel PSRCTL                 ... packet-split buffers 256 + 1024 + 1024
#   writel RDBAL, RDLEN           the receive ring at 0x47001000 (no RAM with -m 256), 4 KiB
#   writel RCTL = EN|DTYP=1|SECRC packet split: 32-byte descriptors, two ring slots each
#   writel RDT = 0x7f             odd: the head goes 0, 2, 4, ... 126, 128, ... 254, 0 and never meets it
#   writel TDBAL, TDLEN, TCTL = EN, TDT = 1
#                                 the ARP request goes to slirp, whose reply is received inside
#                                 this TDT write: it and the RDH read after it get no answer
# An even tail, extended or legacy descriptors (one slot each), or a first descriptor with
# buffers (the ring in RAM) keep QEMU answering; a ring of zeros in RAM hangs it the same way.
# Run it: sh e1000e-ps-null-ring-hang.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh ...).
# If QEMU answers every command within 10 s, it prints the last answer (RDH: where the head
# stopped), stops QEMU and exits 0; if not, it stops QEMU by PID (SIGKILL: the spinning main loop
# never handles SIGTERM) and exits 124, the hang. If QEMU ends by itself, it exits with QEMU's status.
QEMU=${QEMU:-qemu-system-x86_64}
answers=$(mktemp) || exit 1
trap 'rm -f "$answers"' EXIT
"$QEMU" -display none -machine pc -m 256 -nodefaults -netdev user,id=net0,restrict=on \
    -device e1000e,netdev=net0,addr=4 -qtest stdio -qtest-log /dev/null >"$answers" <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002010
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002004
outw 0xcfc 0x6
write 0x101000 60 0xffffffffffff525400123456080600010800060400015254001234560a00020f0000000000000a000202000000000000000000000000000000000000
write 0x100000 16 0x00101000000000003c00000b00000000
writel 0xfeb05008 0x8000
writel 0xfeb02170 0x10102
writel 0xfeb02800 0x47001000
writel 0xfeb02808 0x1000
writel 0xfeb00100 0x4000402
writel 0xfeb02818 0x7f
writel 0xfeb03800 0x100000
writel 0xfeb03808 0x1000
writel 0xfeb00400 0x2
writel 0xfeb03818 0x1
readl 0xfeb02810
IOFUZZ_QTEST_END
pid=$!
commands=17
ticks=0
while kill -0 "$pid" 2>/dev/null && [ "$(grep -c '^OK' "$answers")" -lt "$commands" ] && [ "$ticks" -lt 100 ]; do
    sleep 0.1; ticks=$((ticks + 1))
done
answered=$(grep -c '^OK' "$answers")
if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"; status=$?
    echo "reproducer: QEMU ended with status $status after $answered of $commands answers" >&2
    exit "$status"
fi
kill -9 "$pid"; wait "$pid" 2>/dev/null
if [ "$answered" -lt "$commands" ]; then
    echo "reproducer: QEMU answered $answered of $commands commands in 10 s: it hangs" >&2
    exit 124
fi
echo "reproducer: QEMU answered all $commands commands, the last (RDH): $(tail -n 1 "$answers")" >&2
exit 0
