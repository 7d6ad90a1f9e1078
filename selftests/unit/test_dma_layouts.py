"""Device layouts of the scratch memory: the structures each one draws, and the C executor's copy, byte for byte."""

from __future__ import annotations

import struct
import subprocess
from dataclasses import replace

import pytest
from dry_run_model import c_lines, python_lines

from avocado_iofuzz.executor.protocol import executor_command, range_argument
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_EPOCH_OPS, SCRATCH_SIZE, VALUES_DMA, scratch_fill
from avocado_iofuzz.model.dma_layouts import (
    LAYOUT_E1000,
    LAYOUT_EHCI,
    LAYOUT_EHCI_MSD,
    LAYOUT_GENERIC,
    LAYOUT_NVME,
    LAYOUT_UHCI,
    LAYOUT_VIRTIO,
    LAYOUTS,
    PID_IN,
    PID_OUT,
    PID_SETUP,
)
from avocado_iofuzz.model.program import RangePlan

DEVICE_LAYOUTS = LAYOUTS[1:]


def dwords(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def inside(address: int, length: int = 1) -> bool:
    return address >= SCRATCH_BASE and address + length <= SCRATCH_BASE + SCRATCH_SIZE


def layout_plans(seed: int, layout: str) -> list[RangePlan]:
    return [
        RangePlan(0, 0xC000, 0xC01F, "usb", seed, 600, 2, values=VALUES_DMA, layout=layout),
        RangePlan(1, 0xFEB00000, 0xFEB0007F, "bar", seed, 300, 4, "mmio", values=VALUES_DMA, layout=layout),
        RangePlan(2, 0xC040, 0xC05F, "generic neighbour", seed, 30, 4, values=VALUES_DMA),
    ]


@pytest.mark.parametrize("layout", DEVICE_LAYOUTS)
@pytest.mark.parametrize("seed", [0, 2**64 - 1, 0x5EED])
def test_c_layout_fills_identical_to_python(executor, layout, seed):
    plans = layout_plans(seed, layout)
    assert plans[0].op_count > 2 * SCRATCH_EPOCH_OPS  # several epochs, each its own fill
    expected, got = python_lines(plans), c_lines(executor, plans, report_every=4096)
    fills = [line for line in expected if line.startswith("M ")]
    assert len(fills) >= 6 and len({line.split()[3] for line in fills}) == len(fills)
    assert got == expected


@pytest.mark.parametrize("layout", DEVICE_LAYOUTS)
def test_c_layout_resume_refills_at_the_resume_point(executor, layout):
    plans = layout_plans(3, layout)
    got = c_lines(executor, plans, report_every=4096, resume=(0, 5000))
    assert got[0].startswith("M 0 5000 ")
    assert got == python_lines(plans, (0, 5000))


def test_c_layout_fills_follow_each_ranges_own_seed_and_pacing(executor):
    """A guided batch's range as the executor reads it: ``+dma=LAYOUT@S~E:U`` (layout, own seed, pacing) together."""
    plans = [
        replace(plan, seed=seed, pause_every=every, pause_us=us)
        for plan, seed, (every, us) in zip(
            layout_plans(1, LAYOUT_UHCI), (1, 77, 2**64 - 1), ((0, 0), (64, 1), (4096, 2)), strict=True
        )
    ]
    command = executor_command(plans, binary=str(executor), dry_run=True, report_every=4096)
    assert "+dma=uhci@77~64:1" in command  # the first range's seed is the command's --seed
    assert c_lines(executor, plans, report_every=4096) == python_lines(plans)


def test_layout_changes_the_fill_only():
    generic = RangePlan(0, 0xC000, 0xC01F, "usb", 5, 30, 2, values=VALUES_DMA)
    uhci = RangePlan(0, 0xC000, 0xC01F, "usb", 5, 30, 2, values=VALUES_DMA, layout=LAYOUT_UHCI)
    assert list(generic.ops()) == list(uhci.ops())
    assert scratch_fill(generic.range_seed, 0) != scratch_fill(uhci.range_seed, 0, LAYOUT_UHCI)
    assert len({scratch_fill(1, 0, LAYOUT_UHCI), scratch_fill(1, 1, LAYOUT_UHCI), scratch_fill(2, 0, LAYOUT_UHCI)}) == 3


def test_uhci_frame_lists_link_to_tds_and_qhs_whose_fields_a_controller_accepts():
    data = dwords(scratch_fill(0xFEED, 0, LAYOUT_UHCI))
    frame_list = data[: 0x1000 // 4] + data[0x2000 // 4 : 0x3000 // 4]
    assert all(inside(link & ~0xF, 16) for link in frame_list)
    assert 0.02 < sum(link & 1 for link in frame_list) / len(frame_list) < 0.12  # terminate one in 16
    qh_links = [link for link in frame_list if link & 2]
    assert all(((link & ~0xF) - SCRATCH_BASE) // 16 % 8 == 0 for link in qh_links)  # a QH cell
    tds = [
        data[4 * c : 4 * c + 4]
        for page in (1, 3)
        for c in range(page * 256, page * 256 + 256)
        if c % 8
    ]
    active = [td for td in tds if td[1] & 1 << 23]
    assert len(active) / len(tds) > 0.85
    pids = [td[2] & 0xFF for td in tds]
    assert sum(pid in (PID_SETUP, PID_IN, PID_OUT) for pid in pids) / len(pids) > 0.8
    assert {PID_SETUP, PID_IN, PID_OUT} <= set(pids)
    for td in tds:
        maxlen = td[2] >> 21
        assert maxlen == 0x7FF or maxlen < 64
        if td[2] & 0xFF == PID_SETUP:
            assert maxlen == 7  # an 8-byte setup packet
        assert inside(td[3], 64)
        assert inside(td[0] & ~0xF, 16)
    assert sum((td[2] >> 8) & 0x7F == 0 for td in tds) / len(tds) > 0.6  # device 0: what a reset device answers


def test_ehci_schedules_hold_active_qtds_with_small_transfers_inside_the_scratch_memory():
    data = dwords(scratch_fill(0xFEED, 0, LAYOUT_EHCI))
    periodic = data[: 0x1000 // 4]
    assert sum((link >> 1) & 3 == 1 for link in periodic) / len(periodic) > 0.8  # QH links
    qhs = [data[(0x1000 + 64 * q) // 4 : (0x1000 + 64 * q) // 4 + 12] for q in range(128)]
    assert any(qh[1] & 1 << 15 for qh in qhs)  # a head of the reclamation list: the async walk starts there
    for qh in qhs:
        assert inside(qh[0] & ~0x1F, 48) and inside(qh[4] & ~0x1F, 32)
        assert (qh[1] >> 16) & 0x7FF in (8, 64, 512)
        assert all(inside(page, 1) for page in qh[7:12])
    qtds = [data[(0x3000 + 32 * t) // 4 : (0x3000 + 32 * t) // 4 + 8] for t in range(128)]
    assert sum(qtd[2] & 0x80 != 0 for qtd in qtds) / len(qtds) > 0.85
    assert all(qtd[2] & 0x7F == 0 for qtd in qtds)  # no halted or error status
    assert {(qtd[2] >> 8) & 3 for qtd in qtds} == {0, 1, 2}
    for qtd in qtds:
        total = (qtd[2] >> 16) & 0x7FFF
        assert total <= 127 and ((qtd[2] >> 8) & 3 != 2 or total == 8)
        assert inside(qtd[3], total) and inside(qtd[0] & ~0x1F, 32)


def test_e1000_descriptors_carry_frames_of_ethernet_length_in_the_scratch_memory():
    data = dwords(scratch_fill(0xFEED, 0, LAYOUT_E1000))
    descriptors = [data[4 * c : 4 * c + 4] for c in range(512)]
    contexts = [d for d in descriptors if d[2] & 0x20 << 24 and not (d[2] >> 20) & 0xF]
    data_descriptors = [d for d in descriptors if d not in contexts]
    assert 0.05 < len(contexts) / len(descriptors) < 0.2
    for d in data_descriptors:
        length = d[2] & 0xFFFF
        assert 14 <= length <= 1514 and inside(d[0] | d[1] << 32, length)
        assert d[2] >> 24 & 0x0A == 0x0A  # IFCS and RS: the FCS is added, the status written back
    assert 0.6 < sum(d[2] >> 24 & 1 for d in data_descriptors) / len(data_descriptors) < 0.9  # EOP, or a packet goes on


def test_virtio_queue_is_a_well_formed_split_ring_pointing_at_request_headers():
    data = scratch_fill(0xFEED, 0, LAYOUT_VIRTIO)
    descriptors = [struct.unpack_from("<QIHH", data, 16 * i) for i in range(256)]
    indirect = [d for d in descriptors if d[2] & 4]
    assert len(indirect) < 8 and all(d[2] == 4 and d[1] % 16 == 0 and inside(d[0], d[1]) for d in indirect)
    direct = [d for d in descriptors if not d[2] & 4]
    assert all(d[0] >= SCRATCH_BASE + 0x3000 and inside(d[0], d[1]) and 1 <= d[1] <= 1024 for d in direct)
    assert all(d[3] < 256 for d in descriptors)
    flags, idx, *ring = struct.unpack_from("<HH256H", data, 0x1000)
    assert flags in (0, 1) and 1 <= idx <= 256 and all(head < 256 for head in ring)
    assert data[0x2000:0x3000] == bytes(0x1000)  # the used ring: the device's to write
    types = [struct.unpack_from("<I", data, 0x3000 + 16 * t)[0] for t in range(85)]
    assert {0, 1, 4, 8} <= set(types) and sum(t in (0, 1, 4, 8) for t in types) / len(types) > 0.85


def blk_request(data: bytes, head: int) -> str:
    """What virtio-blk makes of the chain at ``head``, parsed as the device does: 'ok' or why it is not a request.

    Readable descriptors first, then writable ones; the readable part starts
    with the 16-byte header, the last writable byte is the status; a read or
    write moves whole 512-byte sectors.
    """
    out, into, index, seen = [], [], head, set()
    while True:
        address, length, flags, following = struct.unpack_from("<QIHH", data, 16 * index)
        if flags & 4:
            return "indirect"
        if index in seen or len(seen) > 16:
            return "loop"
        seen.add(index)
        if flags & 2:
            into.append((address, length))
        elif into:
            return "readable after writable"
        else:
            out.append((address, length))
        if not flags & 1:
            break
        index = following
    if not out or not into or sum(n for _, n in out) < 16:
        return "no header or no status"
    request_type = struct.unpack_from("<I", data, out[0][0] - SCRATCH_BASE)[0]
    size = sum(n for _, n in out) - 16 if request_type == 1 else sum(n for _, n in into) - 1
    if request_type in (0, 1) and (size == 0 or size % 512):
        return "not whole sectors"
    return "ok"


def test_most_virtio_ring_heads_start_a_request_that_virtio_blk_accepts_and_some_do_not():
    """The chains virtio-blk parses as a request (a random chaining made one in twelve first heads one)."""
    verdicts = []
    first_ok = 0
    for seed in range(0x5EED0000, 0x5EED0010):
        data = scratch_fill(seed, 0, LAYOUT_VIRTIO)
        _, idx, *ring = struct.unpack_from("<HH256H", data, 0x1000)
        heads = [blk_request(data, head) for head in ring[:idx]]
        first_ok += heads[0] == "ok"
        verdicts += heads
    ok = verdicts.count("ok") / len(verdicts)
    assert 0.85 < ok < 0.98, f"{ok:.2f} of the heads are requests: {set(verdicts)}"  # some malformed
    assert first_ok >= 12, f"the first head is a request in {first_ok} of 16 fills"


def test_nvme_queue_holds_known_commands_with_prps_into_the_scratch_memory():
    from avocado_iofuzz.model.dma_layouts import NVME_OPCODES

    data = dwords(scratch_fill(0xFEED, 0, LAYOUT_NVME))
    entries = [data[16 * e : 16 * e + 16] for e in range(128)]
    assert all(entry[0] & 0xFF in NVME_OPCODES for entry in entries)
    assert {entry[0] & 0xFF for entry in entries} == set(NVME_OPCODES)
    assert sum(entry[1] == 1 for entry in entries) / len(entries) > 0.6  # namespace 1
    for entry in entries:
        prp1, prp2 = entry[6] | entry[7] << 32, entry[8] | entry[9] << 32
        assert inside(prp1, 4096 - (prp1 % 4096)) and inside(prp2, 4096) and prp2 % 4096 == 0
        if entry[0] & 0xFF == 0x01:  # create an I/O submission queue: on a page of entries
            assert prp1 in (SCRATCH_BASE, SCRATCH_BASE + 0x1000)
    assert data[0x2000 // 4 : 0x3000 // 4] == [0] * 1024  # the completion queue: the device's to write


def test_megasas_frames_carry_known_commands_and_sgls_into_the_scratch_memory():
    from avocado_iofuzz.model.dma_layouts import LAYOUT_MEGASAS, MFI_COMMANDS, MFI_DCMDS, SCSI_OPCODES

    data = dwords(scratch_fill(0xFEED, 0, LAYOUT_MEGASAS))
    frames = [data[16 * f : 16 * f + 16] for f in range(192)]
    assert {frame[0] & 0xFF for frame in frames} == set(MFI_COMMANDS)
    for frame in frames:
        command, data_len, sgl64 = frame[0] & 0xFF, frame[5], frame[4] & 2
        assert 512 <= data_len <= 4096 and (frame[1] >> 16) & 0xFF in (6, 10, 12, 16)
        sgl = 12 if command in (3, 4) else 10
        length = frame[sgl + 2] if sgl64 else frame[sgl + 1]
        assert inside(frame[sgl], length) and length == data_len
        if command in (3, 4):
            assert frame[8] & 0xFF in SCSI_OPCODES and inside(frame[6], 18)
        if command == 5:
            assert frame[6] in MFI_DCMDS


def test_ahci_headers_point_at_tables_with_an_h2d_fis_and_prds_into_the_scratch_memory():
    from avocado_iofuzz.model.dma_layouts import ATA_COMMANDS, LAYOUT_AHCI

    data = dwords(scratch_fill(0xFEED, 0, LAYOUT_AHCI))
    headers = [data[8 * h : 8 * h + 8] for h in range(128)]
    for header in headers:
        assert header[0] & 0x1F == 5 and 1 <= header[0] >> 16 <= 8  # a 5-dword FIS, 1-8 PRD entries
        table = header[2] | header[3] << 32
        assert table % 128 == 0 and SCRATCH_BASE + 0x1000 <= table < SCRATCH_BASE + 0x3000
    for t in range(32):
        table = data[(0x1000 + 256 * t) // 4 : (0x1000 + 256 * t) // 4 + 64]
        assert table[0] & 0xFFFF == 0x8027 and (table[0] >> 16) & 0xFF in ATA_COMMANDS  # H2D, command bit
        for e in range(8):
            prd = table[32 + 4 * e : 36 + 4 * e]
            assert inside(prd[0] | prd[1] << 32, (prd[3] & 0x3FFFFF) + 1)


def test_layout_is_validated_and_carried_by_the_range_argument():
    expected = f"layout must be one of {', '.join(LAYOUTS)}, got 'xhci'"
    with pytest.raises(ValueError, match=expected):
        RangePlan(0, 0x60, 0x64, "k", 1, 1, values=VALUES_DMA, layout="xhci")
    with pytest.raises(ValueError, match="layout 'uhci' lays out the scratch memory of dma values, not uniform"):
        RangePlan(0, 0x60, 0x64, "k", 1, 1, layout=LAYOUT_UHCI)
    plan = RangePlan(3, 0xC000, 0xC01F, "usb", 1, 1, 2, values=VALUES_DMA, layout=LAYOUT_EHCI, pause_every=256,
                     pause_us=1000)  # fmt: skip
    assert range_argument(plan) == "3:0xc000-0xc01f/2+dma=ehci~256:1000"
    generic = RangePlan(3, 0xC000, 0xC01F, "usb", 1, 1, 2, values=VALUES_DMA, layout=LAYOUT_GENERIC)
    assert range_argument(generic) == "3:0xc000-0xc01f/2+dma"  # as before layouts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scratch", "0x7000000-0x7003fff", "0xc000-0xc01f+dma=xhci"], "scratch layout 'xhci' is not one of"),
        (["--scratch", "0x7000000-0x7001fff", "0xc000-0xc01f+dma=uhci"], "the uhci layout is drawn for a scratch"),
        (["--scratch", "0x7000000-0x7003fff", "0xc000-0xc01f+uniform=uhci"], "value mode 'uniform' is not dma"),
    ],
)
def test_executor_refuses_bad_layouts(executor, args, message):
    result = subprocess.run(
        [str(executor), "--dry-run", "--seed", "1", "--fuzz-count", "1", *args], capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stdout, result.stdout + result.stderr


def test_executor_command_of_a_layout_range(executor):
    plan = RangePlan(0, 0xC000, 0xC01F, "usb", 1, 1, 2, values=VALUES_DMA, layout=LAYOUT_E1000)
    assert "0:0xc000-0xc01f/2+dma=e1000" in executor_command([plan], binary=str(executor))


ZERO = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
LISTING = (
    "== /sys/bus/pci/devices/0000:00:02.0 0x8086 0x10d3 0x020000\n"  # e1000e
    "0x00000000febc0000 0x00000000febdffff 0x0000000000040200\n" + ZERO * 12
    + "== /sys/bus/pci/devices/0000:00:04.0 0x8086 0x7020 0x0c0300\n"  # piix3-usb-uhci: BAR4 ports
    + ZERO * 4 + "0x000000000000c040 0x000000000000c05f 0x0000000000040101\n" + ZERO * 8
    + "== /sys/bus/pci/devices/0000:00:05.0 0x8086 0x293a 0x0c0320\n"  # ich9-usb-ehci1
    "0x00000000febf1000 0x00000000febf1fff 0x0000000000040200\n" + ZERO * 12
    + "== /sys/bus/pci/devices/0000:00:06.0 0x10ec 0x8139 0x020000\n"  # rtl8139: no layout of its own
    "0x000000000000c100 0x000000000000c1ff 0x0000000000040101\n" + ZERO * 12
    + "== /sys/bus/pci/devices/0000:00:07.0 0x1af4 0x1001 0x010000\n"  # virtio-blk, legacy ports
    "0x000000000000c200 0x000000000000c27f 0x0000000000040101\n" + ZERO * 12
    + "== /sys/bus/pci/devices/0000:00:08.0 0x1b36 0x0010 0x010802\n"  # nvme
    "0x00000000febf4000 0x00000000febf7fff 0x0000000000140204\n" + ZERO * 12
    + "== /sys/bus/pci/devices/0000:00:09.0 0x1000 0x0060 0x010400\n"  # megasas
    "0x000000000000c300 0x000000000000c3ff 0x0000000000040101\n" + ZERO * 12
    + "== /sys/bus/pci/devices/0000:00:0a.0 0x8086 0x2922 0x010601\n"  # ich9-ahci
    + ZERO * 5 + "0x00000000febf8000 0x00000000febf8fff 0x0000000000040200\n" + ZERO * 7
)  # fmt: skip


def listed_plans(values: str = VALUES_DMA) -> list[RangePlan]:
    return [
        RangePlan(0, 0x60, 0x64, "keyboard", 1, 1, values=values),
        RangePlan(1, 0xC040, 0xC05F, "0000:00:04.0", 1, 1, 2, values=values),
        RangePlan(2, 0xFEBC0000, 0xFEBC0FFF, "e1000e BAR0", 1, 1, 4, "mmio", values=values),
        RangePlan(3, 0xFEBF1000, 0xFEBF10FF, "ehci BAR0", 1, 1, 4, "mmio", values=values),
        RangePlan(4, 0x28000, 0x280FF, "0000:00:05.0", 1, 1, 4, "pci", values=values),
        RangePlan(5, 0xC100, 0xC1FF, "rtl8139", 1, 1, 4, values=values),
        RangePlan(6, 0xC200, 0xC27F, "virtio-blk", 1, 1, 4, values=values),
        RangePlan(7, 0xFEBF4000, 0xFEBF4FFF, "nvme BAR0", 1, 1, 4, "mmio", values=values),
        RangePlan(8, 0xC300, 0xC3FF, "megasas", 1, 1, 4, values=values),
        RangePlan(9, 0xFEBF8000, 0xFEBF80FF, "ahci BAR5", 1, 1, 4, "mmio", values=values),
    ]


def test_auto_gives_each_range_its_device_family_layout():
    from avocado_iofuzz.model.layout_choice import choose_layouts, pci_functions

    chosen = choose_layouts(listed_plans(), pci_functions(LISTING), "auto")
    expected = ["generic", "uhci", "e1000", "ehci", "ehci", "generic", "virtio", "nvme", "megasas", "ahci"]
    assert [p.layout for p in chosen] == expected
    assert [p.layout for p in choose_layouts(listed_plans(), [], "auto")] == ["generic"] * 10  # no listing read
    assert {p.layout for p in choose_layouts(listed_plans(), pci_functions(LISTING), "e1000")} == {"e1000"}
    uniform = choose_layouts(listed_plans("uniform"), pci_functions(LISTING), "auto")
    assert {p.layout for p in uniform} == {"generic"}  # uniform values have no scratch memory to lay out
    expected = f"dma_layout 'ohci': expected one of auto, {', '.join(LAYOUTS)}$"
    with pytest.raises(ValueError, match=expected):
        choose_layouts(listed_plans(), [], "ohci")


def test_dma_layout_param():
    from avocado_iofuzz.vt.iofuzz_params import IofuzzParams
    from avocado_iofuzz.vt.params import ParamError

    assert IofuzzParams.from_params({}).layout == "auto"
    assert IofuzzParams.from_params({"dma_layout": "uhci"}).layout == "uhci"
    with pytest.raises(ParamError, match="param dma_layout = 'xhci': expected"):
        IofuzzParams.from_params({"dma_layout": "xhci"})


def test_trace_records_the_layout_and_rebuilds_the_plan(tmp_path):
    from avocado_iofuzz.campaign.trace import TraceWriter, read_trace

    plans = listed_plans()
    plans[1] = RangePlan(1, 0xC040, 0xC05F, "uhci", 1, 1, 2, values=VALUES_DMA, layout=LAYOUT_UHCI)
    writer = TraceWriter(tmp_path / "t", {}, plans)
    writer.close()
    text = (tmp_path / "t").read_text()
    assert text.count('"layout": "uhci"') == 1 and '"layout": "generic"' not in text  # generic stays unwritten
    assert read_trace(tmp_path / "t").plans[1] == plans[1]


def test_qtest_export_writes_the_device_layout_into_guest_memory():
    plan = RangePlan(0, 0xC040, 0xC05F, "uhci", 9, 1, 2, values=VALUES_DMA, layout=LAYOUT_UHCI)
    memory = [op for op in plan.ops_with_memory() if op.space == "mmio"]
    data = b"".join(op.value.to_bytes(8, "little") for op in memory)
    assert data == scratch_fill(plan.range_seed, 0, LAYOUT_UHCI)
    assert memory[0].port == SCRATCH_BASE


def test_guided_batches_keep_their_ranges_layout_through_json():
    from avocado_iofuzz.guided.batch import Base, Batch
    from avocado_iofuzz.guided.rebuild import bases_from

    plan = RangePlan(0, 0xC040, 0xC05F, "uhci", 1, 1, 2, values=VALUES_DMA, layout=LAYOUT_UHCI)
    base = Base.of(plan)
    batch = Batch(base, 0xC040, 0xC04F, 77, 10, values=VALUES_DMA)
    assert batch.plan(3).layout == LAYOUT_UHCI
    assert Batch.from_dict(batch.as_dict()) == batch
    assert base.key() == "pio:0xc040-0xc05f/2+dma=uhci"
    assert Base.of(RangePlan(0, 0xC040, 0xC05F, "uhci", 1, 1, 2, values=VALUES_DMA)).key() == "pio:0xc040-0xc05f/2+dma"
    assert bases_from([vars(base)]) == [base]
    uniform = Batch(base, 0xC040, 0xC04F, 77, 10)  # a uniform batch of a dma range: no scratch memory to lay out
    assert uniform.plan(0).layout == LAYOUT_GENERIC


def test_rerun_and_summary_name_the_layout_a_range_had():
    from avocado_iofuzz.results.rerun import RerunContext, rerun_range

    plan = RangePlan(0, 0xC040, 0xC05F, "uhci", 1, 1, 2, values=VALUES_DMA, layout=LAYOUT_EHCI)
    params = dict(rerun_range(plan, RerunContext(reference="iofuzz")).params)
    assert (params["fuzz_values"], params["dma_layout"]) == ("dma", "ehci")
    uniform = RangePlan(0, 0x60, 0x60, "keyboard", 5, 7)
    assert "dma_layout" not in dict(rerun_range(uniform, RerunContext(reference="iofuzz")).params)


def test_megasas_gen2_gets_the_megasas_layout_by_the_id_qemu_gives_it():
    """QEMU 7.2's megasas-gen2 is 1000:0079 (cfg/devices.cfg's only_pci); an earlier table named 1000:005b."""
    from avocado_iofuzz.model.layout_choice import family_layout, pci_functions

    listing = (
        "== /sys/bus/pci/devices/0000:00:04.0 0x1000 0x0079 0x010400\n"  # megasas-gen2
        "0x00000000febf0000 0x00000000febf3fff 0x0000000000140204\n" + ZERO * 12
    )  # fmt: skip
    (function,) = pci_functions(listing)
    assert family_layout(function) == "megasas"


def _ehci_msd_walk(seed: int) -> list[tuple[int, int, int, list[list[int]]]]:
    """The async list of an ehci_msd fill from QH 0, one lap: (device, endpoint, head bit, qTDs) per queue head."""
    data = dwords(scratch_fill(seed, 0, LAYOUT_EHCI_MSD))
    at, lap = SCRATCH_BASE, []
    while True:
        qh = data[(at - SCRATCH_BASE) // 4 : (at - SCRATCH_BASE) // 4 + 12]
        assert qh[0] & 0b111 == 0b010 and inside(qh[0] & ~0x1F, 48)  # a queue head, never terminated
        qtds, link = [], qh[4]
        while not link & 1:
            assert inside(link, 32)
            qtd = data[(link - SCRATCH_BASE) // 4 : (link - SCRATCH_BASE) // 4 + 8]
            qtds.append(qtd)
            link = qtd[0]
        lap.append((qh[1] & 0x7F, (qh[1] >> 8) & 15, (qh[1] >> 15) & 1, qtds))
        at = qh[0] & ~0x1F
        if at == SCRATCH_BASE:
            return lap


@pytest.mark.parametrize("seed", [0x5EED0000, 0x5EED0003, 0xFEED])
def test_ehci_msd_list_enumerates_at_address_0_then_runs_bulk_only_on_the_new_address(seed):
    lap = _ehci_msd_walk(seed)
    assert len(lap) == 14 and [head for _, _, head, _ in lap] == [1] + [0] * 13
    (first, _, _, enumerate_), (address, _, _, configure) = lap[0], lap[1]
    assert first == 0 and 4 <= address <= 127 and {device for device, *_ in lap[1:]} == {address}
    memory = scratch_fill(seed, 0, LAYOUT_EHCI_MSD)

    def setup(qtd: list[int]) -> bytes:
        return memory[qtd[3] - SCRATCH_BASE : qtd[3] - SCRATCH_BASE + 8]

    setups = [setup(qtd) for qtd in enumerate_ if (qtd[2] >> 8) & 3 == 2]  # PID SETUP
    assert [s[:2] for s in setups] == [b"\x80\x06", b"\x00\x05"]  # GET_DESCRIPTOR, SET_ADDRESS
    assert setups[1][2] == address
    assert setup(configure[0])[:4] == b"\x80\x06\x00\x02"  # the configuration descriptor first
    for _, endpoint, _, qtds in lap:
        assert all(qtd[2] & 0x80 and qtd[2] & 0x7F == 0 for qtd in qtds)  # active, no error status
        if endpoint != 0:  # the bulk endpoints never get SETUP (QEMU 7.2 aborts in usb_ep_get)
            assert endpoint in (1, 2) and all((qtd[2] >> 8) & 3 == endpoint % 2 for qtd in qtds)
    cbws = [memory[q[0][3] - SCRATCH_BASE : q[0][3] - SCRATCH_BASE + 31] for _, e, _, q in lap if e == 2]
    assert len(cbws) == 4 and all(len(lap[2 + 3 * k + 1][3]) >= 1 for k in range(4))  # each slot ends with a CSW


def test_ehci_msd_cbws_carry_the_tables_commands_and_some_are_malformed():
    opcodes, malformed = set(), 0
    for seed in range(200):
        memory = scratch_fill(seed, 0, LAYOUT_EHCI_MSD)
        for slot in range(4):
            cbw = memory[0x2800 + 64 * slot : 0x2800 + 64 * slot + 31]
            signature, _, length, flags, lun, cdb_length = struct.unpack("<IIIBBB", cbw[:15])
            good = signature == 0x43425355 and lun == 0 and cdb_length in (6, 10, 12, 16)
            malformed += not good
            opcodes.add(cbw[15])
            assert length <= 512 and flags in (0, 0x80)
    assert {0x12, 0x00, 0x25, 0x28, 0x2A, 0x03, 0x1A, 0x5A, 0xA0, 0x9E} <= opcodes
    assert 0.02 < malformed / 800 < 0.15  # one CBW in eight is malformed, half of those by signature or LUN
