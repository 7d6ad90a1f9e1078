"""The command-line side of `--criu` and `--shard`, kept apart from the CLI's own module."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from sockstates import shard
from sockstates.explore import Found


def _shard(text: str) -> tuple[int, int]:
    try:
        return shard.parse_shard(text)
    except shard.ShardError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser, modes: argparse._ArgumentGroup) -> None:
    modes.add_argument("--criu", action="store_true",
                       help="checkpoint and restore each state with CRIU and check it comes back intact (root)")
    group = parser.add_argument_group("--criu")
    group.add_argument("--criu-bin", default="criu", metavar="PATH", help="the criu to run (default: criu on PATH)")
    group.add_argument("--out", type=Path, default=Path("sockstates-criu"), metavar="DIR",
                       help="results.jsonl, summary.json and reproducers go here (default ./sockstates-criu)")
    group.add_argument("--keep-images", action="store_true", help="keep CRIU's images of failed states in DIR/images")
    parser.add_argument("--shard", type=_shard, default=(1, 1), metavar="K/N",
                        help="only shard K of N of the states (round robin over the search order)")


def only_shard(found: Iterable[Found], args: argparse.Namespace) -> Iterator[Found]:
    index, count = args.shard
    return (state for _, state in shard.take(found, index, count))


def run(found: Iterable[Found], args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Check the (already sharded) states; exit status 0 when all came back intact."""
    from sockstates import criu

    index, count = args.shard
    # positions in the whole search, so that the results of shards merge cleanly
    positions = itertools.count(index - 1, count)
    config = criu.CriuConfig(criu=args.criu_bin, keep_images=args.keep_images)
    try:
        summary = criu.sweep(found, config, args.out, out, indexed=positions)
    except criu.CriuSetupError as e:
        print(f"sockstates: {e}", file=sys.stderr)
        return 2
    return 0 if summary.counts["failed"] == summary.counts["error"] == 0 else 1
