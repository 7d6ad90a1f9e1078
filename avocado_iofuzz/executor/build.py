"""Building the in-guest executor: one static x86_64 binary, cached by its inputs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("iofuzz_exec.c")
# Static: the guests (busybox initramfs, Debian) need no matching libc.
# -s: the binary goes into every initramfs, symbols are dead weight there.
CFLAGS = ("-O2", "-static", "-s", "-Wall", "-Wextra")
BINARY_PREFIX = "iofuzz-exec-"


class ExecutorBuildError(RuntimeError):
    """The executor could not be compiled; the message says what to install or fix."""


def build_key(source: bytes, cc: str, cflags: tuple[str, ...] = CFLAGS) -> str:
    """Short hash of everything that changes the binary we build."""
    digest = hashlib.sha256()
    for part in (source, cc.encode(), "\0".join(cflags).encode()):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:16]


def build_executor(out_dir: Path, cc: str = "gcc") -> Path:
    """Compile ``iofuzz_exec.c`` into ``out_dir`` unless an identical build is there.

    The file name carries the build key, so a changed source or flag set makes
    a new binary and stale ones are never picked up.
    """
    source = SOURCE.read_bytes()
    out_dir = Path(out_dir)
    target = out_dir / f"{BINARY_PREFIX}{build_key(source, cc)}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    compiler = shutil.which(cc)
    if compiler is None:
        raise ExecutorBuildError(
            f"C compiler {cc!r} not found on PATH: install gcc (Debian: apt-get install gcc libc6-dev)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename: concurrent builders never see
    # (or leave behind) a half-written binary under the final name.
    fd, tmp_name = tempfile.mkstemp(prefix=".iofuzz-exec-", dir=out_dir)
    os.close(fd)
    try:
        result = subprocess.run(
            [compiler, *CFLAGS, "-o", tmp_name, str(SOURCE)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ExecutorBuildError(_explain_failure(cc, result.stderr))
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _explain_failure(cc: str, stderr: str) -> str:
    if "cannot find -lc" in stderr or "cannot find -lm" in stderr:
        hint = "no static C library: install libc6-dev (it provides libc.a)"
    elif "x86_64" in stderr and "#error" in stderr:
        hint = "the compiler does not target x86_64"
    else:
        hint = "compilation failed"
    return f"building {SOURCE.name} with {cc}: {hint}\n{stderr.strip()}"
