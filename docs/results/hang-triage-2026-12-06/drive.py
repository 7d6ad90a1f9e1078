"""Triage the N-th hang of a trace (the CLI only reaches the last one)."""

import sys

from avocado_iofuzz.repro.extract import extract
from avocado_iofuzz.repro.pipeline import TriageOptions, triage

trace, occ, out, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
opts = TriageOptions(budget=budget, guest_fallback=False, kind="hang")
ex = extract(trace, kind="hang", occurrence=occ)
print("finding:", ex.finding.describe(), [f"{c.name}:{len(c.ops)}" for c in ex.candidates], flush=True)
res = triage(trace, out, opts, guest=None, extracted=ex)
print("RESULT", occ, res.summary(), flush=True)
for n in res.notes:
    print("  note:", n)
