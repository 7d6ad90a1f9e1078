"""Bring-up recipes: the package's table loads, bad tables are refused naming the recipe and step, the mapping."""

from __future__ import annotations

import logging

import pytest

from avocado_iofuzz.guided.batch import Base, Batch
from avocado_iofuzz.guided.recipes import AppliedRecipe, RecipeError, applicable, load, recipes_for_run, resolve_value
from avocado_iofuzz.model.dma import SCRATCH_BASE
from avocado_iofuzz.model.dma_layouts import LAYOUTS
from avocado_iofuzz.model.pci import IORESOURCE_IO, IORESOURCE_MEM, PciFunction, PciResource

VIRTIO_BLK = PciFunction(0, 0, 3, 0, 0x1AF4, 0x1001, 0x010000, (
    PciResource(0, 0xC000, 0xC03F, IORESOURCE_IO), PciResource(4, 0xFEB00000, 0xFEB03FFF, IORESOURCE_MEM),
))  # fmt: skip
VIRTIO_NET = PciFunction(0, 0, 4, 0, 0x1AF4, 0x1000, 0x020000, (PciResource(0, 0xC040, 0xC05F, IORESOURCE_IO),))
NVME = PciFunction(0, 0, 5, 0, 0x1B36, 0x0010, 0x010802, (PciResource(0, 0xFEB10000, 0xFEB13FFF, IORESOURCE_MEM),))
BLK_IO = Base("pio", 0xC000, 0xC03F, 1, "0000:00:03.0 BAR0 virtio-pci", "dma", "virtio")
NET_IO = Base("pio", 0xC040, 0xC05F, 1, "0000:00:04.0 BAR0 virtio-pci", "dma", "virtio")
NVME_BAR = Base("mmio", 0xFEB10000, 0xFEB13FFF, 4, "0000:00:05.0 BAR0 nvme", "dma", "nvme")
# the same ranges in a run with the default fuzz_values = uniform (generic layout)
BLK_UNIFORM = Base("pio", 0xC000, 0xC03F, 1, "0000:00:03.0 BAR0 virtio-pci")
NVME_UNIFORM = Base("mmio", 0xFEB10000, 0xFEB13FFF, 4, "0000:00:05.0 BAR0 nvme")

GOOD = """
[[recipe]]
name = "x"
family = "virtio"
bar = 0
steps = [ { at = 0x12, width = 1, value = 0 }, { at = 0x08, width = 4, value = "scratch_pfn" } ]
"""


def test_the_package_table_loads_and_covers_the_dma_families():
    recipes = load()
    assert {r.family for r in recipes} >= {"virtio", "nvme", "ahci", "e1000", "ehci", "uhci", "megasas"}
    assert all(r.family in LAYOUTS and r.steps for r in recipes)
    assert len({r.name for r in recipes}) == len(recipes)


def test_scratch_expressions_resolve_on_the_host():
    assert resolve_value(0x46) == 0x46
    assert resolve_value("scratch") == SCRATCH_BASE
    assert resolve_value("scratch + 0x2000") == SCRATCH_BASE + 0x2000
    assert resolve_value("scratch_pfn") == SCRATCH_BASE >> 12
    assert resolve_value("scratch_pfn + 1") == (SCRATCH_BASE >> 12) + 1
    with pytest.raises(RecipeError, match="expected a number or 'scratch'"):
        resolve_value("scratch * 2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("family = \"virtio\"", "family = \"floppy\""), "recipe 'x': family 'floppy' is not a scratch layout"),
        (("bar = 0", "bar = 7"), "recipe 'x' step 1: bar must be 0-5"),
        (("width = 1, value = 0", "width = 3, value = 0"), "recipe 'x' step 1: width must be one of"),
        (("at = 0x08, width = 4", "at = 0x0a, width = 4"), "recipe 'x' step 2: offset 0xa is not aligned"),
        (("width = 1, value = 0", "width = 1, value = 0x100"), "recipe 'x' step 1: value 256 .* does not fit 1"),
        (("value = \"scratch_pfn\"", "value = \"scratch + 0x4000\""), "step 2: 'scratch \\+ 0x4000' points outside"),
        (("value = \"scratch_pfn\"", "value = \"scratchy\""), "recipe 'x' step 2: value 'scratchy'"),
        (("at = 0x12,", "at = 0x12, size = 1,"), "recipe 'x' step 1: unknown keys \\['size'\\]"),
        (("bar = 0", "bar = 0\nids = [\"1AF4:1000\"]"), "recipe 'x': 'ids' must be a list of 'vvvv:dddd'"),
        (("steps = [", "steps = [] #"), "recipe 'x': 'steps' must be a non-empty list"),
        (("family = \"virtio\"", "family = \"generic\""), "generic family must name its devices' ids"),
        (("bar = 0", "bar = 0\nlayout = \"floppy\""), "recipe 'x': layout 'floppy' is not a device scratch layout"),
        (("bar = 0", "bar = 0\nlayout = \"generic\""), "recipe 'x': layout 'generic' is not a device scratch"),
    ],
)
def test_a_bad_table_is_refused_naming_the_recipe_and_step(change, message):
    with pytest.raises(RecipeError, match=message):
        load(GOOD.replace(*change))


def test_a_table_with_one_name_twice_or_no_recipes_is_refused():
    with pytest.raises(RecipeError, match="names used twice: x"):
        load(GOOD + GOOD)
    with pytest.raises(RecipeError, match="no \\[\\[recipe\\]\\] tables"):
        load("")
    with pytest.raises(RecipeError, match="not TOML"):
        load("[[recipe]\n")


def test_recipes_map_onto_the_functions_bar_ranges_with_resolved_values():
    applied = {(r.name, r.function): r for r in applicable(load(), [VIRTIO_BLK, VIRTIO_NET, NVME],
                                                           [BLK_IO, NET_IO, NVME_BAR])}  # fmt: skip
    assert set(applied) == {
        ("virtio-legacy-queue0", "0000:00:03.0"),
        ("virtio-legacy-queue0", "0000:00:04.0"),
        ("virtio-net-legacy-tx", "0000:00:04.0"),  # only virtio-net has a transmit queue 1
        ("virtio-blk-requests", "0000:00:03.0"),  # and only virtio-blk takes block requests
        ("virtio-blk-requests-writethrough", "0000:00:03.0"),
        ("nvme-admin-queue", "0000:00:05.0"),
        ("nvme-io-queues", "0000:00:05.0"),
    }
    blk = applied["virtio-legacy-queue0", "0000:00:03.0"]
    assert blk.origin == "recipe:virtio-legacy-queue0"
    assert [(w.base, w.address, w.width) for w in blk.writes[:2]] == [(BLK_IO, 0xC012, 1)] * 2
    pfn = blk.writes[5]
    assert (pfn.address, pfn.width, pfn.value) == (0xC008, 4, SCRATCH_BASE >> 12)
    nvme = applied["nvme-admin-queue", "0000:00:05.0"]
    assert [(w.address, w.value) for w in nvme.writes if w.address in (0xFEB10028, 0xFEB10030)] == [
        (0xFEB10028, SCRATCH_BASE), (0xFEB10030, SCRATCH_BASE + 0x2000)
    ]  # fmt: skip
    assert nvme.writes[-1].address == 0xFEB11000  # the admin doorbell


def test_a_recipe_on_a_range_the_run_does_not_fuzz_is_dropped(caplog):
    caplog.set_level(logging.DEBUG, logger="avocado.iofuzz.guided")
    narrow = Base("mmio", 0xFEB10000, 0xFEB10FFF, 4, "0000:00:05.0 BAR0 nvme", "dma", "nvme")  # no doorbell page
    assert applicable(load(), [NVME], [narrow]) == []
    assert "nvme-admin-queue does not apply to 0000:00:05.0: step 8: no mmio range" in caplog.text
    unassigned = PciFunction(0, 0, 3, 0, 0x1AF4, 0x1001, 0x010000, ())
    assert applicable(load(), [unassigned], [BLK_IO]) == []
    assert "the function has no assigned BAR0" in caplog.text


# --- the guided schedule with recipes ---------------------------------------------------------------


def _family_recipes():
    """The package's recipes that fill their range's (or family's) layout; those naming their own have tests below."""
    return [recipe for recipe in load() if not recipe.layout]


def _run_recipes():
    return applicable(_family_recipes(), [VIRTIO_BLK, NVME], [BLK_IO, NVME_BAR])


def test_round_zero_runs_each_recipe_with_several_fills_before_the_sweeps():
    from avocado_iofuzz.guided.corpus import Corpus
    from avocado_iofuzz.guided.schedule import RECIPE_TRIES, GuidedSchedule

    recipes = _run_recipes()
    played = GuidedSchedule([BLK_IO, NVME_BAR], 9, recipes=recipes).next_round(0, Corpus("q", "k"), 50_000)
    programs = list(played.spans())
    recipe_programs = [p for first, p in programs if played.origins[first].startswith("recipe:")]
    assert len(recipe_programs) == RECIPE_TRIES * len(recipes)
    assert [played.origins[first] for first, _ in programs[: len(recipes)]] == [r.origin for r in recipes]
    assert [played.origins[first] for first, _ in programs[len(recipe_programs) :]] == ["sweep", "sweep"]
    blk = recipe_programs[0]
    assert [(e.start, e.width, e.fixed, e.fuzz_count) for e in blk] == [
        (w.address, w.width, w.value, 1) for w in recipes[0].writes
    ]
    # only the pointer step fills the scratch memory (dma values); the others leave it as the device wrote it
    assert [e.values for e in blk] == ["uniform"] * 5 + ["dma"] + ["uniform"] * 2
    fills = {blk_try[5].seed for blk_try in recipe_programs[:: len(recipes)]}
    assert len(fills) == RECIPE_TRIES  # each try its own scratch fill
    plans = [e.plan(i) for i, e in enumerate(blk)]
    assert [op.value for plan in plans for op in plan.ops()] == [w.value for w in recipes[0].writes]


def test_the_schedule_with_recipes_is_a_pure_function_and_rebuilds_from_the_summary():
    import json

    from avocado_iofuzz.guided.corpus import Corpus
    from avocado_iofuzz.guided.rebuild import rebuild_rounds, recipes_from
    from avocado_iofuzz.guided.schedule import GuidedSchedule

    recipes = _run_recipes()
    live = Corpus("q", "k")
    schedule = GuidedSchedule([BLK_IO, NVME_BAR], 9, recipes=recipes)
    records = []
    for number in range(5):
        played = schedule.next_round(number, live, 20_000)
        new = {len(played.batches) - 1 - number: [f"event_{number}"], 7: ["virtqueue_pop"]}
        live.absorb(played, new)
        batches = [{**b.as_dict(), "new_events": new.get(i, [])} for i, b in enumerate(played.batches)]
        records.append({"ops_asked": 20_000, "batches": batches})
    # the blk recipe's notify (element 7 of round 0) reached virtqueue_pop: the recipe is a corpus entry
    assert live.entries[0].origin == "recipe:virtio-legacy-queue0" and live.entries[0].events == ("virtqueue_pop",)
    assert all(e.fixed is not None for e in live.entries[0].program)
    stored = json.loads(json.dumps([r.as_dict() for r in recipes]))
    rebuilt = rebuild_rounds(9, [BLK_IO, NVME_BAR], Corpus("q", "k"), records, recipes_from(stored))
    again = GuidedSchedule([BLK_IO, NVME_BAR], 9, recipes=recipes_from(stored)).next_round(0, Corpus("q", "k"), 20_000)
    assert rebuilt[0].batches == again.batches
    assert [tuple(r.batches) for r in rebuilt] == [
        tuple(Batch.from_dict(b) for b in record["batches"]) for record in records
    ]
    without = rebuild_rounds(9, [BLK_IO, NVME_BAR], Corpus("q", "k"), records[:1])
    assert without[0].batches != rebuilt[0].batches  # the recipes are part of what the rounds depend on


def test_a_schedule_refuses_recipes_on_ranges_it_does_not_fuzz():
    from avocado_iofuzz.guided.schedule import GuidedSchedule

    refused = "recipes \\['nvme-admin-queue', 'nvme-io-queues'\\] write to ranges the run does not fuzz"
    with pytest.raises(ValueError, match=refused):
        GuidedSchedule([BLK_IO], 9, recipes=_run_recipes())


def test_an_applied_recipe_round_trips_and_a_bad_record_is_named():
    recipe = _run_recipes()[1]
    assert AppliedRecipe.from_dict(recipe.as_dict()) == recipe
    with pytest.raises(RecipeError, match="applied recipe record is not usable"):
        AppliedRecipe.from_dict({"name": "x", "function": "y", "writes": [{"address": 1}]})


def test_recipes_for_a_run_say_why_there_are_none(caplog):
    caplog.set_level(logging.INFO, logger="avocado.iofuzz.guided")
    assert recipes_for_run(False, [VIRTIO_BLK], [BLK_IO], scratch=True) == []
    assert "recipes off (guided_recipes = no)" in caplog.text
    caplog.clear()
    for bases in ([BLK_IO], [BLK_UNIFORM]):  # without scratch memory no recipe, whatever the ranges' values
        assert recipes_for_run(True, [VIRTIO_BLK], bases, scratch=False) == []
    none = "no bring-up recipes: they point devices at the scratch memory, and this guest has none"
    assert caplog.text.count(none) == 2
    for bases in ([BLK_IO], [BLK_UNIFORM]):
        names = [r.name for r in recipes_for_run(True, [VIRTIO_BLK], bases, scratch=True)]
        assert names == ["virtio-legacy-queue0", "virtio-blk-requests", "virtio-blk-requests-writethrough"]


def test_recipes_left_out_by_name_are_left_out_and_said(caplog):
    caplog.set_level(logging.INFO, logger="avocado.iofuzz.guided")
    skip = ("virtio-blk-requests", "ehci-msd")  # one that applies, one that would not anyway
    names = [r.name for r in recipes_for_run(True, [VIRTIO_BLK], [BLK_IO], scratch=True, skip=skip)]
    assert names == ["virtio-legacy-queue0", "virtio-blk-requests-writethrough"]
    assert "bring-up recipes left out (guided_recipes_skip): virtio-blk-requests, ehci-msd" in caplog.text


def test_the_trace_carries_the_applied_recipes_in_round_zeros_record(tmp_path):
    from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
    from avocado_iofuzz.guided.rebuild import recipes_from_trace

    recipes = _run_recipes()
    with TraceWriter(tmp_path / "t.iofuzz", {"seed": 9}) as writer:
        writer.event("guided_round", round=0, seed=9, parent=None, first_range=0, ops=1, origins=[], programs=[],
                     recipes=[r.as_dict() for r in recipes])  # fmt: skip
    assert recipes_from_trace(read_trace(tmp_path / "t.iofuzz").events) == recipes
    with TraceWriter(tmp_path / "old.iofuzz", {"seed": 9}) as writer:  # a trace from before recipes
        writer.event("guided_round", round=0, seed=9, parent=None, first_range=0, ops=1, origins=[], programs=[])
    assert recipes_from_trace(read_trace(tmp_path / "old.iofuzz").events) == []


def test_rounds_grown_from_recipe_programs_stay_valid():
    """Children of recipe programs (fixed steps mutated, spliced, widened...) are batches the model accepts.

    Before fixed-step mutations existed, a width mutation kept a 4-byte fixed value on a 1-byte step and
    the schedule raised BatchError in one run of two.
    """
    from avocado_iofuzz.guided.corpus import Corpus
    from avocado_iofuzz.guided.schedule import GuidedSchedule

    recipes = _run_recipes()
    for seed in range(10):
        live = Corpus("q", "k")
        schedule = GuidedSchedule([BLK_IO, NVME_BAR], seed, recipes=recipes)
        for number in range(8):
            played = schedule.next_round(number, live, 20_000)
            assert all(batch.plan(i) for i, batch in enumerate(played.batches))
            live.absorb(played, {i: [f"e{number}_{i}"] for i in range(0, len(played.batches), 3)})
        assert any(entry.origin.startswith("recipe:") for entry in live.entries)


# --- recipes in a run with uniform values ----------------------------------------------------------


def _uniform_recipes():
    return applicable(_family_recipes(), [VIRTIO_BLK, NVME], [BLK_UNIFORM, NVME_UNIFORM])


def test_a_recipe_that_names_its_own_layout_fills_it_on_dma_and_uniform_ranges_alike():
    own = GOOD.replace("bar = 0", "bar = 0\nlayout = \"nvme\"")  # any device layout but the range's
    (recipe,) = load(own)
    assert recipe.layout == "nvme" and load(GOOD)[0].layout == ""
    for base in (BLK_IO, BLK_UNIFORM):
        (applied,) = applicable([recipe], [VIRTIO_BLK], [base])
        reset, pointer = applied.program(7)
        assert (reset.values, reset.layout) == ("uniform", "")  # a plain register write fills nothing
        assert (pointer.plan(0).values, pointer.plan(0).layout) == ("dma", "nvme")
        assert AppliedRecipe.from_dict(applied.as_dict()) == applied  # the summary keeps the layout
    (plain,) = applicable(load(GOOD), [VIRTIO_BLK], [BLK_IO])
    assert plain.program(7)[1].plan(0).layout == "virtio"  # no layout named: the range's, as before
    assert "layout" not in plain.as_dict()["writes"][1]


def test_in_a_uniform_run_only_the_pointer_steps_fill_the_scratch_with_the_family_layout():
    from avocado_iofuzz.guided.corpus import Corpus
    from avocado_iofuzz.guided.schedule import GuidedSchedule

    recipes = _uniform_recipes()
    assert [r.name for r in recipes] == [r.name for r in _run_recipes()]  # the same recipes as in a dma run
    played = GuidedSchedule([BLK_UNIFORM, NVME_UNIFORM], 9, recipes=recipes).next_round(0, Corpus("q", "k"), 50_000)
    seen_pointers = 0
    for first, program in played.spans():
        origin = played.origins[first]
        for element in program:
            plan = element.plan(0)
            pointer = origin.startswith("recipe:") and element.values == "dma"
            if pointer:
                seen_pointers += 1
                family = "virtio" if element.base == BLK_UNIFORM else "nvme"
                assert (plan.values, plan.layout) == ("dma", family)
            else:  # every other recipe step and every sweep: uniform values, as the run planned
                assert (plan.values, plan.layout) == ("uniform", "generic")
    pointers_per_try = sum(w.points for r in recipes for w in r.writes)
    assert pointers_per_try >= 3 and seen_pointers % pointers_per_try == 0 and seen_pointers
    # the pointer steps are the recipes' scratch expressions, exactly
    for recipe in recipes:
        program = recipe.program(5)
        assert [e.values == "dma" for e in program] == [w.points for w in recipe.writes]


def test_a_uniform_run_with_recipes_is_a_pure_function_and_rebuilds_exactly():
    import json

    from avocado_iofuzz.guided.corpus import Corpus
    from avocado_iofuzz.guided.rebuild import rebuild_rounds, recipes_from
    from avocado_iofuzz.guided.schedule import GuidedSchedule

    bases = [BLK_UNIFORM, NVME_UNIFORM]
    recipes = _uniform_recipes()

    def rounds(schedule_recipes):
        corpus, played_rounds = Corpus("q", "k"), []
        schedule = GuidedSchedule(bases, 4, recipes=schedule_recipes)
        for number in range(6):
            played = schedule.next_round(number, corpus, 20_000)
            corpus.absorb(played, {i: [f"e{number}_{i}"] for i in range(0, len(played.batches), 4)})
            played_rounds.append(played)
        return played_rounds

    first, second = rounds(recipes), rounds(recipes)
    assert [r.batches for r in first] == [r.batches for r in second]
    assert any(b.layout for r in first[1:] for b in r.batches)  # children of recipe programs keep their fills
    records = [{"ops_asked": 20_000, "batches": [
        {**b.as_dict(), "new_events": [f"e{n}_{i}"] if i % 4 == 0 else []} for i, b in enumerate(r.batches)
    ]} for n, r in enumerate(first)]  # fmt: skip
    stored = json.loads(json.dumps([r.as_dict() for r in recipes]))
    assert recipes_from(stored) == recipes
    records = json.loads(json.dumps(records))
    rebuilt = rebuild_rounds(4, bases, Corpus("q", "k"), records, recipes_from(stored))
    assert [r.batches for r in rebuilt] == [r.batches for r in first]
    for record, played in zip(records, first, strict=True):  # the trace's batches replay as the same plans
        assert [Batch.from_dict(b).plan(i) for i, b in enumerate(record["batches"])] == [
            b.plan(i) for i, b in enumerate(played.batches)
        ]


def test_without_recipes_a_uniform_guided_run_and_a_blind_one_are_unchanged():
    """The layout field is only ever set on recipe pointer steps: no other batch record or command changes."""
    from avocado_iofuzz.executor.protocol import executor_command
    from avocado_iofuzz.guided.corpus import Corpus
    from avocado_iofuzz.guided.schedule import BlindSchedule, GuidedSchedule

    bases = [BLK_UNIFORM, NVME_UNIFORM]
    blind = BlindSchedule(bases, 4).next_round(2, Corpus("q", "k"), 20_000)
    corpus = Corpus("q", "k")
    schedule = GuidedSchedule(bases, 4)
    for number in range(4):
        played = schedule.next_round(number, corpus, 20_000)
        corpus.absorb(played, {0: [f"e{number}"]})
        for i, batch in enumerate(played.batches):
            assert "layout" not in batch.as_dict() and batch.values == "uniform"
            assert (batch.plan(i).values, batch.plan(i).layout) == ("uniform", "generic")
            command = executor_command([batch.plan(i)])
            assert "--scratch" not in command
    assert all("layout" not in b.as_dict() for b in blind.batches)
    assert "--scratch" not in executor_command([b.plan(i) for i, b in enumerate(blind.batches)])


def test_every_recipe_step_is_paced_before_it_runs_as_a_driver_waits():
    from avocado_iofuzz.executor.protocol import range_argument
    from avocado_iofuzz.guided.recipes import STEP_PAUSE_US

    for recipe in _run_recipes():
        for element in recipe.program(3):
            assert (element.pause_every, element.pause_us) == (1, STEP_PAUSE_US)  # a sleep before its one write
            assert range_argument(element.plan(0)).endswith(f"~1:{STEP_PAUSE_US}")
