"""Benchmark scripts, run from a checkout (``python benchmarks/<name>.py``): ratios measured in one run."""
