"""The driver of a reproducer: find criu, run the target, dump, restore, and compare the two reports.

The script's first half (`unix` or `inet`) defines ``reach`` and ``report``;
this part calls them in the two child processes it starts (``--reference``:
the state without C/R; ``--target``: the state that is dumped and restored)
and prints both reports and their difference. Exit status 0 when they are the
same, 1 when they differ, 2 when CRIU fails, 3 when it cannot run here.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# for checking only: in the script, the state's part (unix or inet, same signatures) precedes the driver
from sockstates.reproducer.unix import reach, report

# --- state values: render() replaces this block with the state's ---
NETWORK_LOCK: str = "nftables"
CRIU_USED: str = ""  # the criu the sweep ran, tried after $CRIU
CRIU_OPTIONS: list[str] = []  # --tcp-established for TCP states
# --- end of state values ---


def target(workdir: str) -> None:
    handles = reach(workdir)
    open(os.path.join(workdir, "ready"), "w").close()
    while not os.path.exists(os.path.join(workdir, "go")):
        time.sleep(0.01)
    with open(os.path.join(workdir, "report.tmp"), "w") as f:
        json.dump(report(handles), f)
    os.rename(os.path.join(workdir, "report.tmp"), os.path.join(workdir, "report.json"))  # seen whole or not


def find_criu() -> tuple[str | None, list[str]]:
    """The criu to run and the places tried: the argument, $CRIU, the one the sweep ran, criu on PATH."""
    if len(sys.argv) > 1:  # named explicitly: that one or none
        candidates: list[tuple[str, str | None]] = [("the argument", sys.argv[1])]
    else:
        candidates = [("$CRIU", os.environ.get("CRIU")), ("the sweep's criu", CRIU_USED),
                      ("PATH", shutil.which("criu"))]
    tried: list[str] = []
    for where, path in candidates:
        if not path:
            continue
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, tried
        tried.append("%s (%s)" % (path, where))
    return None, tried


def kill_if_ours(pid: int) -> None:
    """SIGKILL a process this script started (checked by its command line: pids are reused) and reap it."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if os.path.abspath(__file__).encode() not in f.read():
                return
        os.kill(pid, 9)
    except OSError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # restored by criu: not our child, init reaps it; it is gone once it has exited
        deadline = time.monotonic() + 10
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def running(pid: int) -> bool:
    """Whether ``pid`` has not exited yet (a zombie has: only its parent's wait is left)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main() -> int | None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--reference", "--target"):
        if sys.argv[1] == "--target":
            target(sys.argv[2])
            return None  # exit status 0, as sys.exit(None)
        print(json.dumps(report(reach(sys.argv[2]))))
        return 0
    criu, tried = find_criu()
    if criu is None:
        print("cannot find criu%s.\nGive its path: python3 %s /path/to/criu (or set CRIU=/path/to/criu);"
              " on kernels >= 6.13 it must be CRIU >= 4.1." % (": tried " + ", ".join(tried) if tried else
                                                               " (no argument, no $CRIU, none on PATH)",
                                                               sys.argv[0]), file=sys.stderr)
        return 3
    if os.geteuid() != 0:
        print("criu dump and restore need root: run this as root", file=sys.stderr)
        return 3
    work = tempfile.mkdtemp(prefix="sockstates-repro-")
    names, images = os.path.join(work, "names"), os.path.join(work, "images")
    os.mkdir(names)
    os.mkdir(images)
    reference = json.loads(subprocess.run([sys.executable, __file__, "--reference", names],
                                          check=True, capture_output=True, text=True).stdout)
    names = os.path.join(work, "names2")
    os.mkdir(names)
    pidfile = os.path.join(work, "restored.pid")
    with open(os.path.join(work, "target.log"), "wb") as log:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--target", names],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        return check(criu, proc, names, images, pidfile, reference, work)
    finally:  # whatever happened, no target (before or after C/R) is left waiting
        kill_if_ours(proc.pid)
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                kill_if_ours(int(f.read().strip() or 0))


def print_cause(log: str) -> None:
    """The lines that say why: a BUG, a task's death, and the last errors before CRIU gave up.

    (The first Error line is often a harmless one that successful runs log too.)
    """
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    errors = [line for line in lines if "Error (" in line]
    cause = [line for line in errors if "BUG at" in line or "killed by signal" in line] or errors[-3:]
    for line in cause:
        print("    " + line.strip())


def check(criu: str, proc: subprocess.Popen[bytes], names: str, images: str, pidfile: str, reference: list[str],
          work: str) -> int:
    while not os.path.exists(os.path.join(names, "ready")):
        if proc.poll() is not None:
            print("the target died before reaching the state: see " + os.path.join(work, "target.log"))
            return 2
        time.sleep(0.01)
    dump = [criu, "dump", "-t", str(proc.pid), "-D", images, "-o", "dump.log", "-v4", "--network-lock", NETWORK_LOCK,
            *CRIU_OPTIONS]
    restore = [criu, "restore", "-d", "-D", images, "-o", "restore.log", "-v4", "--pidfile", pidfile, *CRIU_OPTIONS]
    for argv in (dump, restore):
        print("+", " ".join(argv))
        if subprocess.run(argv).returncode != 0:
            log = os.path.join(images, argv[1] + ".log")
            print("criu %s failed: see %s" % (argv[1], log))
            print_cause(log)
            return 2
        if argv is dump:
            proc.wait()
    open(os.path.join(names, "go"), "w").close()
    deadline = time.monotonic() + 60
    path = os.path.join(names, "report.json")
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    restored = ["(the restored process did not report)"]
    if os.path.exists(path):
        with open(path) as f:
            restored = json.load(f)
    print("without C/R:", *reference, sep="\n    ")
    print("after C/R:", *restored, sep="\n    ")
    diff = list(difflib.unified_diff(reference, restored, "without C/R", "after C/R", lineterm=""))
    print("\n".join(diff) if diff else "same: CRIU restored this state intact")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
