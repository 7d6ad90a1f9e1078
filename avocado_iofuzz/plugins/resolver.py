"""Avocado resolver: turns references like ``iofuzz`` into avocado-vt runnables.

The tests ship inside this package with their own cartesian cfg, so users need
no ``avocado vt-bootstrap`` and no test provider: this resolver parses our cfg
the way avocado-vt's own resolver parses its cfg and hands avocado the same
``avocado-vt`` runnables, which avocado-vt's runner then executes. avocado-vt's
``--vt-*`` run options are honoured here too (avocado_iofuzz.vt.options).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avocado.core.nrunner.runnable import Runnable
from avocado.core.plugin_interfaces import Resolver
from avocado.core.resolver import ReferenceResolution, ReferenceResolutionResult

from avocado_iofuzz.model.shards import ShardError, expand_shards
from avocado_iofuzz.plugins.settings import apply_settings
from avocado_iofuzz.results.rerun import CMDLINE_PARAM, cmdline_record
from avocado_iofuzz.vt.catalog import IOFUZZ_TYPE, CatalogError, TestCatalog
from avocado_iofuzz.vt.env import assign_private_env
from avocado_iofuzz.vt.options import VtChoices, VtOptionError, read_vt_choices
from avocado_iofuzz.vt.seeds import SEEDS_CONFIG_KEY, pin_seeds

# avocado's UI logger: what it logs reaches the terminal of `avocado run`
LOG_UI = logging.getLogger("avocado.app")


def resolution_error(reference: str, message: str) -> ReferenceResolution:
    """An ERROR resolution whose reason the user sees.

    For a reference no resolver takes, ``avocado run`` only prints "No tests
    found ... Try 'avocado -V list'", and ``avocado list`` takes no
    ``--vt-*`` options, so the reason would be lost: it is printed here.
    """
    LOG_UI.error("avocado-iofuzz cannot run %r: %s", reference, message)
    return ReferenceResolution(reference, ReferenceResolutionResult.ERROR, info=message)


def chosen_variants(
    catalog: TestCatalog, reference: str, expand_all: bool, extra_params: Sequence[str], choices: VtChoices
) -> list[dict[str, Any]]:
    """The cfg's dicts for ``reference``, narrowed and set by the user's ``--vt-*`` options."""
    dimensions = catalog.dimensions(reference.strip().split(".", 1)[0])
    only = [name for dimension, name in choices.variant_filters().items() if dimension in dimensions]
    assignments = {}
    if choices.machine and "machine" not in dimensions:
        # a test without machine rows (sockstates): its one VM takes the machine type
        assignments["machine_type"] = choices.machine
    if choices.qemu_binary:
        # before --vt-extra-params, which stay last: qemu_binary=... there still wins
        assignments["qemu_binary"] = choices.qemu_binary
    return catalog.variants(reference, expand_all, extra_params, only, assignments)


def qemu_binary_record(choices: VtChoices) -> list[str]:
    """--vt-qemu-bin as the param it set, so that a range's rerun command runs the same QEMU."""
    return [f"qemu_binary={choices.qemu_binary}"] if choices.qemu_binary else []


def test_behind_folder(reference: str, catalog: TestCatalog) -> str | None:
    """The test a source folder's expansion stands for, in this project's checkout.

    avocado replaces a reference naming an existing folder by the files in it
    before any resolver is asked. In the root of a checkout of this project,
    ``sockstates`` is also the folder of the sockstates package, so ``avocado
    run sockstates`` there reaches resolvers as ``sockstates/__init__.py``,
    ``sockstates/actions.py``... The folder's ``__init__.py`` stands for the
    test; its other files are left to the other resolvers (none claims them).
    Only a folder beside this project's ``cfg/`` and ``setup.py`` counts: a
    folder of the user's own that happens to share the name is theirs.
    """
    path = Path(reference)
    folder = path.parent
    if path.name != "__init__.py" or folder.name not in catalog.test_names():
        return None
    checkout = folder.resolve().parent
    if (checkout / "cfg" / f"{folder.name}.cfg").is_file() and (checkout / "setup.py").is_file():
        return folder.name
    return None


class IofuzzResolver(Resolver):
    name = "iofuzz"
    description = "Resolves avocado-iofuzz VT tests (iofuzz, sockstates) from the package's own cfg"

    def resolve(self, reference: str) -> ReferenceResolution:
        catalog = TestCatalog()
        folder_test = test_behind_folder(reference, catalog)
        if folder_test is not None:
            resolution = self.resolve(folder_test)
            return ReferenceResolution(reference, resolution.result, resolution.resolutions, resolution.info)
        if not catalog.claims(reference):
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND)
        config = self.config or {}
        expand_all = config.get("subcommand") == "list"
        extra_params = config.get("vt.extra_params") or ()
        try:
            choices = read_vt_choices(config)
            dicts = chosen_variants(catalog, reference, expand_all, extra_params, choices)
            # the [iofuzz] settings and sharding are the iofuzz test's, not sockstates'
            # seeds drawn here are recorded in the job (replay reuses them) and shared by a test's shards
            recorded_seeds = config.get(SEEDS_CONFIG_KEY) or {}
            fuzz = pin_seeds([d for d in dicts if d.get("type") == IOFUZZ_TYPE], recorded_seeds)
            for params in fuzz:
                apply_settings(config, params)
                # what the user gave on top of the variant: summary.json's rerun commands carry what of it matters
                params[CMDLINE_PARAM] = cmdline_record([*qemu_binary_record(choices), *extra_params])
            dicts = expand_shards(fuzz) + [d for d in dicts if d.get("type") != IOFUZZ_TYPE]
        except (CatalogError, ShardError, VtOptionError) as err:
            return resolution_error(reference, str(err))
        if not dicts and choices.describe():
            return resolution_error(reference, f"no avocado-iofuzz variant matches it with {choices.describe()}")
        if not dicts:
            return ReferenceResolution(
                reference,
                ReferenceResolutionResult.NOTFOUND,
                info=f"no avocado-iofuzz variant matches {reference!r}",
            )
        for params in dicts:
            assign_private_env(params)
        runnables = [Runnable("avocado-vt", d["shortname"], **d) for d in dicts]
        return ReferenceResolution(reference, ReferenceResolutionResult.SUCCESS, runnables)
