"""The shell commands a reader can copy from the docs (README.rst, docs/**/*.rst).

A command is a line of a literal block (``::`` or ``.. code-block:: sh``)
whose first word is one of the programs the project gives its users. In a
``code-block`` of a shell language every line is a command, so a line
starting with anything else is reported as unknown instead of being skipped;
plain ``::`` blocks also hold output and config files, so there only lines
starting with a known program count. Backslash continuations are joined,
``$`` prompts and trailing comments dropped, ``a && b`` split and a pipeline
cut to its first command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# programs whose command lines the docs hand to users; `.venv/bin/` is stripped first
PROGRAMS = ("avocado", "sockstates", "iofuzz-merge", "pytest", "python", "python3", "./bootstrap.sh")
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
_CODE_BLOCK = re.compile(r"^(\s*)\.\. code-block::\s*(\S*)\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\. [\w-]+::")
# `$(...)` without nesting: what the docs use to pass a helper's output as a param
_SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
SUBSTITUTED = "SUBSTITUTED-VALUE"


@dataclass(frozen=True)
class DocCommand:
    source: str  # file:line, for the test id and the failure message
    text: str  # as written, continuations joined
    argv: tuple[str, ...]  # program first (`.venv/bin/` stripped), `$(...)` replaced by SUBSTITUTED
    substitutions: tuple[str, ...]  # the commands inside `$(...)`

    @property
    def program(self) -> str:
        return self.argv[0]


@dataclass(frozen=True)
class UnknownLine:
    source: str
    text: str


def doc_files(root: Path) -> list[Path]:
    """README.rst and every .rst under docs/ (the README is to become a Sphinx tree there)."""
    files = [root / "README.rst"] if (root / "README.rst").is_file() else []
    return files + sorted((root / "docs").glob("**/*.rst"))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def literal_blocks(text: str) -> Iterator[tuple[int, bool, list[str]]]:
    """(first line number, is a shell code-block, lines) of each literal block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        code = _CODE_BLOCK.match(line)
        if code:
            # text, ini, ...: output or config, not commands
            opens_literal = code.group(2) in SHELL_LANGUAGES
        else:
            opens_literal = line.rstrip().endswith("::") and not _DIRECTIVE.match(line)
        if not opens_literal:
            i += 1
            continue
        marker_indent = _indent(line)
        j = i + 1
        block: list[tuple[int, str]] = []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > marker_indent):
            block.append((j + 1, lines[j]))
            j += 1
        while block and not block[-1][1].strip():
            block.pop()
        if block:
            yield block[0][0], bool(code), [b[1] for b in block]
        i = j


def _logical_lines(first: int, lines: list[str]) -> Iterator[tuple[int, str]]:
    """Continuation lines joined: (line number of the first, text)."""
    pending: list[str] = []
    start = first
    for number, line in enumerate(lines, first):
        if not pending:
            start = number
        stripped = line.strip()
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        yield start, " ".join(p for p in pending if p)
        pending = []
    if pending:
        yield start, " ".join(pending)


def _first_word(text: str) -> str:
    word = text.split(maxsplit=1)[0] if text.split() else ""
    return word.removeprefix(".venv/bin/")


def _parse(source: str, text: str) -> list[DocCommand]:
    substitutions = tuple(m.strip() for m in _SUBSTITUTION.findall(text))
    words = shlex.split(_SUBSTITUTION.sub(SUBSTITUTED, text), comments=True)
    commands, current = [], []
    for word in [*words, "&&"]:
        if word != "&&":
            current.append(word)
            continue
        # a pipeline: what reaches the reader's terminal is the first command's output, filtered
        head = current[: current.index("|")] if "|" in current else current
        if head:
            argv = (head[0].removeprefix(".venv/bin/"), *head[1:])
            commands.append(DocCommand(source, text, argv, substitutions))
        current = []
    return commands


def doc_commands(path: Path, root: Path) -> tuple[list[DocCommand], list[UnknownLine]]:
    """The commands of one doc file, and the lines of shell blocks that start with no known program."""
    name = str(path.relative_to(root))
    commands: list[DocCommand] = []
    unknown: list[UnknownLine] = []
    for first, is_shell, lines in literal_blocks(path.read_text(encoding="utf-8")):
        logical = [(n, t) for n, t in _logical_lines(first, lines) if t]
        prompted = [(n, t.removeprefix("$ ")) for n, t in logical if t.startswith("$ ")]
        if prompted:
            logical = prompted  # a console transcript: the rest is output
        for number, text in logical:
            source = f"{name}:{number}"
            if _first_word(text) in PROGRAMS:
                commands += _parse(source, text)
            elif is_shell and not text.startswith("#"):
                unknown.append(UnknownLine(source, text))
    return commands, unknown


def all_doc_commands(root: Path) -> tuple[list[DocCommand], list[UnknownLine]]:
    commands: list[DocCommand] = []
    unknown: list[UnknownLine] = []
    for path in doc_files(root):
        found, strange = doc_commands(path, root)
        commands += found
        unknown += strange
    return commands, unknown
