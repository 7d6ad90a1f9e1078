"""The parts of a standalone reproducer script, as ordinary modules so that ruff and mypy check them.

`sockstates.criu_repro.render` reads their source files and concatenates them
into one script: the state's part (`unix` or `inet`: perform the calls, report
what the sockets hold) and the `driver` (find criu, dump, restore, compare).
Each part starts with a block of typed module-level defaults between
``# --- state values`` and ``# --- end of state values`` lines; rendering
replaces these blocks with one holding the state's values, and drops each
part's docstring and imports (the script gets the union of the imports, less
this package's own: a written script imports nothing of ours).

Rules for a part, enforced by `render`: imports only at the top, before the
block; each default on one line.
"""
