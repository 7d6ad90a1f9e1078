"""Reading the avocado-vt params dict: one error class, one reader per kind of value.

Every test param is read here, at the VT glue, into typed records; the rooms
below (model/, campaign/, results/, vm/, repro/) get those records, never the
dict. Each reader raises :class:`ParamError` with a message that starts
``param KEY = 'VALUE': ...`` so that a typo in a cfg, in avocado.conf or in
``--vt-extra-params`` ends the test naming what to fix, before a VM starts.

An empty value means the param's default, and the log says so (a blank
``fuzz_count =`` must not be silent); :func:`verbatim` is the exception, for
list params where empty is a value of its own (no skips).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avocado_iofuzz.model.shards import SHARD_PARAM, Shard, ShardError, parse_shard

LOG = logging.getLogger("avocado.test.iofuzz")

Params = Mapping[str, Any]


class ParamError(ValueError):
    """A test param with a value we cannot use; the message names it."""


def alternatives(choices: Sequence[object]) -> str:
    """``('a', 'b', 'c')`` -> ``a, b or c``: how an error message lists what a param accepts."""
    names = [str(choice) for choice in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def verbatim(params: Params, key: str, default: str = "") -> str:
    """The param's text as given, empty included; ``default`` only when the param is absent."""
    value = params.get(key)
    return default if value is None else str(value)


def text(params: Params, key: str, default: str = "") -> str:
    """The param's text, stripped; an empty one means ``default`` (logged when the param was there)."""
    raw = str(params.get(key, "") or "").strip()
    if raw:
        return raw
    if key in params and default:
        LOG.info("param %s is empty: its default %s applies", key, default)
    return default


def integer(
    params: Params,
    key: str,
    default: int,
    minimum: int,
    maximum: int | None = None,
    why: str = "",
    base: int = 0,
) -> int:
    """An integer param (``base`` 0: decimal or 0x hex) within ``minimum``..``maximum``.

    ``why`` says why there is a maximum (what downstream cannot represent);
    without it a bounded value is asked to be "between" the two.
    """
    raw = _nonempty(params, key, default)
    if raw is None:
        return default
    try:
        value = int(raw, base)
    except ValueError:
        raise ParamError(f"param {key} = {raw!r}: not an integer") from None
    if maximum is not None and not why and not minimum <= value <= maximum:
        raise ParamError(f"param {key} = {raw!r}: must be between {minimum} and {maximum}")
    if value < minimum:
        raise ParamError(f"param {key} = {raw!r}: must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ParamError(f"param {key} = {raw!r}: must be <= {maximum} ({why})")
    return value


def number(
    params: Params, key: str, default: float, minimum: float = 0.0, strict: bool = True, unit: str = ""
) -> float:
    """A number param above ``minimum`` (``strict``) or at least it; ``unit`` (``seconds``) names what it counts."""
    raw = _nonempty(params, key, default)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ParamError(f"param {key} = {raw!r}: not a number{f' of {unit}' if unit else ''}") from None
    if value < minimum or (strict and value == minimum):
        raise ParamError(f"param {key} = {raw!r}: must be {'>' if strict else '>='} {minimum:g}")
    return value


def choice(params: Params, key: str, choices: Sequence[str], default: str) -> str:
    """One of ``choices`` (empty: ``default``)."""
    value = text(params, key, default)
    if value not in choices:
        raise ParamError(f"param {key} = {value!r}: expected {alternatives(choices)}")
    return value


def words(
    params: Params, key: str, allowed: Sequence[str], default: str, *, empty_ok: bool = False, noun: str = ""
) -> tuple[str, ...]:
    """Some of ``allowed``, comma- or space-separated, in ``allowed``'s order; at least one unless ``empty_ok``.

    ``noun`` names what the words are (``recipe``) for a list of names too long to
    spell in the message's usual form: the error then says which name is unknown.
    """
    raw = text(params, key, default)
    given = raw.replace(",", " ").split()
    bad = [word for word in given if word not in allowed]
    if bad and noun:
        raise ParamError(f"param {key}: no {noun} named {', '.join(bad)} ({noun}s: {', '.join(allowed)})")
    if bad or not (given or empty_ok):
        raise ParamError(
            f"param {key} = {raw!r}: expected a comma-separated list of {', '.join(allowed)}"
            + (f"; {', '.join(bad)} is not one" if bad else "")
        )
    return tuple(word for word in allowed if word in given)


def yes_no(params: Params, key: str, default: bool) -> bool:
    """A yes/no param, any case (empty: ``default``)."""
    raw = str(params.get(key, "") or "").strip().lower()
    if not raw:
        return default
    if raw not in ("yes", "no"):
        raise ParamError(f"param {key} = {raw!r}: expected yes or no")
    return raw == "yes"


def _nonempty(params: Params, key: str, default: object) -> str | None:
    """The param's stripped text, or None (logged when the param is there) for its default."""
    raw = str(params.get(key, "") or "").strip()
    if raw:
        return raw
    if key in params:
        LOG.info("param %s is empty: its default %s applies", key, default)
    return None


# --- shared by both tests: the shard, and which guest, kernel and accelerator the VM starts with -----------

ACCELERATORS = ("auto", "kvm", "tcg")


def read_shard(params: Params) -> Shard:
    """``iofuzz_shard`` (``K/N``; empty: the whole campaign)."""
    try:
        return parse_shard(text(params, SHARD_PARAM))
    except ShardError as err:
        raise ParamError(str(err)) from None


@dataclass(frozen=True)
class VmChoice:
    """What :func:`avocado_iofuzz.vt.iofuzz_test.start_embedded_vm` starts: guest, kernel, accelerator."""

    guest: str  # busybox, debian or image (the user's: its avocado-vt params are set already)
    kernel: str = ""  # a kernel of the user's for the embedded guests (empty: the host's)
    accel: str = "auto"  # auto (probed), kvm or tcg
    extra_kernel_params: str = ""  # iofuzz_extra_kernel_params: added to an embedded guest's command line
