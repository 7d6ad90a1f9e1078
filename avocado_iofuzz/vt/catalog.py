"""The package's VT tests as cartesian dicts, parsed from its own cfg/.

One cfg file per test (``cfg/iofuzz.cfg``, ``cfg/sockstates.cfg``), each
including the shared VM/guest dimension ``cfg/vm.cfg``. A reference's first
dotted word picks the file; the whole reference is a cartesian ``only``
filter, as with avocado-vt's own references.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from virttest import cartesian_config

from avocado_iofuzz.vt.paths import cfg_dir, data_root

# Internal keys of the cartesian parser that are not test params (avocado-vt's
# own resolver drops the same ones before building runnables).
_INTERNAL_KEYS = ("_name_map_file", "_short_name_map_file", "dep")
_SHARED_CFGS = {"vm", "devices"}  # included by the test cfgs, not tests themselves
# The cfg's `type` of the iofuzz test: the file name of its VT module,
# tests/iofuzz_vt.py (not `iofuzz`: see that module).
IOFUZZ_TYPE = "iofuzz_vt"


def shortname_filter(reference: str) -> str:
    """Make ``iofuzz.long`` match as the short name reads.

    In a cartesian filter ``a.b`` means "b right after a" in the *full* name,
    which also holds the hidden default variants (``iofuzz.(skip_set=...)
    .long``); ``a..b`` means "b somewhere after a", which is what a user who
    copies a short name from ``avocado list`` means.
    """
    return re.sub(r"(?<!\.)\.(?!\.)", "..", reference.strip())


class CatalogError(ValueError):
    """A cfg file that does not parse; the message names the file."""


class TestCatalog:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or cfg_dir()

    def test_names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.cfg") if p.stem not in _SHARED_CFGS)

    def claims(self, reference: str) -> bool:
        head = reference.strip().split(".", 1)[0]
        return head in self.test_names()

    def dimensions(self, test: str) -> set[str]:
        """Names of the ``variants NAME:`` dimensions in ``test``'s cfg and the cfgs it includes."""
        names: set[str] = set()
        pending, seen = [self.directory / f"{test}.cfg"], set()
        while pending:
            path = pending.pop()
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            text = path.read_text(encoding="utf-8")
            names.update(re.findall(r"(?m)^\s*variants\s+(\w+)\s*:", text))
            pending += [self.directory / name for name in re.findall(r"(?m)^\s*include\s+(\S+)", text)]
        return names

    def variants(
        self,
        reference: str,
        expand_all: bool = False,
        extra_params: Sequence[str] = (),
        only: Sequence[str] = (),
        assignments: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Cartesian dicts matching ``reference``.

        With ``expand_all`` false (``avocado run``) a dimension the reference
        leaves open contributes only its ``@`` default variant; with it true
        (``avocado list``) every variant is listed. ``only`` are further
        variant names every dict must have (as a reference's words);
        ``assignments`` are set over the cfg and ``extra_params``, ``key=value``
        overrides (``--vt-extra-params``), are applied last of all.
        """
        overrides = []
        for item in extra_params:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CatalogError(f"--vt-extra-params: {item!r} is not key=value")
            overrides.append((key.strip(), value))
        test = reference.strip().split(".", 1)[0]
        path = self.directory / f"{test}.cfg"
        try:
            parser = cartesian_config.Parser(str(path), defaults=not expand_all)
            parser.only_filter(shortname_filter(reference))
            for name in only:
                parser.only_filter(name)
            for key, value in (assignments or {}).items():
                parser.assign(key, value)
            for key, value in overrides:
                parser.assign(key, value)
            dicts = list(parser.get_dicts())
        except (cartesian_config.ParserError, cartesian_config.LexerError, OSError) as err:
            raise CatalogError(f"{path}: {err}") from err
        return [self._runnable_params(d) for d in dicts]

    @staticmethod
    def _runnable_params(cartesian_dict: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in cartesian_dict.items() if k not in _INTERNAL_KEYS}
        # avocado-vt finds the module for `type = X` in <other_tests_dirs>/tests/X.py
        params["other_tests_dirs"] = str(data_root())
        return params
