"""The command line: output format, determinism, and clear errors for bad input."""

import pytest

from sockstates.__main__ import main
from sockstates.canon import canonical
from sockstates.syscall import parse_line


def test_gen_prints_each_state_once_with_indented_syscalls(capsys):
    assert main(["--gen", "--types", "stream", "--max-sockets", "2", "--depth", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [ln for ln in lines if not ln.startswith("    ")]
    assert heads[0] == "empty" and len(heads) == len(set(heads))
    for head in heads:
        assert canonical(head) == head
    for ln in lines:
        if ln.startswith("    "):
            parse_line(ln.strip())


def test_output_is_deterministic(capsys):
    args = ["--types", "dgram,seqpacket", "--names", "abstract,path", "--max-sockets", "2", "--depth", "4"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first


def test_stats_prints_states_per_depth_and_time(capsys):
    assert main(["--stats", "--closure", "--types", "stream", "--max-sockets", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# depth 0: 1 states"
    assert out[-1].startswith("# ") and "closure (closed)" in out[-1] and out[-1].endswith(" s")


def test_state_option_prints_one_state_in_any_spelling(capsys):
    assert main(["--state", "SB@1L-I2_S~b@1-C3_SA-C2", "--types", "stream"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "SA-C3_SB@1L-I3_S~b@1-C1" and out[-1] == "    connect(2, @1)"


def test_state_outside_the_bounds_is_an_error(capsys):
    assert main(["--state", "SA_SA_SA", "--max-sockets", "2"]) == 1
    assert "not within these bounds" in capsys.readouterr().err


@pytest.mark.parametrize("args, complaint", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--max-sockets", "0"], "max sockets must be 1..8"),
    (["--depth", "-1"], "must be >= 0"),
    (["--depth", "ten"], "not a number"),
    (["--types", "stream,raw"], "unknown socket type 'raw'"),
    (["--names", "abstract,inet"], "unknown name kind 'inet'"),
    (["--state", "SQ"], "--state: token 1 'SQ' is not a socket"),
    (["--state", "SA-C9"], "refers to socket 9"),
])
def test_bad_input_is_named(capsys, args, complaint):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err
