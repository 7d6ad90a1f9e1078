#!/bin/sh
# qtest replays (no guest) of every hang of a trace: does QEMU's main loop stop?
# usage: qtest_hangs.sh TRACE COUNT OUTDIR
trace=$1; count=$2; out=$3
mkdir -p "$out"
n=1
while [ "$n" -le "$count" ]; do
    timeout 900 /work/wt-q35/.venv/bin/avocado iofuzz replay "$trace" --qtest --finding hang --occurrence "$n" \
        --output "$out/hang-$n" > "$out/hang-$n.log" 2>&1
    echo "hang $n: exit $? $(grep -v Virsh "$out/hang-$n.log" | tail -1 | cut -c1-300)"
    n=$((n + 1))
done
