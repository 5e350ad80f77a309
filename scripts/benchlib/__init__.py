"""Helpers of ``scripts/bench.py``: slide set, trace, server process, load, stats, report."""
