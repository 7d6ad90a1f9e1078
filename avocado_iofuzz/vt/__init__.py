"""The avocado-vt glue: the bodies of tests/iofuzz_vt.py and tests/sockstates_vt.py,
their params read once into typed records, the cfg catalog, and the
workarounds avocado-vt 113 needs. Nothing below this room sees a params dict.
"""
