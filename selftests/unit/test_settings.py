import pytest

from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, ParamError


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
    ],
)
def test_bad_values_name_the_param(params, message):
    with pytest.raises(ParamError) as err:
        IofuzzParams.from_params(params)
    assert message in str(err.value)
