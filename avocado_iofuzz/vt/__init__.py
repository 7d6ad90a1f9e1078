"""The avocado-vt glue: the bodies of tests/iofuzz.py and tests/sockstates.py,
their params read once into typed records, the cfg catalog, and the
workarounds avocado-vt 113 needs. Nothing below this room sees a params dict.
"""
