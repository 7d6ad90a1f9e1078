"""Installed copies of the top-level cfg/ and tests/ folders (see setup.py)."""
