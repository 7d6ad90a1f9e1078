"""Replay a hang in a guest; when the executor stops, ask QEMU over QMP whether its main loop still answers."""

import sys
import threading
import time
from pathlib import Path

from avocado_iofuzz.repro.cli import recorded_guest
from avocado_iofuzz.repro.extract import extract
from avocado_iofuzz.repro.guest_replay import GuestReplayer, regenerating_command

trace, occ, idx, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
ex = extract(trace, kind="hang", occurrence=occ)
cand = ex.candidates[idx]
print("finding:", ex.finding.describe(), "candidate", cand.name, len(cand.ops), cand.spans, flush=True)


def ask(vm, cmd, **args):
    box = {}

    def run():
        try:
            box["r"] = vm.qmp(cmd, **args)
        except Exception as err:
            box["r"] = f"error: {err}"

    t0 = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(10)
    return (f"{time.monotonic() - t0:.2f}s", box.get("r", "NO ANSWER in 10 s"))


with recorded_guest(ex.header, out / "guest") as vm:
    rep = GuestReplayer(vm, hang_timeout=20.0)
    cmd = regenerating_command(ex.plans, cand.spans, rep.executor, rep.report_every)
    print("command:", cmd, flush=True)
    o = rep.run_command(cmd, len(cand.ops))
    print("outcome:", o, flush=True)
    for _ in range(3):
        print("query-status:", ask(vm, "query-status"), flush=True)
        r = ask(vm, "human-monitor-command", **{"command-line": "info registers"})
        print("info registers:", str(r)[:400].replace("\\n", " | "), flush=True)
        time.sleep(2)
    print("alive:", vm.is_alive(), flush=True)
