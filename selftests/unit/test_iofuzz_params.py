import logging

import pytest

from avocado_iofuzz.model.program import MAX_FUZZ_COUNT, plan_ranges
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, check_hang_at
from avocado_iofuzz.vt.params import ParamError


def test_defaults_from_an_empty_dict():
    p = IofuzzParams.from_params({})
    assert p.seed is None and p.fuzz_count == 100000 and p.report_every == 16384
    assert p.accel == "auto" and p.guest == "busybox" and p.hang_status == "warn"
    assert "0xcf9" in p.skip_ports and p.debug_hang_at is None


def test_values_are_parsed():
    p = IofuzzParams.from_params(
        {"fuzz_seed": "0x10", "fuzz_count": "7", "hang_timeout": "2.5", "iofuzz_debug_hang_at": "3:99"}
    )
    assert p.seed == 16 and p.fuzz_count == 7 and p.hang_timeout == 2.5 and p.debug_hang_at == (3, 99)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fuzz_count": "lots"}, "param fuzz_count = 'lots': not an integer"),
        ({"fuzz_count": "-1"}, "param fuzz_count = '-1': must be >= 0"),
        ({"report_every": "0"}, "param report_every = '0': must be >= 1"),
        ({"hang_timeout": "soon"}, "param hang_timeout = 'soon': not a number"),
        ({"hang_timeout": "0"}, "param hang_timeout = '0': must be > 0"),
        ({"fuzz_seed": str(2**64)}, "must fit in 64 bits"),
        ({"iofuzz_accel": "xen"}, "param iofuzz_accel = 'xen': expected auto, kvm or tcg"),
        ({"hang_status": "ignore"}, "param hang_status = 'ignore'"),
        ({"iofuzz_debug_hang_at": "7"}, "expected RANGE_INDEX:OP_INDEX"),
        ({"skip_ports": "0x64 nope"}, "skip_ports: 'nope'"),
        ({"extra_ioports": "0xe9"}, "extra_ioports: '0xe9' lacks ':NAME'"),
        (
            {"fuzz_count": "99999999999"},
            "param fuzz_count = '99999999999': must be <= 4294967295 (the in-guest executor counts random writes "
            "per slot in 32 bits",
        ),
        ({"report_every": str(2**32)}, f"param report_every = '{2**32}': must be <= 4294967295"),
        ({"skip_ports": "0x70-0x60"}, "param skip_ports: '0x70-0x60': start 0x70 is greater than end 0x60"),
        ({"skip_ports": "0x70-0x10000"}, "param skip_ports: '0x70-0x10000' is not a span within 0x0-0xffff"),
        ({"extra_ioports": "0x70-0x60:x"}, "param extra_ioports: '0x70-0x60': start 0x70 is greater than end"),
        ({"iofuzz_debug_hang_at": "1:x"}, "param iofuzz_debug_hang_at = '1:x': expected RANGE_INDEX:OP_INDEX"),
        ({"iofuzz_debug_hang_at": "-1:0"}, "param iofuzz_debug_hang_at = '-1:0': indices must be >= 0"),
    ],
)
def test_bad_values_name_the_param(params, message):
    with pytest.raises(ParamError) as err:
        IofuzzParams.from_params(params)
    assert message in str(err.value)


def test_the_largest_fuzz_count_is_accepted():
    assert IofuzzParams.from_params({"fuzz_count": str(MAX_FUZZ_COUNT)}).fuzz_count == MAX_FUZZ_COUNT


def test_a_blank_value_is_the_default_and_the_log_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="avocado.test.iofuzz"):
        p = IofuzzParams.from_params({"fuzz_count": " ", "hang_timeout": ""})
    assert p.fuzz_count == 100000 and p.hang_timeout == 20.0
    assert "param fuzz_count is empty: its default 100000 applies" in caplog.text
    assert "param hang_timeout is empty: its default 20.0 applies" in caplog.text


@pytest.mark.parametrize(
    ("position", "message"),
    [
        ((2, 0), "param iofuzz_debug_hang_at = '2:0': no range 2 in this run (its ranges are 0..1)"),
        ((1, 8), "param iofuzz_debug_hang_at = '1:8': range 1 (pic1) has ops 0..7 only"),
    ],
)
def test_a_debug_hang_position_outside_the_run_names_the_param(position, message):
    plans = plan_ranges(1, [(0x0, 0x1F, "dma1"), (0x20, 0x21, "pic1")], 2)
    check_hang_at((1, 7), plans)  # the last op of the last range is fine
    with pytest.raises(ParamError) as err:
        check_hang_at(position, plans)
    assert str(err.value) == message


def test_the_strategy_params():
    from avocado_iofuzz.vt.iofuzz_params import read_guided

    assert read_guided({}).strategy == "blind"
    guided = read_guided({"fuzz_strategy": "guided", "guided_round_ops": "5000", "guided_corpus_dir": "/tmp/c"})
    assert (guided.strategy, guided.round_ops, guided.corpus_dir) == ("guided", 5000, "/tmp/c")
    assert guided.readback == "off"  # read-backs are opt-in
    assert [read_guided({"guided_readback": m}).readback for m in ("off", "steps", "all")] == ["off", "steps", "all"]
    assert guided.recipes and not read_guided({"guided_recipes": "no"}).recipes
    assert guided.skip_recipes == ()
    skipped = read_guided({"guided_recipes_skip": "ehci-msd, lsi-scripts ehci-msd"}).skip_recipes
    assert skipped == ("ehci-msd", "lsi-scripts")  # commas or blanks, each name once


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fuzz_strategy": "clever"}, "param fuzz_strategy = 'clever': expected blind or guided"),
        ({"fuzz_strategy": "guided", "guided_round_ops": "10"}, "param guided_round_ops = '10': must be >= 1000"),
        ({"fuzz_strategy": "guided", "iofuzz_debug_hang_at": "0:5"}, "works with fuzz_strategy = blind only"),
        ({"guided_readback": "yes"}, "param guided_readback = 'yes': expected off, steps or all"),
        ({"fuzz_strategy": "guided", "guided_recipes": "maybe"}, "param guided_recipes = 'maybe'"),
        ({"guided_recipes_skip": "ehci-msd ehci-stick"}, "param guided_recipes_skip: no recipe named ehci-stick "
         "\\(recipes: virtio-legacy-queue0, "),
    ],
)
def test_bad_strategy_params_are_named(params, message):
    from avocado_iofuzz.vt.iofuzz_params import read_guided

    with pytest.raises(ParamError, match=message):
        read_guided(params)


def test_qemu_output_is_file_unless_log_is_asked_for_and_nothing_else_is_accepted():
    assert IofuzzParams.from_params({}).qemu_output == "file"
    assert IofuzzParams.from_params({"qemu_output": "log"}).qemu_output == "log"
    with pytest.raises(ParamError, match="qemu_output"):
        IofuzzParams.from_params({"qemu_output": "debuglog"})
