"""Which strategy each row of the cfg matrix runs when the user names none.

Device rows default to guided (measured ahead of blind on the DMA-capable rows:
docs/results/performance.rst, "Guided fuzzing"); the rows without a device of
their own (no device row, platform) stay blind, and a user's
``--vt-extra-params fuzz_strategy=...`` wins over both.
"""

from __future__ import annotations

from avocado_iofuzz.vt.catalog import TestCatalog


def test_device_rows_are_guided_and_the_rows_without_a_device_blind():
    rows = TestCatalog().variants("iofuzz.quick", expand_all=True)
    guided = {r["shortname"] for r in rows if r["fuzz_strategy"] == "guided"}
    blind = {r["shortname"] for r in rows if r["fuzz_strategy"] == "blind"}
    assert guided | blind == {r["shortname"] for r in rows}
    assert guided == {r["shortname"] for r in rows if r.get("iofuzz_devices")}
    assert {"iofuzz.quick", "iofuzz.quick.q35", "iofuzz.quick.platform", "iofuzz.quick.platform.q35"} <= blind
    assert {"iofuzz.quick.nic.e1000e", "iofuzz.quick.storage.virtio_blk.q35", "iofuzz.quick.misc.edu"} <= guided


def test_the_users_strategy_wins_over_the_rows_default():
    (row,) = TestCatalog().variants("iofuzz.quick.nic.e1000e", extra_params=["fuzz_strategy=blind"])
    assert row["fuzz_strategy"] == "blind"
    (quick,) = TestCatalog().variants("iofuzz.quick", extra_params=["fuzz_strategy=guided"])
    assert quick["fuzz_strategy"] == "guided"
