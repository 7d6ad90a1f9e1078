"""Merge the summaries of shards (or of any runs) into one: ``iofuzz-merge``.

Inside one avocado job the result plugin does this by itself
(``<job dir>/iofuzz/``). Across hosts -- a Jenkins matrix whose cells each ran
some shards -- the last stage collects the cells' job results and runs::

    iofuzz-merge -o merged/ results/

which finds every test's ``summary.json`` below the given paths and writes
``merged/summary.json``, ``merged/summary.txt`` and ``merged/coverage.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from avocado_iofuzz.report import (
    PICTURE_NAME,
    SUMMARY_NAME,
    merge_summaries,
    read_summary,
    summary_table,
    write_summary,
)

MERGED_DIR = "iofuzz"
TABLE_NAME = "summary.txt"


def find_summaries(paths: Sequence[Path]) -> list[Path]:
    """Every test summary at or below ``paths`` (merged summaries are left out)."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob(SUMMARY_NAME))
        else:
            raise FileNotFoundError(f"iofuzz-merge: {path}: no such file or directory")
    # a summary that is itself a merge would count its shards twice
    return [p for p in dict.fromkeys(found) if "merged_from" not in read_summary(p)]


def merge_files(summaries: Sequence[Path], outdir: Path, relative_to: Path | None = None, plot: bool = True) -> Path:
    """Merge ``summaries`` into ``outdir``; returns the merged summary's path."""
    if not summaries:
        raise ValueError("iofuzz-merge: no summary.json found")
    sources = [os.path.relpath(p, relative_to) if relative_to else str(p) for p in summaries]
    merged = merge_summaries([read_summary(p) for p in summaries], sources)
    outdir.mkdir(parents=True, exist_ok=True)
    target = outdir / SUMMARY_NAME
    write_summary(target, merged)
    (outdir / TABLE_NAME).write_text(summary_table(merged) + "\n", encoding="utf-8")
    if plot:
        from avocado_iofuzz.plotting import render_coverage

        render_coverage(merged, outdir / PICTURE_NAME)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iofuzz-merge", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="summary.json files or folders holding them")
    parser.add_argument("-o", "--output", type=Path, default=Path(MERGED_DIR), help="output folder")
    parser.add_argument("--no-plot", action="store_true", help="do not draw coverage.png")
    args = parser.parse_args(argv)
    try:
        summaries = find_summaries(args.paths)
        target = merge_files(summaries, args.output, plot=not args.no_plot)
    except (OSError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    print((args.output / TABLE_NAME).read_text(encoding="utf-8"), end="")
    print(f"merged {len(summaries)} summaries into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
