"""The fuzz model: what a run fuzzes and which ops it sends.

Pure and deterministic: listings and param values in, ranges, targets and
op plans out. Nothing here touches a guest, a file or avocado.
"""
