"""Traces are refused only for the parts of the op generator their ranges use and this package makes differently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.generator_parts import PART_DMA, PART_OPS, layout_part, part_fingerprints
from avocado_iofuzz.campaign.trace import TraceError, TraceWriter, read_trace
from avocado_iofuzz.model import dma
from avocado_iofuzz.model.program import RangePlan

DATA = Path(__file__).parent / "data"
BEFORE_DMA = DATA / "trace-before-dma.iofuzz"  # real traces of older versions (see data/README)
BEFORE_LAYOUTS = DATA / "trace-before-layouts.iofuzz"
UNIFORM = RangePlan(0, 0x3F8, 0x3FF, "serial port", 7, 8)
DMA_GENERIC = RangePlan(1, 0xFEBF0000, 0xFEBF003F, "nic BAR0", 7, 8, 4, "mmio", values=dma.VALUES_DMA)
DMA_UHCI = RangePlan(2, 0xC000, 0xC01F, "uhci", 7, 8, 2, values=dma.VALUES_DMA, layout="uhci")


def header_line(path: Path) -> dict:
    return json.loads(path.read_text().split("\n", 1)[0].removeprefix("#IOFUZZ-TRACE "))


def write_trace(path: Path, plans: list[RangePlan]) -> Path:
    with TraceWriter(path, {"machine_type": "pc"}, plans, mark_interval=0) as writer:
        for plan in plans:
            writer.write_ops(plan, 0, plan.op_count)
    return path


def with_header(path: Path, **changes: object) -> Path:
    """The trace at ``path`` with header keys replaced (None: removed), as an older or other writer left it."""
    rest = path.read_text().split("\n", 1)[1]
    header = {k: v for k, v in {**header_line(path), **changes}.items() if v is not None}
    path.write_text("#IOFUZZ-TRACE " + json.dumps(header) + "\n" + rest)
    return path


@pytest.mark.parametrize("old", [BEFORE_DMA, BEFORE_LAYOUTS], ids=["before-dma", "before-layouts"])
def test_traces_of_versions_before_dma_and_layouts_are_read_where_their_ops_are_unchanged(old):
    trace = read_trace(old)
    assert trace.plans and all(p.values == dma.VALUES_UNIFORM for p in trace.plans.values())
    assert trace.batches and all(trace.ops[b.range_index].count_in(b.first, b.stop) for b in trace.batches)


def test_an_old_fingerprint_does_not_stand_for_parts_its_version_did_not_have(tmp_path):
    before_dma, before_layouts = header_line(BEFORE_DMA)["generator"], header_line(BEFORE_LAYOUTS)["generator"]
    written = write_trace(tmp_path / "dma.iofuzz", [UNIFORM, DMA_GENERIC])
    # the version before layouts had DMA-aware values, drawn from a dictionary without the page-frame-number
    # kind: its DMA ranges would make other values now, while its uniform ranges make the same ops
    with pytest.raises(TraceError, match=rf":3: range 1 needs the op generator's {PART_DMA},"):
        read_trace(with_header(written, generator=before_layouts, generator_parts=None))
    uniform_only = write_trace(tmp_path / "uniform.iofuzz", [UNIFORM])
    assert read_trace(with_header(uniform_only, generator=before_layouts, generator_parts=None)).plans[0] == UNIFORM
    with pytest.raises(TraceError, match=rf":3: range 1 needs the op generator's {PART_DMA},"):
        read_trace(with_header(written, generator=before_dma))
    with_layout = write_trace(tmp_path / "uhci.iofuzz", [UNIFORM, DMA_UHCI])
    refused = r":3: range 2 needs the op generator's dma, layout:uhci, .* 'bf619ad35beb1ffa'"
    with pytest.raises(TraceError, match=refused):
        read_trace(with_header(with_layout, generator=before_layouts, generator_parts=None))
    read_trace(with_header(with_layout, generator=before_layouts, generator_parts=None), verify=False)


def test_a_changed_part_refuses_only_the_ranges_that_use_it(tmp_path):
    changed_uhci = {**part_fingerprints(), layout_part("uhci"): "feedfacefeedface"}
    generic = write_trace(tmp_path / "generic.iofuzz", [UNIFORM, DMA_GENERIC])
    assert len(read_trace(with_header(generic, generator="0123456789abcdef", generator_parts=changed_uhci)).plans) == 2
    uhci = write_trace(tmp_path / "uhci.iofuzz", [UNIFORM, DMA_UHCI])
    with pytest.raises(TraceError, match=r":3: range 2 needs the op generator's layout:uhci,"):
        read_trace(with_header(uhci, generator_parts=changed_uhci))
    changed_ops = {**part_fingerprints(), PART_OPS: "feedfacefeedface"}
    with pytest.raises(TraceError, match=rf":2: range 0 needs the op generator's {PART_OPS},"):
        read_trace(with_header(generic, generator_parts=changed_ops))


def test_each_part_has_its_own_fingerprint_and_a_new_trace_records_them():
    parts = part_fingerprints()
    assert {PART_OPS, PART_DMA, layout_part("uhci")} <= set(parts)
    assert len(set(parts.values())) == len(parts)
    with pytest.raises(ValueError, match="generator_parts"):
        TraceWriter(Path("/nonexistent/never-written"), {"generator_parts": {}}, [UNIFORM])


BEFORE_FIXED = DATA / "trace-before-fixed.iofuzz"


def _a_package_whose_part_changed(monkeypatch: pytest.MonkeyPatch, part: str, fingerprint: str) -> dict[str, str]:
    """This package as if ``part`` were made differently (its fingerprint); the running hash stays what it is."""
    from avocado_iofuzz.campaign import generator_parts

    changed = {**part_fingerprints(), part: fingerprint}
    monkeypatch.setattr(generator_parts, "part_fingerprints", lambda: changed)
    return changed


def test_a_refused_trace_names_the_part_that_differs_with_its_old_and_new_fingerprint(monkeypatch):
    """The real trace of 67c4b2f, its virtio layout made differently: the part, not two equal running hashes."""
    header = header_line(BEFORE_FIXED)
    old = header["generator_parts"]["layout:virtio"]
    _a_package_whose_part_changed(monkeypatch, "layout:virtio", "0123456789abcdef")
    with pytest.raises(TraceError) as refused:
        read_trace(BEFORE_FIXED)
    message = str(refused.value)
    assert message.startswith(f"{BEFORE_FIXED}:3: range 1 needs the op generator's layout:virtio, ")
    assert f"(part layout:virtio: the writer's {old}, this package's 0123456789abcdef)" in message
    assert header["generator"] not in message  # the running hash, the same for both, says nothing here


def test_a_refused_historic_trace_names_what_its_running_hash_stood_for(monkeypatch):
    """A trace with one running hash (before generator_parts): the ops part it stood for, then and now."""
    assert "generator_parts" not in header_line(BEFORE_LAYOUTS)
    _a_package_whose_part_changed(monkeypatch, PART_OPS, "fedcba9876543210")
    with pytest.raises(TraceError) as refused:
        read_trace(BEFORE_LAYOUTS)
    assert (
        ":2: range 0 needs the op generator's ops, which this avocado-iofuzz makes differently from the version "
        "that wrote the trace (part ops: the writer's 447309041c86fc80, this package's fedcba9876543210)"
    ) in str(refused.value)


def test_a_part_the_writer_never_had_is_named_as_such(tmp_path):
    fixed = RangePlan(0, 0xC012, 0xC012, "status", 7, 1, 1, fuzz_only=True, fixed=0x3)
    path = write_trace(tmp_path / "t.iofuzz", [fixed])
    recorded = {k: v for k, v in header_line(path)["generator_parts"].items() if k != "fixed"}
    new = part_fingerprints()["fixed"]
    with pytest.raises(TraceError, match=rf"\(part fixed: the writer recorded none \(the part is newer than it\), "
                       rf"this package's {new}\)"):  # fmt: skip
        read_trace(with_header(path, generator_parts=recorded))
    with pytest.raises(TraceError, match=rf"\(part fixed: the writer's generator '\w+' stands for no such part, "
                       rf"this package's {new}\)"):  # fmt: skip
        read_trace(with_header(path, generator_parts=None))
