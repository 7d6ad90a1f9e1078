"""The param readers of avocado_iofuzz.vt.params: values, defaults, and errors that name the param."""

from __future__ import annotations

import logging

import pytest

from avocado_iofuzz.vt.params import ParamError, choice, integer, number, read_shard, text, verbatim, words, yes_no


def test_text_strips_and_an_empty_value_is_the_default_and_logged(caplog):
    assert text({"k": "  v "}, "k") == "v"
    with caplog.at_level(logging.INFO, logger="avocado.test.iofuzz"):
        assert text({"k": " "}, "k", "d") == "d"
    assert "param k is empty: its default d applies" in caplog.text
    assert text({}, "k", "d") == "d"


def test_verbatim_keeps_an_empty_value():
    assert verbatim({"skip": ""}, "skip", "default") == ""
    assert verbatim({}, "skip", "default") == "default"


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("many", {}, "param n = 'many': not an integer"),
        ("-1", {}, "param n = '-1': must be >= 0"),
        ("9", {"maximum": 8, "why": "eight slots"}, "param n = '9': must be <= 8 (eight slots)"),
        ("9", {"maximum": 8}, "param n = '9': must be between 0 and 8"),
        ("0x10", {"base": 10}, "param n = '0x10': not an integer"),
    ],
)
def test_integer_errors_name_the_param(value, kwargs, message):
    with pytest.raises(ParamError) as err:
        integer({"n": value}, "n", 1, 0, **kwargs)
    assert str(err.value) == message


def test_integer_values():
    assert integer({"n": "0x10"}, "n", 1, 0) == 16
    assert integer({"n": ""}, "n", 7, 0) == 7
    assert integer({"n": "8"}, "n", 1, 0, 8) == 8


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("soon", {}, "param t = 'soon': not a number"),
        ("soon", {"unit": "seconds"}, "param t = 'soon': not a number of seconds"),
        ("0", {}, "param t = '0': must be > 0"),
        ("-1", {"strict": False}, "param t = '-1': must be >= 0"),
    ],
)
def test_number_errors_name_the_param(value, kwargs, message):
    with pytest.raises(ParamError) as err:
        number({"t": value}, "t", 1.0, **kwargs)
    assert str(err.value) == message


def test_number_values():
    assert number({"t": "2.5"}, "t", 1.0) == 2.5
    assert number({"t": "0"}, "t", 1.0, strict=False) == 0.0
    assert number({}, "t", 1.0) == 1.0


def test_choice():
    assert choice({"a": "kvm"}, "a", ("auto", "kvm", "tcg"), "auto") == "kvm"
    assert choice({}, "a", ("auto", "kvm", "tcg"), "auto") == "auto"
    with pytest.raises(ParamError) as err:
        choice({"a": "xen"}, "a", ("auto", "kvm", "tcg"), "auto")
    assert str(err.value) == "param a = 'xen': expected auto, kvm or tcg"


def test_words_keep_the_allowed_order_and_name_a_stranger():
    assert words({"w": "path, abstract"}, "w", ("abstract", "path"), "abstract") == ("abstract", "path")
    with pytest.raises(ParamError) as err:
        words({"w": "path,raw"}, "w", ("abstract", "path"), "abstract")
    assert str(err.value) == "param w = 'path,raw': expected a comma-separated list of abstract, path; raw is not one"


def test_yes_no():
    assert yes_no({"p": "YES"}, "p", False) is True
    assert yes_no({"p": ""}, "p", True) is True
    with pytest.raises(ParamError) as err:
        yes_no({"p": "maybe"}, "p", True)
    assert str(err.value) == "param p = 'maybe': expected yes or no"


def test_shard():
    assert str(read_shard({"iofuzz_shard": "2/4"})) == "2/4"
    assert read_shard({}).count == 1
    with pytest.raises(ParamError, match="param iofuzz_shard = '5/4'"):
        read_shard({"iofuzz_shard": "5/4"})
