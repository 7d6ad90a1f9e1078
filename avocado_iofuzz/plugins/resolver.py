"""Avocado resolver: turns references like ``iofuzz`` into avocado-vt runnables.

The tests ship inside this package with their own cartesian cfg, so users need
no ``avocado vt-bootstrap`` and no test provider: this resolver parses our cfg
the way avocado-vt's own resolver parses its cfg and hands avocado the same
``avocado-vt`` runnables, which avocado-vt's runner then executes.
"""

from __future__ import annotations

from pathlib import Path

from avocado.core.nrunner.runnable import Runnable
from avocado.core.plugin_interfaces import Resolver
from avocado.core.resolver import ReferenceResolution, ReferenceResolutionResult

from avocado_iofuzz.catalog import IOFUZZ_TYPE, CatalogError, TestCatalog
from avocado_iofuzz.plugins.settings import apply_settings
from avocado_iofuzz.rerun import CMDLINE_PARAM, cmdline_record
from avocado_iofuzz.seeds import SEEDS_CONFIG_KEY, pin_seeds
from avocado_iofuzz.shards import ShardError, expand_shards
from avocado_iofuzz.vt_env import assign_private_env


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
            dicts = catalog.variants(reference, expand_all, extra_params)
            # the [iofuzz] settings and sharding are the iofuzz test's, not sockstates'
            # seeds drawn here are recorded in the job (replay reuses them) and shared by a test's shards
            recorded_seeds = config.get(SEEDS_CONFIG_KEY) or {}
            fuzz = pin_seeds([d for d in dicts if d.get("type") == IOFUZZ_TYPE], recorded_seeds)
            for params in fuzz:
                apply_settings(config, params)
                # what the user gave on top of the variant: summary.json's rerun commands carry what of it matters
                params[CMDLINE_PARAM] = cmdline_record(extra_params)
            dicts = expand_shards(fuzz) + [d for d in dicts if d.get("type") != IOFUZZ_TYPE]
        except (CatalogError, ShardError) as err:
            return ReferenceResolution(reference, ReferenceResolutionResult.ERROR, info=str(err))
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
