"""Avocado resolver: turns references like ``iofuzz`` into avocado-vt runnables.

The tests ship inside this package with their own cartesian cfg, so users need
no ``avocado vt-bootstrap`` and no test provider: this resolver parses our cfg
the way avocado-vt's own resolver parses its cfg and hands avocado the same
``avocado-vt`` runnables, which avocado-vt's runner then executes.
"""

from __future__ import annotations

from avocado.core.nrunner.runnable import Runnable
from avocado.core.plugin_interfaces import Resolver
from avocado.core.resolver import ReferenceResolution, ReferenceResolutionResult

from avocado_iofuzz.catalog import CatalogError, TestCatalog


class IofuzzResolver(Resolver):
    name = "iofuzz"
    description = "Resolves avocado-iofuzz VT tests (iofuzz, sockstates) from the package's own cfg"

    def resolve(self, reference: str) -> ReferenceResolution:
        catalog = TestCatalog()
        if not catalog.claims(reference):
            return ReferenceResolution(reference, ReferenceResolutionResult.NOTFOUND)
        config = self.config or {}
        expand_all = config.get("subcommand") == "list"
        try:
            dicts = catalog.variants(reference, expand_all, config.get("vt.extra_params") or ())
        except CatalogError as err:
            return ReferenceResolution(reference, ReferenceResolutionResult.ERROR, info=str(err))
        if not dicts:
            return ReferenceResolution(
                reference,
                ReferenceResolutionResult.NOTFOUND,
                info=f"no avocado-iofuzz variant matches {reference!r}",
            )
        runnables = [Runnable("avocado-vt", d["shortname"], **d) for d in dicts]
        return ReferenceResolution(reference, ReferenceResolutionResult.SUCCESS, runnables)
