"""Benchmark scripts that print figures (not tests); run each as ``python bench/NAME.py``.

A package so that the scripts can share ``bench.support`` once they have put
the repository root on ``sys.path``.
"""
