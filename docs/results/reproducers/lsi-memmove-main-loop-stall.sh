#!/bin/sh
# QEMU 7.2 (Debian 7.2.22) holds its main loop for seconds inside one MMIO write to an LSI53C895A whose
# SCRIPTS start in memory full of 0xcc bytes (docs/results/findings.rst, the lsi stall): each dword pair
# 0xcccccccc 0xcccccccc (and the next 0xcccccccc) decodes as a memory move of 0xcccccc bytes (13.4 MB)
# from 0xcccccccc to 0xcccccccc, an address with nothing behind it with -m 256, which lsi_memcpy copies
# 4 KiB at a time; lsi_execute_script runs up to LSI_MAX_INSN (100) such moves before it defers to its
# SCRIPTS timer, so the DSP write that starts them is answered only after some 1.3 GB were copied, and
# every timer callback after it (500 us of virtual time later) holds the lock as long again. A guest
# fills such memory easily: the Linux kernel poisons the init memory it frees with 0xcc. QEMU 10.0.13
# (LSI_MAX_INSN 500) keeps the same loop, five times as many moves per callback.
#   outl 0xcf8/0xcfc ...     BAR1 (the registers, memory) at 0xfeb00000, memory decoding and bus mastering
#   memset 0x100000 ...      64 KiB of 0xcc at 1 MiB: SCRIPTS the chip fetches from there
#   writel DSP = 0x100000    DMODE's manual start bit is clear after reset: this write starts SCRIPTS
#   readb ISTAT0             answered once the chip has deferred to its timer
# Run it: sh lsi-memmove-main-loop-stall.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh ...).
# It prints how long QEMU took to answer the DSP write. If QEMU answers every command within
# BOUND seconds (default 5), it stops QEMU and exits 0; if not, it stops QEMU by PID (SIGKILL) and
# exits 124: the main loop was held for longer than the bound (it answers again later: not a hang for
# good). If QEMU ends by itself, it exits with QEMU's status.
QEMU=${QEMU:-qemu-system-x86_64}
BOUND=${BOUND:-5}
answers=$(mktemp) || exit 1
trap 'rm -f "$answers"' EXIT
"$QEMU" -display none -machine pc -m 256 -nodefaults -device lsi53c895a,addr=4 \
    -qtest stdio -qtest-log /dev/null >"$answers" <<'IOFUZZ_QTEST_END' &
outl 0xcf8 0x80002014
outl 0xcfc 0xfeb00000
outl 0xcf8 0x80002004
outw 0xcfc 0x6
memset 0x100000 0x10000 0xcc
writel 0xfeb0002c 0x100000
readb 0xfeb00014
IOFUZZ_QTEST_END
pid=$!
commands=7
ticks=0
asked=-1  # tenths of a second: when the memset was answered (the DSP write is QEMU's next command) ...
done_at=-1  # ... and when the DSP write was
while kill -0 "$pid" 2>/dev/null && [ "$(grep -c '^OK' "$answers")" -lt "$commands" ] && [ "$ticks" -lt $((BOUND * 10)) ]; do
    n=$(grep -c '^OK' "$answers")
    [ "$asked" -lt 0 ] && [ "$n" -ge 5 ] && asked=$ticks
    [ "$done_at" -lt 0 ] && [ "$n" -ge 6 ] && done_at=$ticks
    sleep 0.1; ticks=$((ticks + 1))
done
[ "$done_at" -lt 0 ] && done_at=$ticks
answered=$(grep -c '^OK' "$answers")
if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"; status=$?
    echo "reproducer: QEMU ended with status $status after $answered of $commands answers" >&2
    exit "$status"
fi
kill -9 "$pid"; wait "$pid" 2>/dev/null
if [ "$answered" -lt "$commands" ]; then
    echo "reproducer: QEMU answered $answered of $commands commands in $BOUND s (the DSP write: not yet)" >&2
    exit 124
fi
echo "reproducer: QEMU answered all $commands commands; the DSP write took about $(((done_at - asked) / 10)).$(((done_at - asked) % 10)) s" >&2
exit 0
