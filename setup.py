"""Packaging for avocado-iofuzz: an Avocado-VT plugin that fuzzes QEMU device
emulation from inside a guest and enumerates unix-socket states for C/R testing."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="avocado-iofuzz",
    version="0.1.0",
    description="Avocado-VT plugin: in-guest I/O port fuzzing of QEMU and unix socket state sweeps",
    long_description=Path(__file__).with_name("README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    # The repository stated no license; issue 17 chose GPL-2.0-or-later, the
    # license of the avocado-vt this plugs into.
    license="GPL-2.0-or-later",
    author="avocado-iofuzz developers",
    classifiers=[
        "License :: OSI Approved :: GNU General Public License v2 or later (GPLv2+)",
        "Programming Language :: Python :: 3.11",
        "Topic :: Software Development :: Testing",
        "Topic :: System :: Emulators",
    ],
    python_requires=">=3.11",
    packages=[
        *find_packages(include=["avocado_iofuzz", "avocado_iofuzz.*", "sockstates", "sockstates.*"]),
        "avocado_iofuzz.data.cfg",
        "avocado_iofuzz.data.tests",
    ],
    # cfg/ and tests/ live at the top of the source tree (the layout users of
    # avocado-vt know) but are installed inside the package, so that a plain
    # `pip install .` finds them next to the code that resolves them.
    package_dir={"avocado_iofuzz.data.cfg": "cfg", "avocado_iofuzz.data.tests": "tests"},
    package_data={
        "avocado_iofuzz.data.cfg": ["*.cfg"],
        "avocado_iofuzz.data.tests": ["*.py"],
        "avocado_iofuzz.executor": ["*.c"],
        "avocado_iofuzz.coverage": ["*.toml"],
        "avocado_iofuzz.guided": ["*.toml"],
    },
    install_requires=[
        "avocado-framework>=113.0,<114",
        "avocado-framework-plugin-vt>=113.0,<114",
        "aexpect",
        "netaddr",
        # the per-test HTML report (results.html) users read in Jenkins
        "avocado-framework-plugin-result-html>=113.0,<114",
        # coverage.png; also brings Pillow, which avocado-vt asks for
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "hypothesis", "ruff", "mypy", "xmlschema", "sphinx"],
    },
    entry_points={
        "console_scripts": [
            "sockstates = sockstates.__main__:main",
            "iofuzz-merge = avocado_iofuzz.results.merge:main",
        ],
        "avocado.plugins.init": [
            "iofuzz = avocado_iofuzz.plugins.init:IofuzzInit",
        ],
        "avocado.plugins.resolver": [
            "iofuzz = avocado_iofuzz.plugins.resolver:IofuzzResolver",
        ],
        "avocado.plugins.result": [
            "iofuzz = avocado_iofuzz.plugins.job:IofuzzJobSummary",
        ],
        "avocado.plugins.job.prepost": [
            "iofuzz-env-cleanup = avocado_iofuzz.plugins.job:IofuzzEnvCleanup",
            "iofuzz-seeds = avocado_iofuzz.plugins.job:IofuzzSeedRecord",
        ],
        "avocado.plugins.cli.cmd": [
            "iofuzz = avocado_iofuzz.plugins.cli_replay:IofuzzCLI",
        ],
    },
)
