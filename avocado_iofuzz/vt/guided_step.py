"""The fuzz step of a guided run (``fuzz_strategy = guided``): rounds on the test's VM, the corpus loaded and saved.

The run spends the op budget a blind run of the same params would
(``fuzz_count`` x slots of every range), in rounds of ``guided_round_ops``
(:mod:`avocado_iofuzz.guided.rounds`), into the test's one trace. The corpus
of the row's devices on this QEMU version is loaded before the first round
and saved after the last, also when the run ends early (a crash, a hang too
many): what it found is worth keeping.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avocado_iofuzz.campaign.runner import CampaignConfig, CampaignError, CampaignResult
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.guided.corpus import Corpus, corpus_key, corpus_path, load_corpus, qemu_version, save_corpus
from avocado_iofuzz.guided.recipes import recipes_for_run
from avocado_iofuzz.guided.rounds import GuidedRun, bases_of
from avocado_iofuzz.guided.schedule import GuidedSchedule
from avocado_iofuzz.model.layout_choice import LAYOUT_AUTO, guided_layouts
from avocado_iofuzz.model.pci import PciFunction
from avocado_iofuzz.model.program import RangePlan
from avocado_iofuzz.vm.process_guard import TimeUp
from avocado_iofuzz.vt.iofuzz_params import IofuzzRun

LOG = logging.getLogger("avocado.test.iofuzz")


@dataclass
class GuidedOutcome:
    """What the summary is written from: every batch as a range (numbered as in the trace), the merged result."""

    plans: list[RangePlan]
    result: CampaignResult
    summary: dict[str, Any]
    coverage_by_range: list[dict[str, Any]]
    error: str = ""  # a round could not go on (CampaignError): the test ERRORs after writing the summary
    interrupted: str = ""  # the test's time limit cut a round: the test ends INTERRUPTED after writing it


def guided_wanted(run: IofuzzRun, coverage: Any) -> bool:
    """True for a guided run that can be one; with coverage off it says why and the run goes blind."""
    if run.guided.strategy != "guided":
        return False
    if not coverage.enabled:
        reason = coverage.off_reason
        LOG.warning("fuzz_strategy = guided needs device coverage, which is off (%s): this run fuzzes blind", reason)
        return False
    return True


def open_corpus(run: IofuzzRun, qemu_cmdline: str) -> tuple[Corpus, Path]:
    """The corpus of this row's devices on this QEMU version, from avocado's data dir (or ``guided_corpus_dir``)."""
    version = qemu_version(_qemu_binary(qemu_cmdline))
    key = corpus_key(run.devices, run.machine_type or "pc")
    if run.guided.corpus_dir:
        root = Path(run.guided.corpus_dir).expanduser()
    else:
        from avocado_iofuzz.guest.cache import default_cache_root  # avocado's settings

        root = default_cache_root()
    path = corpus_path(root, version, key)
    corpus, message = load_corpus(path, version, key)
    LOG.info("guided: %s", message)
    return corpus, path


def fuzz_guided(
    run: IofuzzRun, guest: Any, session: Any, coverage: Any, seed: int, plans: Sequence[RangePlan],
    trace: TraceWriter, config: CampaignConfig, functions: Sequence[PciFunction] = (), scratch: bool = False,
) -> GuidedOutcome:  # fmt: skip
    """Rounds until the blind budget is spent, QEMU died or max_hangs hangs/reboots came; the corpus saved.

    ``functions``: the guest's PCI functions, which the bring-up recipes are applied to; ``scratch``: the guest
    has the scratch memory they point devices at (:func:`~avocado_iofuzz.campaign.guest_access.scratch_reserved`).
    """
    corpus, path = open_corpus(run, guest.qemu_cmdline())
    if run.fuzz.layout == LAYOUT_AUTO:  # guided's own layouts where auto gives generic (layout_choice)
        plans = guided_layouts(plans, functions)
    bases = bases_of(plans)
    recipes = recipes_for_run(run.guided.recipes, functions, bases, scratch, run.guided.skip_recipes)
    guided = GuidedRun(guest, GuidedSchedule(bases, seed, recipes=recipes), corpus, coverage, config, trace,
                       read_backs=run.guided.readback)  # fmt: skip
    budget = sum(plan.op_count for plan in plans)
    LOG.info(
        "guided: %d ops in rounds of about %d, from seed %d, over %d ranges; corpus %s",
        budget, run.guided.round_ops, seed, len(plans), path,
    )  # fmt: skip
    error = interrupted = ""
    try:
        while guided.ops_done < budget:
            left = budget - guided.ops_done
            record = guided.run_round(min(run.guided.round_ops, left), last=left <= run.guided.round_ops,
                                      session=session)  # fmt: skip
            session = None  # the round handed it back to the run (or closed it): the next round takes it from there
            hangs = sum(f.kind in ("hang", "reboot") for r in guided.rounds for f in r.result.findings)
            if record.result.crashed or record.result.stopped_early or not record.result.total_done:
                break
            if hangs >= config.max_hangs:
                LOG.warning("guided: stopping after %d hangs/reboots (max_hangs)", hangs)
                break
    except CampaignError as err:
        error = str(err)
    except TimeUp as up:  # the rounds so far are the run: summed up below, then the test is interrupted
        interrupted = str(up)
    finally:
        guided.close()
        save_corpus(corpus, path)
        LOG.info("guided: corpus of %d program(s) saved to %s", len(corpus.entries), path)
    summary = {**guided.summary(), "corpus": str(path), "ops_budget": budget, "round_ops": run.guided.round_ops}
    return GuidedOutcome(guided.plans(), guided.result(), summary, _coverage_by_range(guided), error, interrupted)


def _coverage_by_range(guided: GuidedRun) -> list[dict[str, Any]]:
    """summary.json's ``coverage.by_range`` for a guided run: each batch, numbered as in the trace."""
    entries = []
    for record in guided.rounds:
        for i, plan in enumerate(record.plans):
            entries.append(
                {
                    "index": plan.index,
                    "name": plan.name,
                    "span": f"{plan.start:#06x}-{plan.end:#06x}",
                    "space": plan.space,
                    "round": record.round.number,
                    "events": record.new_events.get(i, []),
                }
            )
    return entries


def _qemu_binary(cmdline: str) -> str:
    """The QEMU binary of the VM's command line (avocado-vt may put environment words before it)."""
    for word in shlex.split(cmdline):
        if "=" not in word:
            return word
    return shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
