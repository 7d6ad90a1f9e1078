"""Read-backs: the value classes, the digest, the @RB line, the executor flag and the corpus's use of them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.runner import CampaignConfig
from avocado_iofuzz.executor.protocol import ReadBack, executor_command, parse_line
from avocado_iofuzz.guided.batch import Base, Batch
from avocado_iofuzz.guided.corpus import READBACK_ALONE_FOUND, Corpus, Entry, load_corpus, save_corpus
from avocado_iofuzz.guided.readback import (
    CLASSES,
    LATCHES,
    MAX_PAIRS,
    Latches,
    check_mode,
    digest,
    features_of,
    is_feature,
    kept,
    popcount_bucket,
    read_back_slots,
    value_class,
)
from avocado_iofuzz.guided.rounds import GuidedRun, round_config
from avocado_iofuzz.guided.schedule import Round
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE
from avocado_iofuzz.model.generator import mix64

BAR = Base("mmio", 0xFEB80000, 0xFEB8FFFF, 4, "0000:00:03.0 BAR0")
SCRATCH = (SCRATCH_BASE, SCRATCH_SIZE)


@pytest.mark.parametrize(
    ("value", "width", "written", "scratch", "expected"),
    [
        (0, 4, None, None, None),  # the reset state: no pair
        (0x1_0000_0000, 4, None, None, None),  # wider than the register: only its bytes count
        (0xFF, 1, None, None, "f"),
        (0xFFFF, 4, None, None, "m"),  # all ones of two bytes is no all-ones of four: many bits
        (0x1234, 2, 0x1234, None, "w"),
        (0xFFFF, 2, 0xFFFF, None, "f"),  # all ones first: an unassigned port also "returns" it
        (SCRATCH_BASE + 0x40, 4, None, SCRATCH, "s"),
        (SCRATCH_BASE + 0x40, 4, None, None, "b02"),  # no scratch memory in the run: plain bits
        (SCRATCH_BASE >> 12, 4, None, SCRATCH, "p"),
        ((SCRATCH_BASE + SCRATCH_SIZE) >> 12, 4, None, SCRATCH, "b42"),  # one frame past the end
        (0x1, 4, None, None, "b10"),  # nvme CSTS.RDY
        (0x3, 1, None, None, "b31"),  # virtio ACKNOWLEDGE | DRIVER
        (0x8011, 4, None, None, "b12"),  # ahci PxCMD.ST | FRE | CR
        (0x1FF, 4, None, None, "m"),
        (0xFFFF_FFFF_FFFF_FFF0, 8, None, None, "m"),
    ],
)
def test_values_fall_into_classes(value, width, written, scratch, expected):
    assert value_class(value, width, written, scratch) == expected


def test_every_class_is_one_the_line_and_the_features_accept():
    assert len(CLASSES) == 5 + 16 * 4
    assert [popcount_bucket(v) for v in (1, 3, 7, 0xF, 0x1F, 0xFF)] == [0, 1, 2, 2, 3, 3]
    for many_or_none in (0, 0x1FF):
        with pytest.raises(ValueError, match=r"popcount bucket is for 1\.\.8 set bits"):
            popcount_bucket(many_or_none)


def test_the_latches_remember_the_last_write_per_address_width_and_space_and_forget_on_a_collision():
    latches = Latches()
    latches.store("pio", 0x80, 1, 5)
    latches.store("pio", 0x80, 1, 6)
    assert latches.last("pio", 0x80, 1) == 6
    assert latches.last("pio", 0x80, 2) is None and latches.last("mmio", 0x80, 1) is None
    slot = mix64(Latches._key("pio", 0x80, 1)) % LATCHES
    other = next(a for a in range(0x81, 1 << 20) if mix64(Latches._key("pio", a, 1)) % LATCHES == slot)
    latches.store("pio", other, 1, 7)  # shares the entry: the executor's table forgets 0x80
    assert latches.last("pio", 0x80, 1) is None and latches.last("pio", other, 1) == 7


def test_a_digest_skips_zeros_and_keeps_the_first_pairs_only():
    reads = [(4 * i, 0 if i % 2 else i + 1) for i in range(64)]
    pairs = digest(reads, 4)
    assert len(pairs) == MAX_PAIRS and all(offset % 8 == 0 for offset, _ in pairs)
    assert pairs[0] == (0, "b10") and pairs[-1][0] == 8 * (MAX_PAIRS - 1)
    assert digest([(0, 5), (4, 6)], 4, written={0: 5}) == ((0, "w"), (4, "b61"))
    assert read_back_slots([12, 0, 12, 4, *range(100, 200)]) == [0, 4, 12, *range(100, 113)]


def test_the_rb_line_parses_and_a_garbled_one_is_no_message():
    assert parse_line("@RB 7 0:w 1c:b10 40:s 44:p 48:f") == ReadBack(
        7, ((0, "w"), (0x1C, "b10"), (0x40, "s"), (0x44, "p"), (0x48, "f"))
    )
    assert parse_line("\x1b[6n# @RB 3") == ReadBack(3, ())  # nothing but zeros read
    assert parse_line("@RB 2 8:m") == ReadBack(2, ((8, "m"),))
    for garbled in ("@RB 7 0:x", "@RB 7 0:b14", "@RB 7 0w", "@RB x"):
        assert parse_line(garbled) is None


def test_features_name_registers_from_the_device_ranges_start():
    batch = Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 5, 3, fuzz_only=True)
    features = features_of(batch, ((0, "s"), (0xC, "b10")))
    assert features == [f"rb:{BAR.key()}+0x100=s", f"rb:{BAR.key()}+0x10c=b10"]
    assert all(is_feature(f) for f in features)
    assert not is_feature("rb:pio:0xe0-0xe3/1+0x0=zz") and not is_feature("e1000e_tx_descr#1")


@pytest.mark.parametrize("last", [False, True])
def test_a_round_with_read_backs_off_runs_the_command_it_ran_before_read_backs(last):
    plans = [
        Batch(BAR, BAR.start, BAR.start + 0xF, 5, 3).plan(0),
        Batch(BAR, BAR.start, BAR.start + 7, 2, 1, fuzz_only=True).plan(1),
    ]
    base = CampaignConfig()
    off = round_config(base, last, "off")
    assert not off.readback
    assert off.done_linger == (base.done_linger if last else min(base.done_linger, 0.2))
    assert "--readback" not in executor_command(plans, readback=off.readback).split()
    for mode in ("steps", "all"):  # steps needs the digests too (the host keeps the fuzz-only steps' ones)
        assert "--readback" in executor_command(plans, readback=round_config(base, last, mode).readback).split()
    with pytest.raises(ValueError, match="read-back mode 'on': expected one of off, steps, all"):
        round_config(base, last, "on")


def test_the_mode_says_which_batches_read_backs_become_features():
    sweep = Batch(BAR, BAR.start, BAR.start + 0xF, 5, 3)
    step = Batch(BAR, BAR.start, BAR.start + 7, 2, 1, fuzz_only=True)
    assert [(kept(m, sweep), kept(m, step)) for m in ("off", "steps", "all")] == [
        (False, False), (False, True), (True, True),
    ]  # fmt: skip
    assert check_mode("steps") == "steps"
    with pytest.raises(ValueError, match="expected one of off, steps, all"):
        kept("sweeps", step)


def test_a_blind_control_cannot_take_read_backs():
    run = GuidedRun.__new__(GuidedRun)  # __post_init__ alone: no VM, no coverage needed before the check
    run.read_backs, run.count_hits = "all", False
    with pytest.raises(ValueError, match=r"read-backs \(all\) feed a guided corpus"):
        GuidedRun.__post_init__(run)


def test_an_entry_read_backs_alone_made_starts_with_one_features_energy():
    program = (Batch(BAR, BAR.start, BAR.start + 0xF, 5, 3),)
    flood = [f"rb:{BAR.key()}+{o:#x}=b{o % 16:x}0" for o in range(0, 64, 4)]  # a sweep moving 16 registers
    alone = Entry(program, (), features=tuple(flood))
    assert alone.by_readback_alone
    assert alone.energy() == 4 * READBACK_ALONE_FOUND  # not 4 * 16
    one_hit = Entry(program, (), features=("virtio_blk_req#1",))
    assert alone.energy() == one_hit.energy()
    # with a hit-count feature or an event beside them, read-backs count in full
    mixed = Entry(program, (), features=("virtio_blk_req#1", *flood))
    assert not mixed.by_readback_alone and mixed.energy() == 4 * 17
    evented = Entry(program, ("virtio_blk_req",), features=tuple(flood))
    assert not evented.by_readback_alone and evented.energy() == 4 * (4 + 16)
    # what its children find still raises it; picks still lower it
    alone.finds, alone.picks = 10, 1
    assert alone.energy() == (4 * (READBACK_ALONE_FOUND + 20)) // 2


def test_only_a_readback_command_carries_the_flag():
    plan = Batch(BAR, BAR.start, BAR.start + 0xF, 5, 3).plan(0)
    assert "--readback" not in executor_command([plan])
    assert "--readback" in executor_command([plan], readback=True).split()
    with pytest.raises(ValueError, match="readback does not combine"):
        executor_command([plan], readback=True, limit_loop=True)


def test_the_executor_takes_the_flag_and_refuses_it_where_it_prints_nothing(executor):
    args = [str(executor), "--seed", "1", "--fuzz-count", "2"]
    plain = subprocess.run([*args, "--dry-run", "0xe0-0xe3"], capture_output=True, text=True, timeout=30)
    flagged = subprocess.run([*args, "--dry-run", "--readback", "0xe0-0xe3"], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    assert flagged.returncode == 0 and flagged.stdout == plain.stdout  # same ops; a dry run reads nothing
    refused = subprocess.run([*args, "--limit-loop", "--readback", "0xe0-0xe3"], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    assert refused.returncode == 2 and "--readback combines with neither" in refused.stdout


def test_a_batch_whose_register_reads_back_a_new_class_joins_the_corpus(tmp_path):
    a, b = (Batch(BAR, BAR.start + 16 * i, BAR.start + 16 * i + 15, i, 4, fuzz_only=True) for i in range(2))
    corpus = Corpus("7.2.15", "pc-nvme")
    played = Round(1, 0, (a, b), ("fresh",) * 2)
    rb_a, rb_b = features_of(a, ((0, "w"),)), features_of(b, ((0, "w"), (4, "b10")))
    new = corpus.absorb(played, {}, {0: rb_a, 1: rb_b})
    assert new == {0: rb_a, 1: rb_b} and [e.features for e in corpus.entries] == [tuple(rb_a), tuple(rb_b)]
    assert corpus.absorb(played, {}, {0: rb_a, 1: rb_b}) == {}  # known classes earn nothing
    path = tmp_path / "c.json"
    save_corpus(corpus, path)
    loaded, _ = load_corpus(path, "7.2.15", "pc-nvme")
    assert loaded.entries == corpus.entries
    record = json.loads(Path(path).read_text())
    record["entries"][0]["features"] = ["rb:mmio:0x0-0xf/4+0x0=huh"]
    path.write_text(json.dumps(record))
    bad, message = load_corpus(path, "7.2.15", "pc-nvme")
    assert bad.entries == [] and "'features' must be a list" in message
