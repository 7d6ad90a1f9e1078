"""Sphinx configuration of avocado-iofuzz's manual (plain Sphinx, no extensions).

Build: ``.venv/bin/python -m sphinx -W -b html docs docs/_build/html``
(``selftests/unit/test_docs.py`` does the same and fails on any warning).
"""

project = "avocado-iofuzz"
author = "avocado-iofuzz developers"
copyright = "avocado-iofuzz developers"
release = "0.1.0"

extensions = []
root_doc = "index"
exclude_patterns = ["_build"]
# the manual quotes shell sessions, cfg files and tables; no language guessing
highlight_language = "none"
html_theme = "alabaster"
html_title = "avocado-iofuzz"
