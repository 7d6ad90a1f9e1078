"""What the guest lists and what it lets us access, asked through its shell.

The pure halves (turning the listings into targets, the executor's
``--check`` output into kept plans) live in model/kinds.py; this module only
runs the commands in the guest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from avocado_iofuzz.executor.protocol import NoScratch, executor_command, parse_line
from avocado_iofuzz.model.dma import VALUES_DMA, VALUES_UNIFORM
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC
from avocado_iofuzz.model.kinds import KindParams, Listings, check_output, drop_refused
from avocado_iofuzz.model.pci import PCI_LISTING_COMMAND
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, RangePlan

LOG = logging.getLogger("avocado.test.iofuzz")

# where the listings read are kept in the test's output dir
IOMEM_FILE = "proc-iomem.txt"
PCI_FILE = "pci-resources.txt"


def read_listings(session: Any, kinds: KindParams, outdir: Path | None = None) -> Listings:
    """Read ``/proc/iomem`` and the PCI listing in the guest (only what the chosen kinds need)."""
    iomem = session.cmd_output("cat /proc/iomem", timeout=60) if SPACE_MMIO in kinds.weights else ""
    needs_pci = SPACE_MMIO in kinds.weights or SPACE_PCI in kinds.weights or bool(kinds.only_pci.strip())
    pci = session.cmd_output(PCI_LISTING_COMMAND, timeout=120) if needs_pci else ""
    if outdir is not None:
        for name, content in ((IOMEM_FILE, iomem), (PCI_FILE, pci)):
            if content:
                (outdir / name).write_text(content, encoding="utf-8")
    return Listings(iomem, pci)


def check_access(session: Any, plans: Sequence[RangePlan], binary: str, timeout: float = 120) -> list[RangePlan]:
    """Run the executor's ``--check`` in the guest and keep the plans it may access (see drop_refused)."""
    if not plans:
        return []
    output = session.cmd_output(executor_command(plans, check=True, binary=binary), timeout=timeout)
    plans = uniform_without_scratch(plans, output)
    kept, refusals = drop_refused(plans, check_output(output))
    for refusal in refusals:
        LOG.warning("left out: range %s (%s) -- %s", refusal.plan.name, refusal.plan.space, refusal.reason)
    return kept


def scratch_reserved(session: Any, plans: Sequence[RangePlan], binary: str, timeout: float = 120) -> bool:
    """Whether the guest has the scratch memory reserved (what the bring-up recipes point devices at).

    ``plans``: as :func:`check_access` left them. A kept ``dma`` plan answers
    yes already (the check found the memory); in a uniform run the check
    never looked, so the executor's ``--check`` runs once more with the first
    plan switched to ``dma``: a probe that touches no register, only asks.
    """
    if not plans:
        return False
    if any(plan.values == VALUES_DMA for plan in plans):
        return True
    probe = [replace(plans[0], values=VALUES_DMA)]
    output = session.cmd_output(executor_command(probe, check=True, binary=binary), timeout=timeout)
    reason = no_scratch_reason(output)
    if reason is not None:
        LOG.info("no scratch memory in this guest (%s)", reason)
    return reason is None


def no_scratch_reason(check_output_text: str) -> str | None:
    """The first ``@NOSCRATCH`` reason of an executor ``--check`` output, None if it reports none."""
    for message in map(parse_line, check_output_text.splitlines()):
        if isinstance(message, NoScratch):
            return message.reason
    return None


def uniform_without_scratch(plans: Sequence[RangePlan], check_output_text: str) -> list[RangePlan]:
    """The plans, with uniform values instead of DMA-aware ones if the check found no scratch memory.

    A guest whose kernel command line reserves no scratch memory (your own
    image, a kernel booted without the embedded guests' ``memmap=``) is still
    fuzzed, as before DMA-aware values existed; the log says why.
    """
    reason = no_scratch_reason(check_output_text)
    if reason is None:
        return list(plans)
    changed = [p for p in plans if p.values != VALUES_UNIFORM]
    LOG.warning(
        "fuzz_values: no scratch memory in this guest (%s): %d range(s) get uniform values instead",
        reason,
        len(changed),
    )
    return [replace(p, values=VALUES_UNIFORM, layout=LAYOUT_GENERIC) for p in plans]
