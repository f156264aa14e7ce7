"""Benchmarks, each run from the checkout's root as `python -m benchmarks.NAME` (see each module's docstring)."""
